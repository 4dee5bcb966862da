"""Per-key rate limits: a GCRA bucket (``edge.api.gcra``) per API key, charged once per request.

RATE_LIMIT_BURST requests at once, then RATE_LIMIT_PER_MINUTE. Headers
(draft-ietf-httpapi-ratelimit-headers-09):
``RateLimit-Policy: "per-key";q=<capacity>;w=<seconds to refill>`` and
``RateLimit: "per-key";r=<requests left now>;t=<seconds until full again>`` on every response;
a 429 adds ``Retry-After``.

Redis unreachable: the API fails OPEN (requests are served unlimited), counted in
``linkedge_rate_limit_errors_total`` and logged at most every 10 seconds. Availability of link
management matters more than strict limits during a Redis outage that already degrades the edge.
"""

from __future__ import annotations

import math

from redis.asyncio import Redis
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.api.auth import SCOPE_KEY, ApiKey
from edge.api.gcra import Limiter
from edge.api.problems import Problem
from edge.metrics import RATE_LIMITED
from linkedge import keys

POLICY = "per-key"


class RateLimitMiddleware:
    """Charges one request to the authenticated key; 429 when its bucket is empty."""

    def __init__(self, app: ASGIApp, redis: Redis, per_minute: int, burst: int) -> None:
        self.app = app
        self.limiter = Limiter(redis, per_minute, burst)
        self.capacity = self.limiter.capacity
        self.policy_header = (
            b"ratelimit-policy",
            f'"{POLICY}";q={self.capacity};w={self.limiter.refill_s}'.encode(),
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        key: ApiKey | None = scope.get(SCOPE_KEY)
        if scope["type"] != "http" or key is None:
            await self.app(scope, receive, send)
            return
        verdict = await self.limiter.charge(keys.rate_limit(key.id))
        if verdict is None:
            await self.app(scope, receive, send)
            return
        reset_s = math.ceil(verdict.reset_ms / 1000)
        if not verdict.allowed:
            RATE_LIMITED.inc()
            retry_s = verdict.retry_s
            headers = {
                "Retry-After": str(retry_s),
                "RateLimit-Policy": self.policy_header[1].decode(),
                "RateLimit": f'"{POLICY}";r=0;t={retry_s}',
            }
            detail = (
                f"this API key is over its rate limit of {self.capacity} requests at once and "
                f"{self.limiter.per_minute} per minute; retry in {retry_s} s"
            )
            await Problem(429, detail, headers=headers).response(scope["path"])(
                scope, receive, send
            )
            return
        state = (b"ratelimit", f'"{POLICY}";r={verdict.remaining};t={reset_s}'.encode())

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), self.policy_header, state]
            await send(message)

        await self.app(scope, receive, send_with_headers)
