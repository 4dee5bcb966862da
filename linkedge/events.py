"""The click event: one encode/decode pair, short field names, a version field.

The edge encodes one event per served ``GET``/``HEAD`` redirect into a Redis stream entry (field
``e``); analytics decodes it. An entry that cannot be decoded raises ``EventDecodeError``; the
consumer counts it and sets it aside instead of retrying it forever.
"""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from typing import Any

import orjson

VERSION = 1
STREAM_FIELD = b"e"


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
        return time.strftime("%Y%m%d", time.gmtime(self.ts_ms // 1000))


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


def decode(raw: bytes | str) -> Click:
    try:
        data: dict[str, Any] = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventDecodeError(f"not JSON: {exc}") from exc
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise EventDecodeError(f"unknown event version: {data.get('v') if isinstance(data, dict) else data!r}")
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


def parse_counter_field(field: bytes | str) -> tuple[int, str, bool]:
    text = field.decode() if isinstance(field, bytes) else field
    link_id, day, kind = text.split(":")
    if kind not in ("h", "b") or len(day) != 8:
        raise EventDecodeError(f"malformed counter field {text!r}")
    return int(link_id), day, kind == "b"


class ClickIds:
    """UUIDv7 generator: 48-bit millisecond time, then a per-process random base plus a counter.

    Cheaper than ``os.urandom`` per click and still unique across workers (random 74-bit base per
    process) and time-ordered within a millisecond.
    """

    __slots__ = ("_counter", "_base")

    def __init__(self) -> None:
        self._counter = 0
        self._base = int.from_bytes(os.urandom(10), "big") & ((1 << 74) - 1)

    def new(self, ts_ms: int) -> str:
        self._counter = (self._counter + 1) & ((1 << 40) - 1)
        rand = (self._base + self._counter) & ((1 << 74) - 1)
        rand_a = rand >> 62  # 12 bits
        rand_b = rand & ((1 << 62) - 1)
        value = (
            ((ts_ms & ((1 << 48) - 1)) << 80)
            | (0x7 << 76)
            | (rand_a << 64)
            | (0b10 << 62)
            | rand_b
        )
        return str(uuid.UUID(int=value))

    def reseed(self) -> None:
        """Call in a forked child so that two workers never share a base."""
        self._base = int.from_bytes(os.urandom(10), "big") & ((1 << 74) - 1)
        self._counter = 0
