"""What one edge worker holds open: Redis, the Postgres pool, the link store, the click recorder.

Created in the ASGI lifespan (``Resources.open``) and closed there (``close``: the click recorder
flushes, background tasks stop, pools close). One task per worker refreshes the clock the caches
read and, once a second, runs the ``every_second`` callbacks that fold hot-path counters into
Prometheus; another listens for link invalidations.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import gc
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import cast

import asyncpg
import redis.asyncio as aioredis
from prometheus_client import multiprocess
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from edge.cache import Clock
from edge.clicks import Recorder, new_recorder
from edge.linkstore import LinkStore
from edge.redirect import Target
from linkedge import redisclient
from linkedge.settings import Settings

log = logging.getLogger("linkedge.edge")

REDIS_TIMEOUT_S = 1.0  # a redirect falls back to Postgres rather than wait longer on Redis
REDIS_MAX_CONNECTIONS = 64  # per worker: lookups (batched), click flushes, API rate limits
PG_MIN_SIZE = 1
PG_MAX_SIZE = 8  # per worker: cold lookups and the API
# The worker's garbage collector thresholds (``settle_gc``); CPython's defaults are (700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 10)
_gc_settled = False


def settle_gc() -> None:
    """Set up the worker's garbage collector once its start-up has built what it keeps; once per
    process.

    With CPython's default thresholds a young collection runs every 700 allocations and promotes
    whatever is alive at that moment: requests in flight, the open batch's counter keys, links
    entering the cache. Under load the promotions set off a full collection about every second,
    walking every object of the worker (~120k with 10k links cached) with the loop stopped: the
    hot path's p99 (BENCHMARKS.md). ``gc.freeze()`` takes what start-up built out of every later
    collection, and a 50,000-allocation young threshold lets short-lived objects die before a
    collection sees them. Cyclic garbage is still collected, in fewer, larger young collections.
    """
    global _gc_settled
    if _gc_settled:
        return
    _gc_settled = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def _forget_dead_workers(multiproc_dir: str) -> None:
    """Drop the live-gauge samples of workers that died (Granian respawns without a hook for it)."""
    if not multiproc_dir:
        return
    for path in Path(multiproc_dir).glob("gauge_live*_*.db"):
        pid = path.stem.rpartition("_")[2]
        if not pid.isdigit():
            continue
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            multiprocess.mark_process_dead(int(pid), multiproc_dir)  # type: ignore[no-untyped-call]
        except PermissionError:
            pass


async def _stop(task: asyncio.Task[None]) -> None:
    """Cancel ``task`` and wait for it, cancelling again if a library swallowed the first one
    (redis-py's timed reads can lose a cancellation that lands as their timeout fires)."""
    while not task.done():
        task.cancel()
        await asyncio.wait([task], timeout=0.2)
    if not task.cancelled() and task.exception() is not None:
        log.error("background task failed", exc_info=task.exception())


async def _open_redis(url: str) -> aioredis.Redis:
    """The worker's Redis client: a pooled plain client, or a ``RedisCluster`` when the URL's node
    says it is in cluster mode (a node that cannot be asked is taken for a single node: a Redis
    outage must not stop an edge from starting)."""
    try:
        cluster = await redisclient.cluster_enabled(url, timeout=REDIS_TIMEOUT_S)
    except (RedisError, OSError) as exc:
        log.warning(
            "could not ask Redis whether it is a cluster; using a single-node client",
            extra={"error": repr(exc)},
        )
        cluster = False
    if cluster:
        client = redisclient.cluster_client(
            url,
            "edge",
            max_connections=REDIS_MAX_CONNECTIONS,  # per node; over it a command fails at once
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 1),
        )
        # RedisCluster is no Redis subclass, but has every command the edge sends through it:
        # scripts (routed by their keys), SET, PUBLISH, PING, non-transactional pipelines. The
        # one difference, MGET across slots, LinkStore handles itself.
        return cast(aioredis.Redis, client)
    return aioredis.Redis.from_pool(  # from_pool: the client owns the pool and closes it
        aioredis.BlockingConnectionPool.from_url(
            url,
            max_connections=REDIS_MAX_CONNECTIONS,
            timeout=REDIS_TIMEOUT_S,
            socket_timeout=REDIS_TIMEOUT_S,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            health_check_interval=30,
            retry=Retry(NoBackoff(), 1),  # one retry covers a pooled connection Redis closed
        )
    )


@dataclasses.dataclass(eq=False)
class Resources:
    settings: Settings
    redis: aioredis.Redis
    pg: asyncpg.Pool
    links: LinkStore[Target]
    clicks: Recorder
    clock: Clock
    _subscriber: aioredis.Redis
    _tasks: list[asyncio.Task[None]] = dataclasses.field(default_factory=list)
    _periodic: list[Callable[[], None]] = dataclasses.field(default_factory=list)

    @classmethod
    async def open(cls, settings: Settings) -> Resources:
        settings.require("redis_url", "database_url")
        _forget_dead_workers(settings.prometheus_multiproc_dir)
        redis = await _open_redis(settings.redis_url.get())
        # The invalidation listener idles on its own connection; its read timeout is per call.
        # Always a plain client on the URL's node: a cluster broadcasts PUBLISH to every node.
        subscriber = aioredis.Redis.from_url(
            settings.redis_url.get(),
            socket_timeout=5,
            socket_connect_timeout=REDIS_TIMEOUT_S,
            health_check_interval=5,
            retry=Retry(NoBackoff(), 0),
        )
        pg = await asyncpg.create_pool(
            settings.database_url.get(),
            min_size=PG_MIN_SIZE,
            max_size=PG_MAX_SIZE,
            timeout=10,  # connect
            command_timeout=10,
            max_inactive_connection_lifetime=300,
        )
        clock = Clock()
        links: LinkStore[Target] = LinkStore(
            redis,
            pg,
            settings,
            functools.partial(Target.of, permanent_max_age_s=settings.permanent_max_age_s),
            clock=clock,
            subscriber=subscriber,
        )
        clicks = new_recorder(settings, redis)
        await clicks.start()
        settle_gc()
        resources = cls(settings, redis, pg, links, clicks, clock, subscriber)
        resources.every_second(links.fold)
        resources._tasks = [
            asyncio.ensure_future(resources._tick()),
            asyncio.ensure_future(links.listen()),
            asyncio.ensure_future(links.watcher().run()),
        ]
        return resources

    def every_second(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once a second on this worker's loop (metric folds)."""
        self._periodic.append(callback)

    async def _tick(self) -> None:
        ticks = 0
        while True:
            await asyncio.sleep(Clock.INTERVAL_S)
            self.clock.tick()
            ticks += 1
            if ticks * Clock.INTERVAL_S >= 1.0:
                ticks = 0
                self._run_periodic()

    def _run_periodic(self) -> None:
        for callback in self._periodic:
            try:
                callback()
            except Exception:
                log.exception("periodic callback failed")

    async def close(self) -> None:
        """Flush clicks, stop the background tasks, close the pools (lifespan shutdown)."""
        cached = len(self.links.cache)
        try:
            await self.clicks.close()
        finally:
            for task in self._tasks:
                await _stop(task)
            await self.links.close()
            self._run_periodic()
            try:
                await asyncio.wait_for(self.pg.close(), timeout=5)
            except TimeoutError:
                self.pg.terminate()
            await self._subscriber.aclose()
            await self.redis.aclose()
            log.info("edge worker stopped", extra={"pid": os.getpid(), "cached_links": cached})
