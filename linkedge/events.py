"""The click event: one encode/decode pair, short field names, a version field.

The edge encodes one event per served ``GET``/``HEAD`` redirect; analytics decodes it. A Redis
stream entry (field ``e``) holds one or more events, one per line: the edge writes one entry per
flush (``join_entry``), so Redis does one ``XADD`` per flush instead of one per click, and readers
take the events back out with ``split_entry``. An entry of one event is the same bytes as the event
(orjson never writes a raw newline). An event that cannot be decoded raises ``EventDecodeError``;
the consumer counts it and sets it aside instead of retrying it forever.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Iterable
from typing import Any

import orjson

VERSION = 1
STREAM_FIELD = b"e"
ENTRY_SEPARATOR = b"\n"  # between the events of one stream entry


class EventDecodeError(ValueError):
    """A stream entry is not a click event this version understands."""


@dataclasses.dataclass(frozen=True, slots=True)
class Click:
    id: str  # time-ordered UUIDv7, unique per click; the dedup key everywhere downstream
    ts_ms: int  # Unix epoch milliseconds when the redirect was served
    link_id: int
    account_id: int
    code: str
    target: str  # the Location served
    ip: str  # client IP: the peer, or X-Forwarded-For from a trusted proxy
    user_agent: str = ""
    referer: str = ""
    accept_language: str = ""
    host: str = ""
    utm: dict[str, str] = dataclasses.field(default_factory=dict)
    bot: str = ""  # "" for a human; else why it is a bot: "head", "prefetch", "crawler"

    @property
    def day(self) -> str:
        """The UTC day ``YYYYMMDD`` the click counts towards, in Postgres and ClickHouse alike."""
        return utc_day(self.ts_ms)


def utc_day(ts_ms: int) -> str:
    """The UTC day ``YYYYMMDD`` of a Unix epoch millisecond time."""
    return time.strftime("%Y%m%d", time.gmtime(ts_ms // 1000))


def encode(click: Click) -> bytes:
    return orjson.dumps(
        {
            "v": VERSION,
            "id": click.id,
            "ts": click.ts_ms,
            "l": click.link_id,
            "a": click.account_id,
            "c": click.code,
            "t": click.target,
            "ip": click.ip,
            "ua": click.user_agent,
            "r": click.referer,
            "al": click.accept_language,
            "h": click.host,
            "q": click.utm,
            "b": click.bot,
        }
    )


# ``encode`` is the event's one definition. The edge's encoders put the same bytes together from
# parts, allocated at their exact size (``orjson.dumps`` of the whole dict over-allocates its
# output and shrinks it, ~4 us more per event when a batch keeps thousands): the templates below
# and the C encoder's layout are cut out of ``encode``'s own output for a click of marker values,
# so they cannot say anything ``encode`` does not. tests/test_event_spec.py holds all three to
# ``encode`` byte for byte on generated clicks.
_MARKS = Click(
    id="\ue000id",
    ts_ms=-1_000_000_000_000_001,
    link_id=-1_000_000_000_000_002,
    account_id=-1_000_000_000_000_003,
    code="\ue000c",
    target="\ue000t",
    ip="\ue000ip",
    user_agent="\ue000ua",
    referer="\ue000r",
    accept_language="\ue000al",
    host="\ue000h",
    utm={"\ue000": "q"},
    bot="\ue000b",
)


def _pieces() -> list[bytes]:
    """``encode(_MARKS)`` around its values: the bytes before the first value, between each two
    (in ``Click``'s field order), after the last."""
    rest = encode(_MARKS)
    pieces = []
    for field in dataclasses.fields(Click):
        before, mark, rest = rest.partition(orjson.dumps(getattr(_MARKS, field.name)))
        if not mark or b"%" in before:
            raise AssertionError(f"encode() does not write {field.name} as its own JSON value")
        pieces.append(before)
    pieces.append(rest)
    if not all(piece.startswith(b",") for piece in pieces[1:-1]):  # where the parts are cut
        raise AssertionError("encode() does not separate its values with commas")
    return pieces


(_HEAD, _ID_TS, _TS_L, _L_A, _A_C, _C_T, _T_IP, _IP_UA, _UA_R, _R_AL, _AL_H, _H_Q, _Q_B, _END) = (
    _pieces()
)
# An event: head, the id (prefix and counter), ts, the link part, ip, the tail (``EventEncoder``).
_EVENT = (
    _HEAD + b'"%b%012x"' + _ID_TS + b"%d" + _TS_L[:1] + b"%b" + _T_IP[1:] + b"%b" + _IP_UA[:1]
    + b"%b"
)  # fmt: skip
# The part of an event that only its link and Location decide (``link_part``).
_LINK_PART = _TS_L[1:] + b"%d" + _L_A + b"%d" + _A_C + b"%b" + _C_T + b"%b,"
# The second half (``encode_tail``): what a recorder can keep per distinct set of headers.
_TAIL = (
    _IP_UA[1:] + b"%b" + _UA_R + b"%b" + _R_AL + b"%b" + _AL_H + b"%b" + _H_Q + b"%b" + _Q_B
    + b"%b" + _END
)  # fmt: skip
# The same cut for edge._clickfast.Encoder (layout=): the bytes before the id's first character,
# after its last, after ts, before ip, after ip. The C encoder compiles in all but the first and
# refuses a layout that differs.
EVENT_LAYOUT = (_HEAD + b'"', b'"' + _ID_TS, _TS_L[:1], _T_IP[1:], _IP_UA[:1])


def encode_tail(
    user_agent: str, referer: str, accept_language: str, host: str, utm: dict[str, str], bot: str
) -> bytes:
    """The second half of an event: ``Click``'s fields from ``user_agent`` on."""
    dumps = orjson.dumps
    return _TAIL % (
        dumps(user_agent),
        dumps(referer),
        dumps(accept_language),
        dumps(host),
        dumps(utm),
        dumps(bot),
    )


def join_entry(encoded: list[bytes]) -> bytes:
    """One stream entry's ``e`` value holding ``encoded`` events (``encode``, ``EventEncoder``)."""
    return ENTRY_SEPARATOR.join(encoded)


def split_entry(raw: bytes | str) -> list[bytes]:
    """The encoded events of one stream entry's ``e`` value, in order; blank lines are skipped."""
    data = raw.encode() if isinstance(raw, str) else raw
    return [event for event in data.split(ENTRY_SEPARATOR) if event.strip()]


def decode(raw: bytes | str) -> Click:
    try:
        data: dict[str, Any] = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise EventDecodeError(
            f"unknown event version: {data.get('v') if isinstance(data, dict) else data!r}"
        )
    try:
        return Click(
            id=str(data["id"]),
            ts_ms=int(data["ts"]),
            link_id=int(data["l"]),
            account_id=int(data["a"]),
            code=str(data["c"]),
            target=str(data["t"]),
            ip=str(data["ip"]),
            user_agent=str(data.get("ua", "")),
            referer=str(data.get("r", "")),
            accept_language=str(data.get("al", "")),
            host=str(data.get("h", "")),
            utm={str(k): str(v) for k, v in (data.get("q") or {}).items()},
            bot=str(data.get("b", "")),
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise EventDecodeError(f"malformed click event: {exc!r}") from exc


def counter_field(link_id: int, day: str, bot: bool) -> str:
    """The field of a shard's counts hash: ``<link_id>:<YYYYMMDD>:<h|b>``."""
    return f"{link_id}:{day}:{'b' if bot else 'h'}"


FLUSH_COUNTERS_PREFIX = b"~"  # a counts-hash field holding one edge flush's counters


def join_counters(counters: dict[str, int]) -> str:
    """One flush's counters as the value of its counts-hash field: ``<field> <clicks>`` lines."""
    return "\n".join([f"{field} {count}" for field, count in counters.items()])


def counter_items(pairs: Iterable[tuple[Any, Any]]) -> list[tuple[bytes, bytes]]:
    """The (counter field, clicks) pairs of a counts hash's (field, value) pairs: a flush's field
    (``~<flush id>``) stands for the lines of its value, any other field for itself. A line without
    a space comes out as (line, ``b""``), which ``int()`` refuses: it is set aside, not lost.
    ``pairs`` are bytes, as a client without ``decode_responses`` returns them."""
    items: list[tuple[bytes, bytes]] = []
    for field, value in pairs:
        if not field.startswith(FLUSH_COUNTERS_PREFIX):
            items.append((field, value))
            continue
        for line in value.split(b"\n"):
            if line:
                name, _, count = line.partition(b" ")
                items.append((name, count))
    return items


def parse_counter_field(field: bytes | str) -> tuple[int, str, bool]:
    text = field.decode() if isinstance(field, bytes) else field
    link_id, day, kind = text.split(":")
    if kind not in ("h", "b") or len(day) != 8:
        raise EventDecodeError(f"malformed counter field {text!r}")
    return int(link_id), day, kind == "b"


_MASK_26 = (1 << 26) - 1
_MASK_48 = (1 << 48) - 1
_PREFIX_FORMAT = "%08x-%04x-%04x-%04x-"  # %-formatting: the fastest way from ints to hex here
_LOW_FORMAT = "%012x"


class ClickIds:
    """UUIDv7 generator: 48-bit millisecond time, 26 random bits per process, then a 48-bit
    counter started at a random point.

    Cheaper than ``os.urandom`` per click and still unique across workers (74 random bits per
    process) and time-ordered within a millisecond. Everything before the last group changes only
    with the millisecond, so ``prefix`` is kept per millisecond and a click pays for one ``%x``.
    """

    __slots__ = ("_counter", "_high", "_low", "_prefix", "_prefix_ms")

    def __init__(self) -> None:
        self._high = self._low = self._counter = 0
        self._prefix_ms, self._prefix = -1, ""
        self.reseed()

    def new(self, ts_ms: int) -> str:
        return self.prefix(ts_ms) + _LOW_FORMAT % self.next_low()

    def prefix(self, ts_ms: int) -> str:
        """The id's first four groups and their dashes, for a click in millisecond ``ts_ms``."""
        if ts_ms != self._prefix_ms:
            high = self._high
            # 48-bit time | version 7, 12 random bits | variant 0b10, 14 random bits | (next_low)
            self._prefix = _PREFIX_FORMAT % (
                (ts_ms >> 16) & 0xFFFFFFFF,
                ts_ms & 0xFFFF,
                0x7000 | (high >> 14),
                0x8000 | (high & 0x3FFF),
            )
            self._prefix_ms = ts_ms
        return self._prefix

    def next_low(self) -> int:
        """The next id's last 48 bits (the fifth group)."""
        counter = self._counter = self._counter + 1
        return (self._low + counter) & _MASK_48

    def reseed(self) -> None:
        """Call in a forked child so that two workers never share a base."""
        self.seed(*random_seed())

    def seed(self, high: int, low: int) -> None:
        """Start over from 26 random bits ``high`` and a 48-bit counter base ``low``."""
        self._high, self._low = high & _MASK_26, low & _MASK_48
        self._counter = 0
        self._prefix_ms = -1


def random_seed() -> tuple[int, int]:
    """Fresh ``(high, low)`` for ``ClickIds.seed``: 26 random bits and a random 48-bit base."""
    bits = int.from_bytes(os.urandom(10), "big")
    return (bits >> 48) & _MASK_26, bits & _MASK_48


def link_part(link_id: int, account_id: int, code: str, target: str) -> bytes:
    """The part of an event that only its link and Location decide (``"l"`` to ``"t"``)."""
    return _LINK_PART % (link_id, account_id, orjson.dumps(code), orjson.dumps(target))


class EventEncoder:
    """``encode(Click(...))`` without the ``Click``, for one process's stream of clicks, with the
    id generated: the edge's per-click path.

    What a click shares with others is encoded once: the id's prefix and the time per millisecond
    (``ClickIds``), the link's part (``"l"``, ``"a"``, ``"c"``, ``"t"``) per (link, code,
    Location), and the second half (``encode_tail``) by the caller per distinct set of request
    headers. The bytes are ``encode``'s for the same values.
    """

    __slots__ = ("_links", "_links_max", "_ms", "_prefix", "ids")

    def __init__(self, links_kept: int = 65_536) -> None:
        self.ids = ClickIds()
        self._links: dict[tuple[int, str, str], bytes] = {}
        self._links_max = links_kept
        self._ms, self._prefix = -1, b""

    def encode(
        self,
        ts_ms: int,
        link_id: int,
        account_id: int,
        code: str,
        target: str,
        ip: str,
        tail: bytes,
    ) -> bytes:
        """One event: ``tail`` is ``encode_tail(...)`` of the click's remaining fields."""
        if ts_ms != self._ms:
            self._prefix = self.ids.prefix(ts_ms).encode()
            self._ms = ts_ms
        key = (link_id, code, target)  # a link's account never changes
        part = self._links.get(key)
        if part is None:
            if len(self._links) >= self._links_max:
                self._links.clear()
            part = self._links[key] = link_part(link_id, account_id, code, target)
        ip_json = orjson.dumps(ip)  # before the id is taken: a click that fails takes none
        return _EVENT % (self._prefix, self.ids.next_low(), ts_ms, part, ip_json, tail)
