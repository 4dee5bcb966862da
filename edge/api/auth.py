"""Bearer API keys: pure ASGI middleware on the ``/api/v1`` mount.

A presented key is hashed (SHA-256) and looked up by digest; ``hmac.compare_digest`` makes the
final comparison. Lookups are cached per worker for ``KEY_CACHE_TTL_S`` seconds (unknown keys too),
which bounds how long a revoked key keeps working on a worker that had just seen it: revocation
bites within 5 seconds. A key the cache does not hold costs a Postgres query, so those lookups are
limited per client IP (``AUTH_LOOKUPS_PER_MINUTE``, ``AUTH_LOOKUP_BURST``; a GCRA bucket in Redis,
the IP taken from ``X-Forwarded-For`` only behind ``TRUSTED_PROXIES``): a client sending random
keys gets 429s instead of loading Postgres. Keys in the cache are not counted, so a client using
its key is charged about once per ``KEY_CACHE_TTL_S`` per worker.

Handlers call ``require(request, scope)``: 403 naming the scope that is missing.
"""

from __future__ import annotations

import dataclasses
import hmac
import time

import asyncpg
from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from edge.api.gcra import Limiter
from edge.api.problems import Problem
from edge.clickinfo import Network, client_ip
from edge.metrics import RATE_LIMITED
from linkedge import apikeys, keys

KEY_CACHE_TTL_S = 5.0
KEY_CACHE_SIZE = 10_000
MAX_KEY_LENGTH = 200
SCOPE_KEY = "linkedge.api_key"  # where the authenticated key sits in the ASGI scope

_CHALLENGE = {"WWW-Authenticate": 'Bearer realm="linkedge"'}
_INVALID = {"WWW-Authenticate": 'Bearer realm="linkedge", error="invalid_token"'}


@dataclasses.dataclass(frozen=True, slots=True)
class ApiKey:
    id: int
    account_id: int
    scopes: frozenset[str]


class KeyCache:
    """Digest -> key (or None for unknown/revoked), trusted for ``ttl`` seconds."""

    def __init__(self, ttl: float = KEY_CACHE_TTL_S, size: int = KEY_CACHE_SIZE) -> None:
        self.ttl = ttl
        self.size = size
        self._entries: dict[bytes, tuple[float, ApiKey | None]] = {}

    def get(self, digest: bytes) -> tuple[bool, ApiKey | None]:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return False, None
        return True, entry[1]

    def put(self, digest: bytes, key: ApiKey | None) -> None:
        if len(self._entries) >= self.size:
            now = time.monotonic()
            self._entries = {d: e for d, e in self._entries.items() if e[0] >= now}
            if len(self._entries) >= self.size:
                self._entries.clear()
        self._entries[digest] = (time.monotonic() + self.ttl, key)


async def load_key(pg: asyncpg.Pool, presented: str) -> ApiKey | None:
    """The live key whose digest matches ``presented``; ``None`` when unknown or revoked."""
    digest = apikeys.digest(presented)
    row = await pg.fetchrow(
        "SELECT id, account_id, digest, scopes, revoked_at FROM api_keys WHERE digest = $1", digest
    )
    if row is None or row["revoked_at"] is not None:
        return None
    if not hmac.compare_digest(bytes(row["digest"]), digest):
        return None
    return ApiKey(id=row["id"], account_id=row["account_id"], scopes=frozenset(row["scopes"]))


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").strip().partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


class AuthMiddleware:
    """401 unless a live key is presented; paths in ``public`` (relative to the mount) are open."""

    def __init__(
        self,
        app: ASGIApp,
        pg: asyncpg.Pool,
        public: frozenset[str] = frozenset(),
        lookups: Limiter | None = None,
        trusted: tuple[Network, ...] = (),
    ) -> None:
        self.app = app
        self.pg = pg
        self.public = public
        self.cache = KeyCache()
        self.lookups = lookups  # per client IP, for keys the cache does not hold
        self.trusted = trusted

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or get_route_path(scope) in self.public:
            await self.app(scope, receive, send)
            return
        token = _bearer(scope)
        if not token:
            detail = (
                "send an API key as 'Authorization: Bearer lk_...'"
                if token is None
                else "the Authorization header must be 'Bearer lk_...'"
            )
            await Problem(401, detail, headers=_CHALLENGE).response(scope["path"])(
                scope, receive, send
            )
            return
        digest = apikeys.digest(token) if _well_formed(token) else None
        hit, key = self.cache.get(digest) if digest is not None else (True, None)
        if not hit and digest is not None:
            refused = await self._over_lookup_limit(scope)
            if refused is not None:
                await refused.response(scope["path"])(scope, receive, send)
                return
            key = await load_key(self.pg, token)
            self.cache.put(digest, key)
        if key is None:
            detail = (
                "the API key is invalid or revoked; create a new one with 'linkedge create-key'"
            )
            await Problem(401, detail, headers=_INVALID).response(scope["path"])(
                scope, receive, send
            )
            return
        scope[SCOPE_KEY] = key
        await self.app(scope, receive, send)

    async def _over_lookup_limit(self, scope: Scope) -> Problem | None:
        """A 429 when this client IP has looked up too many keys the cache did not hold."""
        if self.lookups is None:
            return None
        client = scope.get("client")
        peer = str(client[0]) if client else ""
        forwarded = [
            value.decode("latin-1")
            for name, value in scope["headers"]
            if name == b"x-forwarded-for"
        ]
        verdict = await self.lookups.charge(
            keys.auth_lookups(client_ip(peer, forwarded, self.trusted))
        )
        if verdict is None or verdict.allowed:
            return None
        RATE_LIMITED.inc()
        retry_s = verdict.retry_s
        return Problem(
            429,
            f"too many API key lookups from this address ({self.lookups.capacity} at once, "
            f"{self.lookups.per_minute} per minute); retry in {retry_s} s with a valid key",
            headers={"Retry-After": str(retry_s)},
        )


def _well_formed(token: str) -> bool:
    return token.startswith(apikeys.KEY_PREFIX) and len(token) <= MAX_KEY_LENGTH


def require(request: Request, scope_name: str) -> ApiKey:
    """The request's key, if it holds ``scope_name``; a 403 naming the scope otherwise."""
    key: ApiKey = request.scope[SCOPE_KEY]
    if scope_name not in key.scopes:
        held = ", ".join(sorted(key.scopes)) or "none"
        raise Problem(
            403,
            f"this API key lacks the scope {scope_name!r} (it has: {held}); "
            f"create a key with it: linkedge create-key --account NAME --scopes {scope_name}",
        )
    return key
