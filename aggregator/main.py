"""``linkedge aggregator``: every ``AGGREGATE_INTERVAL_S``, move each shard's counters to Postgres.

Runs the shared worker loop (``linkedge.worker``) over an ``Aggregator``: one pass flushes every
shard (``aggregator.flush``); the probe server answers ``/metrics``, ``/healthz`` and ``/readyz``.
Any number of aggregators may run at once: batches are idempotent, so they never double count.

On a Redis Cluster (the URL's node says so at the first pass) counters are moved through a
``RedisCluster`` client: each shard's keys share one hash tag, so each script call stays on one
slot, and the shard SCAN covers every primary. Probes still ping the URL's node.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import re
import time
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from aggregator import metrics
from aggregator.flush import Flusher
from aggregator.server import ProbeServer
from linkedge import keys, redisclient
from linkedge.settings import Settings
from linkedge.worker import run_worker

log = logging.getLogger("linkedge.aggregator")

PROBE_TIMEOUT_S = 2.0
REDIS_OPTIONS: dict[str, Any] = {"socket_connect_timeout": 2, "socket_timeout": 30}
_SHARD_KEY = re.compile(rb"^" + re.escape(keys.PREFIX.encode()) + rb":\{c(\d+)\}:counts")


class Aggregator:
    """The ``linkedge.worker.Worker`` that moves counters; also usable step by step in tests."""

    name = "aggregator"

    def __init__(self, settings: Settings) -> None:
        settings.require("redis_url", "database_url")
        self.settings = settings
        # The URL's node; also the client for every command unless it turns out to be a cluster.
        self.redis = aioredis.Redis.from_url(settings.redis_url.get(), **REDIS_OPTIONS)
        self.cluster: aioredis.RedisCluster | None = None
        self._detected = False  # asked at the first pass: Redis may be down at start
        self.pool: asyncpg.Pool | None = None
        self.flusher: Flusher | None = None
        self.shards: list[int] | None = None  # found at the first pass
        self.server = ProbeServer(
            settings.metrics_host, settings.aggregator_metrics_port, self.readiness
        )
        self.totals = {
            "passes": 0,
            "batches_applied": 0,
            "batches_replayed": 0,
            "clicks_moved": 0,
            "fields_set_aside": 0,
        }
        self._last_full_pass = time.monotonic()
        metrics.LAG.set_function(lambda: time.monotonic() - self._last_full_pass)

    async def start(self) -> None:
        # min_size=0: no connection is made here, so the aggregator starts while Postgres is down.
        self.pool = await asyncpg.create_pool(
            self.settings.database_url.get(), min_size=0, max_size=3, timeout=5, command_timeout=60
        )
        self.flusher = Flusher(self.redis, self.pool)
        port = await self.server.start()
        log.info("listening", extra={"host": self.settings.metrics_host, "port": port})

    async def tick(self) -> bool:
        """Flush every shard; raise the first failure after trying them all."""
        assert self.flusher is not None, "start() first"
        if not self._detected:
            await self._detect_cluster()
        if self.shards is None:
            self.shards = await self._find_shards()
        failure: Exception | None = None
        for shard in self.shards:
            try:
                outcome = await self.flusher.flush_shard(shard)
            except Exception as exc:  # noqa: BLE001 -- the snapshot stays; the next pass resumes it
                failure = failure or exc
                continue
            if outcome is not None:
                self.totals["batches_applied" if outcome.applied else "batches_replayed"] += 1
                self.totals["clicks_moved"] += outcome.clicks if outcome.applied else 0
                self.totals["fields_set_aside"] += outcome.set_aside
        self.totals["passes"] += 1
        if failure is not None:
            raise failure
        self._last_full_pass = time.monotonic()
        return False

    async def _detect_cluster(self) -> None:
        """On a Redis Cluster node, move counters through a cluster client from now on."""
        assert self.pool is not None
        if await redisclient.is_cluster(self.redis):
            self.cluster = redisclient.cluster_client(
                self.settings.redis_url.get(), self.name, **REDIS_OPTIONS
            )
            self.flusher = Flusher(self.cluster, self.pool)
        self._detected = True

    async def _find_shards(self) -> list[int]:
        """``range(CLICK_SHARDS)``, plus any shard beyond it still holding counters (CLICK_SHARDS
        was lowered): those are drained too rather than stranded. One SCAN, at the first pass."""
        configured = self.settings.click_shards
        found: set[int] = set()
        client: redisclient.AnyRedis = self.cluster or self.redis  # a cluster SCANs every primary
        async for key in client.scan_iter(match=f"{keys.PREFIX}:{{c*}}:counts*", count=1000):
            matched = _SHARD_KEY.match(key)
            if matched and int(matched[1]) >= configured:
                found.add(int(matched[1]))
        if found:
            log.warning(
                "counters found in %d shard(s) beyond CLICK_SHARDS=%d; draining them too. "
                "Give the edge and the aggregator the same CLICK_SHARDS.",
                len(found),
                configured,
                extra={"shards": sorted(found)},
            )
        return [*range(configured), *sorted(found)]

    async def drain(self) -> None:
        """The last flush: counters that came in since the last pass."""
        await self.tick()

    async def close(self) -> None:
        await self.server.close()
        if self.pool is not None:
            try:
                await asyncio.wait_for(self.pool.close(), PROBE_TIMEOUT_S)
            except TimeoutError:
                self.pool.terminate()
        if self.cluster is not None:
            await self.cluster.aclose()
        await self.redis.aclose()

    def summary(self) -> dict[str, Any]:
        return dict(self.totals)

    async def readiness(self) -> str | None:
        """None when Redis and Postgres both answer; else which one does not, and why."""
        try:
            await asyncio.wait_for(self.redis.ping(), PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 -- any failure means "not ready", said why
            return f"redis unavailable: {type(exc).__name__}: {exc}"
        try:
            assert self.pool is not None
            await asyncio.wait_for(self.pool.fetchval("SELECT 1"), PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 -- any failure means "not ready", said why
            return f"postgres unavailable: {type(exc).__name__}: {exc}"
        return None


def run(settings: Settings, args: argparse.Namespace) -> int:
    """Entry point of ``linkedge aggregator``."""
    aggregator = Aggregator(settings)
    return asyncio.run(run_worker(aggregator, interval=settings.aggregate_interval_s))
