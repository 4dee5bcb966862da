"""Per-key rate limits in Redis: GCRA, one Lua script call per request.

GCRA keeps one number per key, the theoretical arrival time (TAT) of the next request. Each
request moves it ``interval`` (60 s / RATE_LIMIT_PER_MINUTE) into the future; a request is refused
when that would put the TAT more than ``capacity * interval`` ahead of now. ``capacity`` is
RATE_LIMIT_BURST: a key that has been quiet may send that many requests at once, then the
sustained rate. The clock is Redis's own (``TIME``), so every worker and every edge agrees.

Headers (draft-ietf-httpapi-ratelimit-headers-09):
``RateLimit-Policy: "per-key";q=<capacity>;w=<seconds to refill>`` and
``RateLimit: "per-key";r=<requests left now>;t=<seconds until full again>`` on every response;
a 429 adds ``Retry-After``.

Redis unreachable: the API fails OPEN (requests are served unlimited), counted in
``linkedge_rate_limit_errors_total`` and logged at most every 10 seconds. Availability of link
management matters more than strict limits during a Redis outage that already degrades the edge.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from redis.asyncio import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.api.auth import SCOPE_KEY, ApiKey
from edge.api.problems import Problem
from edge.metrics import RATE_LIMIT_ERRORS, RATE_LIMITED
from linkedge import keys

log = logging.getLogger("linkedge.api")

REDIS_TIMEOUT_S = 0.5
POLICY = "per-key"

# KEYS[1] = the key's TAT; ARGV = interval (µs), capacity. Returns allowed, remaining,
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


class RateLimitMiddleware:
    """Charges one request to the authenticated key; 429 when its bucket is empty."""

    def __init__(self, app: ASGIApp, redis: Redis, per_minute: int, burst: int) -> None:
        self.app = app
        self.script = redis.register_script(GCRA_SCRIPT)
        self.interval_us = max(1, 60_000_000 // per_minute)
        self.capacity = max(1, burst)
        refill_s = math.ceil(self.capacity * self.interval_us / 1_000_000)
        self.policy_header = (
            b"ratelimit-policy",
            f'"{POLICY}";q={self.capacity};w={refill_s}'.encode(),
        )
        self._last_error_log = 0.0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key: ApiKey | None = scope.get(SCOPE_KEY)
        if scope["type"] != "http" or key is None:
            await self.app(scope, receive, send)
            return
        verdict = await self._charge(key.id)
        if verdict is None:
            await self.app(scope, receive, send)
            return
        allowed, remaining, retry_ms, reset_ms = verdict
        reset_s = math.ceil(reset_ms / 1000)
        if not allowed:
            RATE_LIMITED.inc()
            retry_s = max(1, math.ceil(retry_ms / 1000))
            headers = {
                "Retry-After": str(retry_s),
                "RateLimit-Policy": self.policy_header[1].decode(),
                "RateLimit": f'"{POLICY}";r=0;t={retry_s}',
            }
            detail = (
                f"this API key is over its rate limit of {self.capacity} requests at once and "
                f"{60_000_000 // self.interval_us} per minute; retry in {retry_s} s"
            )
            await Problem(429, detail, headers=headers).response(scope["path"])(
                scope, receive, send
            )
            return
        state = (b"ratelimit", f'"{POLICY}";r={remaining};t={reset_s}'.encode())

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.policy_header, state]
            await send(message)

        await self.app(scope, receive, send_with_headers)

    async def _charge(self, key_id: int) -> tuple[int, int, int, int] | None:
        try:
            result = await asyncio.wait_for(
                self.script(keys=[keys.rate_limit(key_id)], args=[self.interval_us, self.capacity]),
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
        return allowed, remaining, retry_ms, reset_ms
