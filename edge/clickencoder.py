"""A served redirect's click event and counter, from the ASGI scope: the recorder's per-click work.

``ClickEncoder.add`` appends the click's encoded event (``linkedge.events``) to a list and counts it
under its counter field, ``<link id>:<UTC day>:<h|b>`` (``events.counter_field``). ``record`` does
the same into the encoder's own open batch, at the time it reads itself, and ``take`` hands that
batch over as the flush sends it: its counters as ``events.join_counters`` lines and its events as
one ``events.join_entry`` stream entry (the C encoder writes each event straight onto that entry).
What clicks
share is worked out once: per distinct set of request headers, method and query, the bot reason
and the event's second half (``clickinfo.request_tail``); per link, its part of the event and its
counter fields; per millisecond, the id's prefix; per second, the day.

``edge._clickfast.Encoder`` is the same ``add`` in C, byte for byte (tests/test_clickencoder.py).
Under load the Python ``add`` costs a worker ~6 us per click, a quarter of a whole redirect
(BENCHMARKS.md); the C one a fraction of that. It calls back into this module for everything that
is not per click (a new header set, a new link, a new day), for ``X-Forwarded-For`` and prefetch
headers, and hands a scope it does not expect (headers that are not a list of byte pairs) to the
Python ``add`` whole. ``new_encoder`` picks it when it was built (``pip install`` compiles it where
a C compiler is found; the image's build stage has one) and ``CLICK_ENCODER`` is not ``python``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Mapping
from typing import Any, Protocol

import orjson

from edge.clickinfo import FIELD_MAX, REFERER_MAX, Network, client_ip, request_tail
from edge.records import LinkRecord
from linkedge import bots
from linkedge.events import (
    EVENT_LAYOUT,
    EventEncoder,
    counter_field,
    join_counters,
    join_entry,
    link_part,
    random_seed,
    utc_day,
)
from linkedge.settings import CLICK_ENCODERS, ConfigError

try:
    import edge._clickfast as _clickfast  # noqa: PLR0402 -- mypy finds the stub only so
except ImportError as exc:  # not compiled here: the Python encoder does the same work, slower
    _clickfast = None  # type: ignore[assignment]
    C_MISSING = f"edge._clickfast cannot be imported ({exc})"
else:
    C_MISSING = ""

log = logging.getLogger("linkedge.edge")

TAILS_CACHED = 4096  # distinct header sets remembered (bot or not, event tail); cleared when full
TAILS_BYTES = 16 * 1024 * 1024  # ... or when their values and tails would pass this many bytes
# The header sets worth remembering: each value (user agent, referer, language, host, query) at
# most this many bytes, so that what ``request_tail`` keeps of it is all of it (a character takes
# at most 4 UTF-8 bytes). A longer value is a header set no browser sends twice: its tail is
# worked out for the click and not kept, so a visitor cannot fill a worker's memory with them.
TAIL_CUTS = (4 * bots.USER_AGENT_MAX, 4 * REFERER_MAX, FIELD_MAX, FIELD_MAX, 2048)
TAIL_OVERHEAD = 512  # bytes a remembered header set costs beyond its values and tail
LINKS_CACHED = 65_536  # links whose part of the event is remembered; cleared when full

# Clicks by counter field (``events.counter_field``: "<link id>:<day>:<h|b>").
Counts = dict[str, int]
# An open batch taken by ``take``: its clicks, its counters as ``events.join_counters`` lines
# (ASCII), its events as one stream entry (``events.join_entry``).
Taken = tuple[int, bytes, bytes]


class Encoder(Protocol):
    def add(
        self,
        ts: float,
        link: LinkRecord,
        scope: Mapping[str, Any],
        location: str,
        counts: Counts,
        events: list[bytes],
    ) -> None: ...

    def seed(self, high: int, low: int) -> None: ...

    def record(self, link: LinkRecord, scope: Mapping[str, Any], location: str) -> bool: ...

    def take(self) -> Taken | None: ...

    @property
    def pending(self) -> int: ...

    limit: int


def prefetch_header(name: bytes, value: bytes) -> bool:
    """Whether the request header ``name: value`` (one of ``bots.PREFETCH_HEADER_NAMES``) marks a
    speculative fetch."""
    return bots.is_prefetch(name.decode(), value.decode("latin-1"))


class ClickEncoder:
    """The Python encoder (see the module docstring)."""

    def __init__(
        self,
        trusted: tuple[Network, ...] = (),
        *,
        tails_kept: int = TAILS_CACHED,
        tails_bytes: int = TAILS_BYTES,
        links_kept: int = LINKS_CACHED,
    ) -> None:
        self.trusted = trusted
        self._encoder = EventEncoder(links_kept)
        self._tails: dict[tuple[Any, ...], tuple[bool, bytes]] = {}
        self._tails_max = tails_kept
        self._tails_bytes_max = tails_bytes
        self._tails_bytes = 0  # what the remembered header sets hold (``tail_cost``)
        self._fields: dict[tuple[int, bool], str] = {}  # counter fields of the day, by (link, bot)
        self._fields_max = links_kept
        # The UTC day of the last second seen; None before the first (a sentinel second such as
        # -1 would be taken for 1969-12-31T23:59:59 and leave the day empty).
        self._second: int | None = None
        self._day = ""
        self._counts: Counts = {}  # the open batch of record()
        self._events: list[bytes] = []
        self.limit = sys.maxsize  # record() says the batch is full from this many clicks on

    @property
    def pending(self) -> int:
        return len(self._events)

    def record(self, link: LinkRecord, scope: Mapping[str, Any], location: str) -> bool:
        """``add`` now into the open batch; whether it holds ``limit`` clicks or more."""
        self.add(time.time(), link, scope, location, self._counts, self._events)
        return len(self._events) >= self.limit

    def take(self) -> Taken | None:
        """The open batch (None when empty); the next ``record`` starts a new one."""
        if not self._events:
            return None
        taken = len(self._events), join_counters(self._counts).encode(), join_entry(self._events)
        self._counts, self._events = {}, []  # only now: a failed join leaves the batch open
        return taken

    def seed(self, high: int, low: int) -> None:
        self._encoder.ids.seed(high, low)

    def client_ip(self, peer: str, forwarded: list[str]) -> str:
        """The click's client address (``clickinfo.client_ip`` with ``TRUSTED_PROXIES``)."""
        return client_ip(peer, forwarded, self.trusted)

    def add(
        self,
        ts: float,
        link: LinkRecord,
        scope: Mapping[str, Any],
        location: str,
        counts: Counts,
        events: list[bytes],
    ) -> None:
        """Encode one click's event into ``events`` and count it into ``counts``."""
        agent = referer = language = host = b""
        forwarded: list[str] = []
        prefetch = False
        for name, value in scope.get("headers") or ():
            if name == b"user-agent":
                agent = value
            elif name == b"accept-language":
                language = value
            elif name == b"host":
                host = value
            elif name == b"referer":
                referer = value
            elif name == b"x-forwarded-for":
                forwarded.append(value.decode("latin-1"))
            elif name in bots.PREFETCH_HEADER_NAMES:
                prefetch = prefetch or prefetch_header(name, value)
        request = (
            agent, referer, language, host, scope.get("query_string"), scope.get("method", "GET"),
            prefetch,
        )  # fmt: skip
        known = self._tails.get(request)
        if known is None:
            known = request_tail(*request)
            cost = tail_cost(request, known[1])
            if cost is not None:
                full = self._tails_bytes + cost > self._tails_bytes_max
                if full or len(self._tails) >= self._tails_max:
                    self._tails.clear()
                    self._tails_bytes = 0
                self._tails[request] = known
                self._tails_bytes += cost
        is_bot, tail = known
        client = scope.get("client")
        peer = str(client[0]) if client else ""
        ts_ms = int(ts * 1000)
        if ts_ms // 1000 != self._second:
            self._second = ts_ms // 1000
            day = utc_day(ts_ms)
            if day != self._day:
                self._day = day
                self._fields.clear()
        events.append(
            self._encoder.encode(
                ts_ms,
                link.id,
                link.account_id,
                link.code,
                location,
                self.client_ip(peer, forwarded) if forwarded else peer,
                tail,
            )
        )
        field = self._fields.get((link.id, is_bot))
        if field is None:
            if len(self._fields) >= self._fields_max:
                self._fields.clear()
            field = self._fields[(link.id, is_bot)] = counter_field(link.id, self._day, is_bot)
        counts[field] = counts.get(field, 0) + 1


def tail_cost(request: tuple[Any, ...], tail: bytes) -> int | None:
    """The bytes a header set (``request_tail``'s arguments) and its tail hold when remembered;
    None when one of its values is longer than ``TAIL_CUTS`` allows, so it is not remembered."""
    cost = TAIL_OVERHEAD + len(tail)
    for value, cut in zip(request[:5], TAIL_CUTS, strict=True):
        if value is None:
            continue
        if not isinstance(value, bytes) or len(value) > cut:
            return None
        cost += len(value)
    return cost


def new_encoder(trusted: tuple[Network, ...], kind: str = "auto") -> Encoder:
    """The encoder ``CLICK_ENCODER`` (``kind``) asks for: ``"auto"`` the C one when it was built,
    else the Python one; ``"c"`` the C one, a ``ConfigError`` when it was not built; ``"python"``
    the Python one."""
    if kind not in CLICK_ENCODERS:
        raise ConfigError(f"CLICK_ENCODER: one of {', '.join(CLICK_ENCODERS)}, got {kind!r}")
    python = ClickEncoder(trusted)
    if kind == "python":
        return python
    if kind == "auto" and _clickfast is None:
        log.warning(
            "CLICK_ENCODER=auto: using the Python click encoder and redirect path, about half "
            "the throughput of the C ones; reinstall with a C compiler (make rebuilds it)",
            extra={"reason": C_MISSING},
        )
        return python
    if _clickfast is None:
        raise ConfigError(
            "CLICK_ENCODER=c, but edge._clickfast was not built: reinstall with a C compiler"
        )
    fast: Encoder = _clickfast.Encoder(
        fallback=python.add,
        request_tail=request_tail,
        client_ip=python.client_ip,
        prefetch_header=prefetch_header,
        prefetch_names=tuple(sorted(bots.PREFETCH_HEADER_NAMES)),
        link_part=link_part,
        utc_day=utc_day,
        counter_field=counter_field,
        dumps=orjson.dumps,
        layout=EVENT_LAYOUT,
        tails_kept=TAILS_CACHED,
        tails_bytes=TAILS_BYTES,
        tail_cuts=TAIL_CUTS,
        tail_overhead=TAIL_OVERHEAD,
        links_kept=LINKS_CACHED,
    )
    return fast


def kind_of(encoder: Encoder) -> str:
    """``"c"`` or ``"python"``: which encoder ``new_encoder`` gave (logged, and a label of
    ``linkedge_build_info``)."""
    return "c" if _clickfast is not None and isinstance(encoder, _clickfast.Encoder) else "python"


def reseed(encoder: Encoder) -> None:
    """New random id bits for ``encoder`` (and the Python encoder behind a C one): call in each
    worker, so that two workers never share an id base, whatever started them."""
    for target in (encoder, getattr(getattr(encoder, "fallback", None), "__self__", None)):
        if target is not None:
            target.seed(*random_seed())
