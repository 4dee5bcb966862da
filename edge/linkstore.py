"""Short code -> link, through three tiers: the worker's own cache, Redis, Postgres.

A local miss asks Redis (``GET lk:link:<code>``; concurrent misses of one loop tick share one
``MGET``, one per slot on a Redis Cluster), then Postgres, and writes what Postgres said back to
Redis: the record for a day, or a miss marker for ``MISS_TTL_S``. Concurrent lookups of one code
in a worker share one fetch. When Redis fails the lookup goes straight to Postgres (and skips Redis
for ``REDIS_RETRY_S``): a Redis outage never fails a redirect.

A code Redis knows nothing of (or any code while Redis fails) costs Postgres only with a token of
the worker's ``ColdBudget`` (``COLD_LOOKUPS_PER_SECOND``; a found link gives its token back): a
flood of random codes gets its 404s without Postgres once the budget is spent, counted in
``linkedge_cold_lookups_refused_total`` and cached nowhere, so the code is looked up properly once
the flood is over. Links the API creates or edits do not need the budget: the API writes their
records into Redis after the commit (``invalidate_many`` with ``records``).

A record that enters the cache from Redis or Postgres is checked once (``LinkRecord.fault``); one
the API could not have written is answered as unknown (404), counted in
``linkedge_bad_link_records_total`` and logged. A cache hit does no such work.

Edits reach every worker through ``invalidate``: it overwrites the Redis record with a short-lived
"invalidated" marker and publishes the code on ``keys.INVALIDATE_CHANNEL``; each worker's
``listen`` task drops the code from its cache. The marker (rather than a plain ``DEL``) closes a
race: a worker that read the old row from Postgres just before the edit would otherwise write the
old record back to Redis after the ``DEL``. Write-backs use ``SET NX``, so they never replace the
marker, and a worker does not cache a value whose fetch overlapped an invalidation. A create or an
edit writes its committed record in the marker's place, which closes the same race (the key is
taken) unless Redis already holds a record at least as new (``STORE_NEWER``, by ``version``); so
does the marker of an edit read from Postgres (``forget_edited``), and a write-back over a stale
record never replaces a marker or a newer record.
"""

from __future__ import annotations

import asyncio
import enum
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any, Final, Generic, Protocol, TypeVar, cast

import asyncpg
import redis.asyncio as aioredis

from edge.budget import ColdBudget
from edge.cache import MISSING, Clock, LocalCache, _Missing
from edge.coalescer import Coalescer
from edge.edits import EditLog, EditWatcher, poll_interval
from edge.metrics import (
    BAD_LINK_RECORDS,
    CACHE_LOOKUPS,
    COLD_LOOKUPS_REFUSED,
    INVALIDATION_ERRORS,
    INVALIDATIONS,
    LOOKUP_ERRORS,
)
from edge.records import LinkRecord
from linkedge import keys
from linkedge.redisclient import AnyRedis
from linkedge.settings import Settings

log = logging.getLogger("linkedge.edge.links")

MISS_MARKER = b"-"  # Redis value: Postgres has no such code (kept MISS_TTL)
INVALIDATED_MARKER = b"!"  # Redis value: edited just now; read Postgres, write nothing back
INVALIDATED_TTL_MS = 10_000  # longer than any Postgres read that could race an edit
UNMARKED_KEPT = 100_000  # edited codes whose Redis marker is still to be written, at most
ANY_VERSION = 1 << 62  # newer than every record: a marker written with it replaces any
REDIS_RETRY_S = 1.0  # after a Redis error, lookups skip Redis this long
MGET_MAX_KEYS = 512
MGETS_IN_FLIGHT = 2  # per worker; more requests wait for one of them and share the next

SELECTS_IN_FLIGHT = 2  # per worker, as for MGET; Postgres is the slower store
SELECT_MAX_CODES = 512

# Live links of many codes at once: the concurrent cold lookups of a worker share one query.
SELECT_LINKS = """
SELECT id, account_id, code, url, redirect_type,
       EXTRACT(EPOCH FROM expires_at)::float8 AS expires_at,
       expired_url, forward_query, disabled,
       (EXTRACT(EPOCH FROM updated_at) * 1000000)::int8 AS version
FROM links
WHERE code = ANY($1::text[]) AND deleted_at IS NULL
"""

# SET KEYS[1] to ARGV[1] for ARGV[3] ms unless Redis holds a record whose version is at least
# ARGV[2] (or, unless ARGV[4] is "1", a marker): 1 when written.
STORE_NEWER = """
local current = redis.call('GET', KEYS[1])
if current then
  if current == '-' or current == '!' then
    if ARGV[4] ~= '1' then return 0 end
  else
    local ok, record = pcall(cjson.decode, current)
    if ok and type(record) == 'table' then
      local version = tonumber(record['version'])
      if version and version >= tonumber(ARGV[2]) then return 0 end
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
return 1
"""


class _Refused(enum.Enum):
    """What ``_fetch`` answers when the cold-lookup budget is spent: 404, cached nowhere."""

    REFUSED = 0


REFUSED: Final = _Refused.REFUSED

# Tiers, as indexes into LinkStore.tiers (plain ints on the hot path; ``fold`` moves them into
# CACHE_LOOKUPS).
LOCAL, LOCAL_MISS, REDIS, POSTGRES, NONE = range(5)
_TIER_NAMES = ("local", "local_miss", "redis", "postgres", "none")


def _refused(record: LinkRecord, store: str, code: str) -> bool:
    """Whether a record just loaded from ``store`` is one the API could not have written."""
    field = record.fault()
    if field is None:
        return False
    BAD_LINK_RECORDS.labels(store=store, field=field).inc()
    log.warning(
        "link record refused: answered 404",
        extra={"code": code, "link_id": record.id, "store": store, "field": field},
    )
    return True


class StoreUnavailable(Exception):
    """Neither Redis nor Postgres could answer a lookup."""


class Prepared(Protocol):
    """What the cache holds per link: anything built once from the record (see ``edge.redirect``)."""

    @property
    def link(self) -> LinkRecord: ...


V = TypeVar("V", bound=Prepared)


class LinkStore(Generic[V]):
    """Lookups (``cached`` then ``fetch``, or ``lookup``) and invalidation of links in one worker."""

    def __init__(
        self,
        redis: AnyRedis,
        pg: asyncpg.Pool,
        settings: Settings,
        prepare: Callable[[LinkRecord], V],
        *,
        clock: Clock,
        subscriber: aioredis.Redis | None = None,
    ) -> None:
        self.redis = redis
        self.pg = pg
        self.settings = settings
        self.prepare = prepare
        self.clock = clock
        self.cache: LocalCache[V] = LocalCache(
            settings.cache_size, settings.cache_ttl_s, settings.miss_ttl_s, clock
        )
        self.tiers = [0] * len(_TIER_NAMES)
        self.invalidations = 0
        self.selects = 0  # Postgres queries for lookups (each may answer many codes)
        self._cluster = isinstance(redis, aioredis.RedisCluster)
        self._subscriber = subscriber or redis
        # One MGET per batch; on a Redis Cluster the keys sit in many slots, and
        # ``mget_nonatomic`` sends one MGET per slot (a lookup needs no atomicity across codes).
        mget = cast(
            "Callable[[list[str]], Awaitable[list[bytes | None]]]",
            redis.mget_nonatomic if isinstance(redis, aioredis.RedisCluster) else redis.mget,
        )
        self._gets: Coalescer[str, bytes | None] = Coalescer(
            mget, max_batch=MGET_MAX_KEYS, in_flight=MGETS_IN_FLIGHT
        )
        self._selects: Coalescer[str, LinkRecord | None] = Coalescer(
            self._select_many, max_batch=SELECT_MAX_CODES, in_flight=SELECTS_IN_FLIGHT
        )
        self._inflight: dict[str, asyncio.Future[V | None]] = {}
        self._epoch = 0  # bumped by every invalidation; a fetch that overlaps one is not cached
        self._redis_retry_at = 0.0
        self._background: set[asyncio.Task[Any]] = set()
        self._tier_counters = [CACHE_LOOKUPS.labels(tier=name) for name in _TIER_NAMES]
        self.edits = EditLog()  # versions of the edits read from Postgres (edge.edits)
        self.budget = ColdBudget(settings.cold_lookups_per_second, clock)
        self.refused = 0  # cold lookups refused for want of budget (folded into Prometheus)
        self._unmarked: set[str] = set()  # edited codes whose Redis marker did not land yet

    # ---- lookups ---------------------------------------------------------------------------

    def cached(self, code: str) -> V | None | _Missing:
        """The local answer (a prepared link or ``None`` for a known miss), or ``MISSING``."""
        value = self.cache.get(code)
        if value is not MISSING:
            self.tiers[LOCAL_MISS if value is None else LOCAL] += 1
        return value

    async def fetch(self, code: str) -> V | None:
        """Ask Redis, then Postgres (``None``, cached nowhere, when that would take a token of a
        spent cold-lookup budget); concurrent calls for one code share one fetch."""
        pending = self._inflight.get(code)
        if pending is None:
            pending = asyncio.ensure_future(self._fetch_and_cache(code))
            self._inflight[code] = pending
            pending.add_done_callback(lambda done: self._forget(code, done))
        # shield: one waiter going away must not cancel the fetch the others wait for
        return await asyncio.shield(pending)

    async def lookup(self, code: str) -> LinkRecord | None:
        """The link of ``code`` (disabled ones included), ``None`` when there is none (or the
        cold-lookup budget is spent, as in ``fetch``)."""
        value = self.cached(code)
        if value is MISSING:
            value = await self.fetch(code)
        return None if value is None else value.link

    def _forget(self, code: str, done: asyncio.Future[V | None]) -> None:
        if self._inflight.get(code) is done:
            del self._inflight[code]

    async def _fetch_and_cache(self, code: str) -> V | None:
        epoch = self._epoch
        value = await self._fetch(code)
        if value is REFUSED:
            return None
        if self._epoch == epoch:
            self.cache.put(code, value)
        return value

    async def _fetch(self, code: str) -> V | None | _Refused:
        key = keys.link(code)
        raw: bytes | None = None
        stale = False
        use_redis = self.clock.now >= self._redis_retry_at
        if use_redis:
            try:
                raw = await self._gets.get(key)
            except Exception as exc:  # noqa: BLE001 -- any Redis failure: serve from Postgres
                self._redis_failed("get", exc)
                use_redis = False
            else:
                if raw == MISS_MARKER:
                    self.tiers[REDIS] += 1
                    return None
                if raw is not None and raw != INVALIDATED_MARKER:
                    try:
                        cached = LinkRecord.from_json(raw)
                    except (ValueError, TypeError) as exc:
                        LOOKUP_ERRORS.labels(store="redis_decode").inc()
                        log.warning(
                            "undecodable link record in Redis",
                            extra={"code": code, "error": repr(exc)},
                        )
                    else:
                        if cached.version >= self.edits.version(code):
                            self.tiers[REDIS] += 1
                            return None if _refused(cached, "redis", code) else self.prepare(cached)
                        stale = True  # older than an edit read from Postgres: replaced below
        # Redis knew nothing (or failed): a cold lookup, on the budget. An edited code (stale or
        # marked) is not: only the API's writes put those there.
        cold = not stale and raw != INVALIDATED_MARKER
        if cold and not self.budget.take():
            self.refused += 1
            return REFUSED
        record = await self._select(code)
        self.tiers[NONE if record is None else POSTGRES] += 1
        if record is not None and _refused(record, "postgres", code):
            record = None  # written back as a miss: other workers need not load it again
        if cold and record is not None:
            self.budget.give_back()  # only unknown codes spend the budget
        if use_redis and raw != INVALIDATED_MARKER:
            self._spawn(self._write_back(key, record, replace=stale))
        return None if record is None else self.prepare(record)

    async def _select(self, code: str) -> LinkRecord | None:
        try:
            return await self._selects.get(code)
        except (TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
            LOOKUP_ERRORS.labels(store="postgres").inc()
            raise StoreUnavailable(f"postgres lookup failed: {exc!r}") from exc

    async def _select_many(self, codes: list[str]) -> list[LinkRecord | None]:
        rows = await self.pg.fetch(SELECT_LINKS, codes, timeout=5)
        self.selects += 1
        found = {row["code"]: LinkRecord(**dict(row)) for row in rows}
        return [found.get(code) for code in codes]

    async def _write_back(self, key: str, record: LinkRecord | None, replace: bool = False) -> None:
        """Write what Postgres said to Redis, unless something is there already (an invalidation
        marker must stay); with ``replace``, over the stale record that is there, unless a marker
        or a record at least as new took its place meanwhile."""
        try:
            if record is None:
                await self.redis.set(
                    key, MISS_MARKER, px=int(self.settings.miss_ttl_s * 1000), nx=not replace
                )
            elif replace:
                ttl_ms = self.settings.redis_link_ttl_s * 1000
                await self.redis.eval(
                    STORE_NEWER, 1, key, record.to_json(), record.version, ttl_ms, 0
                )
            else:
                await self.redis.set(
                    key, record.to_json(), ex=self.settings.redis_link_ttl_s, nx=True
                )
        except Exception as exc:  # noqa: BLE001 -- a write-back is optional; counted, logged
            self._redis_failed("write_back", exc)

    def _redis_failed(self, what: str, exc: Exception) -> None:
        LOOKUP_ERRORS.labels(store="redis").inc()
        if self.clock.now >= self._redis_retry_at:  # log once per retry window, not per request
            log.warning("redis %s failed; serving from Postgres", what, extra={"error": repr(exc)})
        self._redis_retry_at = self.clock.now + REDIS_RETRY_S

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    # ---- invalidation ----------------------------------------------------------------------

    async def invalidate(self, code: str) -> None:
        """Make every worker of every edge forget ``code`` (call after the edit committed)."""
        await self.invalidate_many([code])

    async def invalidate_many(self, codes: list[str], records: Sequence[LinkRecord] = ()) -> None:
        """``invalidate`` for many codes in one Redis round trip. ``records``: the committed rows
        of some of them (created or edited), each written into Redis in place of the marker unless
        Redis holds one at least as new, so that every worker finds it without Postgres. Never
        raises: a failure is logged and counted, and the workers' caches then expire within
        ``CACHE_TTL_S``."""
        if not codes:
            return
        self._drop(codes)
        written = {record.code for record in records}
        ttl_ms = self.settings.redis_link_ttl_s * 1000
        for attempt in range(3):
            try:
                async with self.redis.pipeline(transaction=False) as pipe:
                    for code in codes:
                        if code not in written:
                            pipe.set(keys.link(code), INVALIDATED_MARKER, px=INVALIDATED_TTL_MS)
                    for record in records:
                        key = keys.link(record.code)
                        pipe.eval(STORE_NEWER, 1, key, record.to_json(), record.version, ttl_ms, 1)
                    if not self._cluster:
                        pipe.publish(keys.INVALIDATE_CHANNEL, " ".join(codes))
                    await pipe.execute()
                if self._cluster:  # redis-py refuses PUBLISH in a cluster pipeline
                    await self.redis.publish(keys.INVALIDATE_CHANNEL, " ".join(codes))
                return
            except Exception as exc:  # noqa: BLE001 -- retried, then counted and logged
                error = exc
                await asyncio.sleep(0.05 * (attempt + 1))
        INVALIDATION_ERRORS.inc(len(codes))
        log.error(
            "could not publish invalidation",
            extra={"codes": codes[:20], "count": len(codes), "error": repr(error)},
        )

    def watcher(self) -> EditWatcher:
        """The task body that reads edits from Postgres (``edge.edits``) for this store."""
        interval = poll_interval(self.settings.cache_ttl_s)
        return EditWatcher(self.pg, self.edits, self.forget_edited, interval)

    def forget_edited(self, codes: list[str]) -> None:
        """Drop codes an edit read from Postgres changed, and mark them in Redis, retrying the
        marks that did not land before (``EditWatcher`` calls this on every poll)."""
        if codes:
            self._drop(codes)
        pending = self._unmarked.union(codes)
        if pending:
            self._unmarked.clear()
            self._spawn(self._mark(sorted(pending)))

    async def _mark(self, codes: list[str]) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for code in codes:  # not over the edit's own record, which the API wrote
                    version = self.edits.version(code) or ANY_VERSION  # forgotten: over any
                    args = (INVALIDATED_MARKER, version, INVALIDATED_TTL_MS, 1)
                    pipe.eval(STORE_NEWER, 1, keys.link(code), *args)
                await pipe.execute()
        except Exception as exc:  # noqa: BLE001 -- retried at the next poll
            if len(self._unmarked) < UNMARKED_KEPT:
                self._unmarked.update(codes[: UNMARKED_KEPT - len(self._unmarked)])
            self._redis_failed("edit marker", exc)

    def _drop(self, codes: Iterable[str]) -> None:
        self._epoch += 1
        for code in codes:
            self.cache.discard(code)
            self._inflight.pop(code, None)

    async def listen(self) -> None:
        """Drop codes published on the invalidation channel, for the life of the worker.

        After a Redis error it resubscribes with backoff and then clears the whole cache: messages
        published while it was away are lost.
        """
        backoff = 0.1
        outage = False
        while True:
            pubsub = self._subscriber.pubsub(ignore_subscribe_messages=True)
            try:
                await pubsub.subscribe(keys.INVALIDATE_CHANNEL)
                self._epoch += 1
                self.cache.clear()
                if outage:
                    log.info("invalidation channel resubscribed; local cache cleared")
                outage, backoff = False, 0.1
                while True:
                    message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=1.0)
                    if message is not None and message["type"] == "message":
                        codes = message["data"].decode("ascii", "replace").split()
                        self._drop(codes)
                        self.invalidations += len(codes)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- the listener must outlive any Redis error
                if not outage:
                    log.warning("invalidation channel lost; retrying", extra={"error": repr(exc)})
                outage = True
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 5.0)
            finally:
                try:
                    await pubsub.aclose()
                except Exception as exc:  # noqa: BLE001 -- the connection is already gone
                    log.debug("pubsub close failed", extra={"error": repr(exc)})

    # ---- metrics ---------------------------------------------------------------------------

    def fold(self) -> None:
        """Move the plain-int counts into the Prometheus counters (on a timer, off the hot path)."""
        tiers = self.tiers[:]  # zeroed in place: the C hot path holds the list
        self.tiers[:] = [0] * len(_TIER_NAMES)
        for counter, count in zip(self._tier_counters, tiers):
            if count:
                counter.inc(count)
        if self.invalidations:
            INVALIDATIONS.inc(self.invalidations)
            self.invalidations = 0
        if self.refused:
            COLD_LOOKUPS_REFUSED.inc(self.refused)
            self.refused = 0

    async def close(self) -> None:
        for task in list(self._background):
            task.cancel()
        await asyncio.gather(*self._background, return_exceptions=True)
        self.fold()
