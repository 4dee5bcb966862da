"""``linkedge analytics``: click events from the Redis streams, enriched, into ClickHouse.

One pass (``Analytics.tick``), run by the shared worker loop (``linkedge.worker``):

1. take a batch: entries idle too long in a dead consumer's pending list (XAUTOCLAIM, checked every
   few seconds), else new entries (XREADGROUP, blocking up to ``ANALYTICS_BLOCK_MS``), a few at a
   time until they hold about ``ANALYTICS_BATCH_SIZE`` events (an entry holds one or more events,
   one per line, and is never split across batches);
2. decode and enrich each event; an undecodable one is counted, logged and set aside;
3. insert the batch into ClickHouse in one insert, with a deduplication token of its entry ids;
4. only then XACK (and copy the set-aside events to the dead-letter stream in the same MULTI).

If the insert fails the pass raises: the worker loop backs off and the next pass retries the SAME
batch (same rows, same token) without reading anything new, refreshing its idle time so no other
consumer claims it meanwhile. Nothing is acknowledged that is not in ClickHouse. A background task
trims the streams below what every group acknowledged and publishes the lag, outage or not.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis

from analytics import metrics
from analytics.consumer import DeadEvent, Entry, StreamReader
from analytics.enrich import Enricher, salt_secret
from analytics.server import AnalyticsServer
from analytics.writer import ClickHouseWriter, batch_token
from linkedge import events, redisclient
from linkedge.settings import Settings
from linkedge.worker import run_worker, wait_or_stop

log = logging.getLogger("linkedge.analytics")

MAINTENANCE_INTERVAL_S = 2.0
_POLL_INTERVAL_S = 0.01  # the read itself blocks up to ANALYTICS_BLOCK_MS when idle
# Most entries one XREADGROUP/XAUTOCLAIM takes. Fewer once entries are big: a call asks for what
# the batch still lacks divided by the largest entry seen lately, so a batch overshoots
# ANALYTICS_BATCH_SIZE by about one call's worth of entries at most.
ENTRIES_PER_CALL = 1000


@dataclasses.dataclass(slots=True)
class Batch:
    entries: list[Entry]  # every entry taken: acknowledged once ``rows`` are in ClickHouse
    rows: list[list[Any]]  # the decoded and enriched events
    dead: list[DeadEvent]  # undecodable events: go to the dead-letter stream
    token: str
    inserted: bool = False


class Analytics:
    name = "analytics"

    def __init__(self, settings: Settings, *, consumer: str | None = None) -> None:
        settings.require("redis_url", "clickhouse_url")
        self.settings = settings
        self._redis_options: dict[str, Any] = {
            "socket_timeout": max(5.0, settings.analytics_block_ms / 1000 + 5),
            "socket_connect_timeout": 5,
        }
        self.redis: aioredis.Redis = aioredis.Redis.from_url(
            settings.redis_url.get(), **self._redis_options
        )
        self._cluster: aioredis.RedisCluster | None = None
        self.reader = StreamReader(
            self.redis,
            shards=settings.click_shards,
            consumer=consumer or f"{socket.gethostname()}-{os.getpid()}",
            block_ms=settings.analytics_block_ms,
            claim_idle_ms=settings.analytics_claim_idle_ms,
        )
        self.writer = ClickHouseWriter(settings.clickhouse_url.get())
        self.enricher = Enricher(
            salt_secret(settings.visitor_salt_secret.get()), store_raw_ip=settings.store_raw_ip
        )
        self.server = AnalyticsServer(
            self.writer, self._redis_ready, token=settings.analytics_token.get()
        )
        self._groups_ready = False
        self._held: Batch | None = None
        self._next_claim = 0.0
        self._largest_entry = settings.analytics_batch_size  # events; until one is seen
        self._stop_maintenance = asyncio.Event()
        self._maintenance: asyncio.Task[None] | None = None
        self.totals = {
            "inserted": 0,
            "dead_letter": 0,
            "entries": 0,
            "batches": 0,
            "claimed": 0,
            "trimmed": 0,
        }

    async def start(self) -> None:
        await self.server.start(self.settings.metrics_host, self.settings.analytics_port)
        self._maintenance = asyncio.create_task(self._maintain())

    async def tick(self) -> bool:
        if self._held is None:
            if not self._groups_ready:
                await self._detect_cluster()
                await self.reader.ensure_groups()
                self._groups_ready = True
            entries = await self._take()
            if not entries:
                return False
            self._held = self._prepare(entries)
        else:
            await self.reader.hold(self._held.entries)
        batch = self._held
        await self._commit(batch)
        self._held = None
        return len(batch.rows) + len(batch.dead) >= self.settings.analytics_batch_size // 2

    async def _detect_cluster(self) -> None:
        """On a Redis Cluster node, read through a cluster client (each shard is its own slot)."""
        if self._cluster is not None:
            return
        if await redisclient.is_cluster(self.redis):
            self._cluster = redisclient.cluster_client(
                self.settings.redis_url.get(), "analytics", **self._redis_options
            )
            self.reader.redis = self._cluster
            self.reader.cluster = True  # each shard stream is read on its own slot

    async def _take(self) -> list[Entry]:
        try:
            return await self._claim_or_read()
        except aioredis.ResponseError:
            # NOGROUP: the stream or group vanished (Redis restarted empty); recreate them.
            self._groups_ready = False
            raise

    async def _claim_or_read(self) -> list[Entry]:
        now = time.monotonic()
        if now >= self._next_claim:
            self._next_claim = now + max(1.0, self.settings.analytics_claim_idle_ms / 2000)
            claimed = await self._fill(lambda count, first: self.reader.claim(count))
            if claimed:
                metrics.CLAIMED.inc(len(claimed))
                self.totals["claimed"] += len(claimed)
                log.info("claimed %d entries from idle consumers", len(claimed))
                return claimed
        return await self._fill(lambda count, first: self.reader.read(count, block=first))

    async def _fill(self, take: Callable[[int, bool], Awaitable[list[Entry]]]) -> list[Entry]:
        """Entries from ``take(count, first_call)`` until they hold about a batch of events."""
        entries: list[Entry] = []
        wanted = self.settings.analytics_batch_size
        largest = 0  # events in the largest entry of this batch
        while wanted > 0:
            count = max(1, min(ENTRIES_PER_CALL, wanted // (largest or self._largest_entry)))
            try:
                got = await take(count, not entries)
            except (aioredis.RedisError, OSError):
                if not entries:
                    raise
                break  # insert what we hold; the next pass meets the error again
            entries += got
            for entry in got:
                wanted -= entry.size
                largest = max(largest, entry.size)
            if len(got) < count:
                break  # nothing more waiting (or not yet): insert what we have
        self._largest_entry = largest or self._largest_entry
        return entries

    def _prepare(self, entries: list[Entry]) -> Batch:
        rows: list[list[Any]] = []
        dead: list[DeadEvent] = []
        for entry in entries:
            encoded = events.split_entry(entry.fields.get(events.STREAM_FIELD, b""))
            if not encoded:  # no event at all: one dead event, the entry's fields kept as they are
                dead.append(DeadEvent(entry.shard, entry.id, 0, dict(entry.fields)))
                self._log_dead(entry, 1, 0, "no click event in the entry")
            bad, first = 0, ""
            for index, event in enumerate(encoded):
                try:
                    rows.append(self.enricher.row(events.decode(event)))
                except (events.EventDecodeError, ValueError) as exc:
                    fields = {events.STREAM_FIELD: event}
                    dead.append(DeadEvent(entry.shard, entry.id, index, fields))
                    if not bad:
                        first = f"#{index}: {exc}"
                    bad += 1
            if bad:
                self._log_dead(entry, bad, len(encoded), first)
        return Batch(entries, rows, dead, batch_token([e.key for e in entries]))

    @staticmethod
    def _log_dead(entry: Entry, bad: int, of: int, first: str) -> None:
        """One line per entry, however many of its events were set aside."""
        log.warning(
            "%d undecodable click event(s) of entry %s set aside (first %s)",
            bad,
            entry.key,
            first,
            extra={"shard": entry.shard, "entry_id": entry.id.decode(), "events": of, "bad": bad},
        )

    async def _commit(self, batch: Batch) -> None:
        if batch.rows and not batch.inserted:
            started = time.perf_counter()
            try:
                await asyncio.to_thread(self.writer.insert, batch.rows, batch.token)
            except Exception:
                metrics.INSERT_FAILURES.inc()
                metrics.CLICKHOUSE_UP.set(0)
                raise
            metrics.INSERT_DURATION.observe(time.perf_counter() - started)
            metrics.CLICKHOUSE_UP.set(1)
        batch.inserted = True
        await self.reader.settle(batch.entries, batch.dead)
        metrics.EVENTS.labels(outcome="inserted").inc(len(batch.rows))
        metrics.EVENTS.labels(outcome="dead_letter").inc(len(batch.dead))
        metrics.ENTRIES.inc(len(batch.entries))
        metrics.BATCHES.inc()
        self.totals["inserted"] += len(batch.rows)
        self.totals["dead_letter"] += len(batch.dead)
        self.totals["entries"] += len(batch.entries)
        self.totals["batches"] += 1

    async def drain(self) -> None:
        """A batch still held (ClickHouse was failing) gets one more try; else it waits in Redis."""
        if self._held is not None:
            await self._commit(self._held)
            self._held = None

    async def _maintain(self) -> None:
        """Trim and publish the lag every few seconds, also while ClickHouse is down."""
        idle_consumer_ms = max(10 * self.settings.analytics_claim_idle_ms, 3_600_000)
        while not self._stop_maintenance.is_set():
            try:
                removed = await self.reader.trim()
                metrics.TRIMMED.inc(removed)
                self.totals["trimmed"] += removed
                for shard, lag in (await self.reader.lag()).items():
                    metrics.STREAM_LENGTH.labels(str(shard)).set(lag.length)
                    for name, group in lag.groups.items():
                        labels = (str(shard), name)
                        metrics.UNDELIVERED.labels(*labels).set(group.undelivered)
                        metrics.PENDING.labels(*labels).set(group.pending)
                        metrics.OLDEST_PENDING_AGE.labels(*labels).set(group.oldest_pending_age_s)
                await self.reader.forget_idle_consumers(idle_consumer_ms)
            except (aioredis.RedisError, OSError) as exc:
                log.debug("analytics maintenance skipped: %s", exc)
            await wait_or_stop(self._stop_maintenance, MAINTENANCE_INTERVAL_S)

    async def _redis_ready(self) -> bool:
        try:
            return bool(await asyncio.wait_for(self.redis.ping(), 2))
        except (aioredis.RedisError, OSError, TimeoutError):
            return False

    async def close(self) -> None:
        self._stop_maintenance.set()
        if self._maintenance is not None:
            await asyncio.gather(self._maintenance, return_exceptions=True)
        await self.server.close()
        for client in (self.redis, self._cluster):
            if client is not None:
                with contextlib.suppress(aioredis.RedisError, OSError):
                    await client.aclose()
        await asyncio.to_thread(self.writer.close)

    def summary(self) -> dict[str, Any]:
        return dict(self.totals)


async def serve(settings: Settings) -> int:
    return await run_worker(Analytics(settings), interval=_POLL_INTERVAL_S, max_backoff=10.0)


def run(settings: Settings, args: argparse.Namespace) -> int:
    return asyncio.run(serve(settings))
