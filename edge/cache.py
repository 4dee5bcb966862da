"""The per-worker link cache: a bounded LRU of links and a smaller map of misses, both expiring.

Time is read from a ``Clock`` that a background task refreshes every ``Clock.INTERVAL_S`` rather
than from the OS on every request (the uvicorn ``on_tick`` idea): an entry lives at most one tick
longer than its TTL, which no reader of a 30 s cache can tell apart.
"""

from __future__ import annotations

import asyncio
import enum
import time
from collections import OrderedDict
from typing import Final, Generic, TypeVar

V = TypeVar("V")


class _Missing(enum.Enum):
    """The answer of ``LocalCache.get`` when the code is not cached (or its entry expired)."""

    MISSING = 0


MISSING: Final = _Missing.MISSING


class Clock:
    """Monotonic and wall time, refreshed on a timer by ``run()`` (one task per worker)."""

    INTERVAL_S = 0.1
    __slots__ = ("now", "wall")

    def __init__(self) -> None:
        self.now = time.monotonic()
        self.wall = time.time()

    def tick(self) -> None:
        self.now = time.monotonic()
        self.wall = time.time()

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.INTERVAL_S)
            self.tick()


class LocalCache(Generic[V]):
    """Code -> value (a hit) or ``None`` (a remembered miss).

    Links and misses are kept apart: at most ``size`` links, least recently read first out, and
    at most ``size // MISSES_SHARE`` misses (at least one), oldest first out, so that unknown codes,
    which anyone can send by the thousand, never push a link out. ``get`` answers ``MISSING``
    when the code has no live entry; the caller then asks the next tier and calls ``put``.
    """

    MISSES_SHARE = 10
    __slots__ = ("_entries", "_misses", "clock", "miss_ttl_s", "misses_size", "size", "ttl_s")

    def __init__(self, size: int, ttl_s: float, miss_ttl_s: float, clock: Clock) -> None:
        self._entries: OrderedDict[str, tuple[float, V | None]] = OrderedDict()
        self._misses: OrderedDict[str, float] = OrderedDict()  # code -> expires
        self.size = size
        self.misses_size = max(1, size // self.MISSES_SHARE)
        self.ttl_s = ttl_s
        self.miss_ttl_s = miss_ttl_s
        self.clock = clock

    def get(self, code: str) -> V | None | _Missing:
        entry = self._entries.get(code)
        if entry is None:
            expires = self._misses.get(code)
            if expires is None:
                return MISSING
            if expires <= self.clock.now:
                del self._misses[code]
                return MISSING
            return None
        if entry[0] <= self.clock.now:
            del self._entries[code]
            return MISSING
        self._entries.move_to_end(code)
        return entry[1]

    @property
    def entries(self) -> OrderedDict[str, tuple[float, V | None]]:
        """The links themselves, code -> (expires, value), for ``edge._clickfast.Hot``, which
        reads and touches them as ``get`` does. Never replaced: cleared in place. (Misses are
        not in it: ``Hot`` leaves a code it does not find to the handler.)"""
        return self._entries

    def put(self, code: str, value: V | None) -> None:
        if value is None:
            self._entries.pop(code, None)
            self._misses[code] = self.clock.now + self.miss_ttl_s
            self._misses.move_to_end(code)
            if len(self._misses) > self.misses_size:
                self._misses.popitem(last=False)
            return
        self._misses.pop(code, None)
        self._entries[code] = (self.clock.now + self.ttl_s, value)
        self._entries.move_to_end(code)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def discard(self, code: str) -> None:
        self._entries.pop(code, None)
        self._misses.pop(code, None)

    def clear(self) -> None:
        self._entries.clear()
        self._misses.clear()

    def __len__(self) -> int:
        return len(self._entries) + len(self._misses)
