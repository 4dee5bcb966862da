"""GCRA buckets in Redis: one Lua script call charges one request to one bucket.

GCRA keeps one number per bucket, the theoretical arrival time (TAT) of the next request. Each
request moves it ``interval`` (60 s / per-minute rate) into the future; a request is refused when
that would put the TAT more than ``capacity * interval`` ahead of now. A bucket that has been quiet
takes ``capacity`` requests at once, then the sustained rate. The clock is Redis's own (``TIME``),
so every worker and every edge agrees.

Redis unreachable: ``charge`` returns None and the caller lets the request through (fails open),
counted in ``linkedge_rate_limit_errors_total`` and logged at most every 10 seconds.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import NamedTuple

from redis.asyncio import Redis

from edge.metrics import RATE_LIMIT_ERRORS

log = logging.getLogger("linkedge.api")

REDIS_TIMEOUT_S = 0.5

# KEYS[1] = the bucket's TAT; ARGV = interval (µs), capacity. Returns allowed, remaining,
# retry-after (ms), time until the bucket is full again (ms).
GCRA_SCRIPT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1])) or now
if tat < now then tat = now end
local new_tat = tat + interval
if new_tat - now > tolerance then
  return {0, 0, math.ceil((new_tat - now - tolerance) / 1000), math.ceil((tat - now) / 1000)}
end
redis.call('SET', KEYS[1], string.format('%d', new_tat), 'PX', math.ceil((new_tat - now) / 1000))
local remaining = math.floor((tolerance - (new_tat - now)) / interval)
return {1, remaining, 0, math.ceil((new_tat - now) / 1000)}
"""


class Verdict(NamedTuple):
    allowed: bool
    remaining: int
    retry_ms: int  # when refused: how long until one request fits again
    reset_ms: int  # how long until the bucket is full again

    @property
    def retry_s(self) -> int:
        return max(1, math.ceil(self.retry_ms / 1000))


class Limiter:
    """``per_minute`` sustained, ``burst`` at once, per bucket key."""

    def __init__(self, redis: Redis, per_minute: int, burst: int) -> None:
        self.script = redis.register_script(GCRA_SCRIPT)
        self.interval_us = max(1, 60_000_000 // per_minute)
        self.capacity = max(1, burst)
        self.per_minute = 60_000_000 // self.interval_us
        self.refill_s = math.ceil(self.capacity * self.interval_us / 1_000_000)
        self._last_error_log = 0.0

    async def charge(self, bucket: str) -> Verdict | None:
        """Charge one request to ``bucket``; None when Redis cannot say (let it through)."""
        try:
            result = await asyncio.wait_for(
                self.script(keys=[bucket], args=[self.interval_us, self.capacity]),
                REDIS_TIMEOUT_S,
            )
        except Exception as exc:  # noqa: BLE001 - fail open: any Redis failure lets it through
            RATE_LIMIT_ERRORS.inc()
            now = time.monotonic()
            if now - self._last_error_log > 10:
                self._last_error_log = now
                log.warning("rate limiter unavailable, failing open: %r", exc)
            return None
        allowed, remaining, retry_ms, reset_ms = (int(value) for value in result)
        return Verdict(bool(allowed), remaining, retry_ms, reset_ms)
