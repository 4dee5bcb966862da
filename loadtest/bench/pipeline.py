"""The click pipeline's own costs, measured apart from the edge runs (and after them).

- Aggregator: 100k distinct counters HINCRBY'd into one shard in the edge's field format, then one
  ``Flusher.flush_shard`` (take, fold, one Postgres transaction, finish) timed; median of 3.
- Analytics: a ``linkedge analytics`` process on the bench's core, ready and idle; 100k events in
  the edge's format XADD'ed over the shards, ``ANALYTICS_EVENTS_PER_ENTRY`` to a stream entry as
  the edge's flush writes them; timed until every stream's consumer group has read and
  acknowledged everything (lag 0, pending 0).
"""

from __future__ import annotations

import asyncio
import datetime
import importlib.util
import statistics
import time
import uuid
from pathlib import Path

import asyncpg
import httpx
import redis.asyncio as aioredis

from linkedge import events, keys
from linkedge.embedded import free_port
from linkedge.settings import Settings
from loadtest.bench import stack
from loadtest.bench.report import Row

SHARDS = Settings().click_shards
FLUSH_REPEATS = 3
ANALYTICS_EVENTS = 100_000
ANALYTICS_EVENTS_PER_ENTRY = 500  # one XADD per edge flush; a flush holds up to 5000, ~1000 typical
DRAIN_TIMEOUT_S = 300.0


def _available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


def aggregator_row(redis_url: str, dsn: str, fields: int) -> Row:
    figure = f"aggregator flush, {fields // 1000}k distinct codes"
    if not _available("aggregator.flush"):
        return Row(figure, "n/a", note="aggregator/flush.py not available yet")
    seconds = asyncio.run(_time_flush(redis_url, dsn, fields))
    return Row(
        figure,
        f"{statistics.median(seconds) * 1000:,.0f} ms",
        note=f"one batch (Lua take, fold, one Postgres transaction, finish) of {fields // 1000} edge "
        f"flushes; median of {len(seconds)}: "
        + ", ".join(f"{s * 1000:,.0f}" for s in seconds)
        + " ms",
    )


async def _time_flush(redis_url: str, dsn: str, fields: int) -> list[float]:
    from aggregator.flush import Flusher

    client = aioredis.Redis.from_url(redis_url)
    pool = await asyncpg.create_pool(dsn, min_size=1, max_size=2)
    try:
        link_ids = [
            r["id"] for r in await pool.fetch("SELECT id FROM links ORDER BY id LIMIT $1", fields)
        ]
        day = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d")
        names = [events.counter_field(link_id, day, False) for link_id in link_ids]
        flusher = Flusher(client, pool)
        shard = 0
        durations = []
        for _ in range(FLUSH_REPEATS):
            # as edges write them: one counts-hash field per flush of 1,000 clicks
            async with client.pipeline(transaction=False) as pipe:
                for start in range(0, len(names), 1000):
                    counters = {name: 1 for name in names[start : start + 1000]}
                    pipe.hset(
                        keys.counts(shard), f"~{uuid.uuid4().hex}", events.join_counters(counters)
                    )
                await pipe.execute()
            started = time.perf_counter()
            outcome = await flusher.flush_shard(shard)
            durations.append(time.perf_counter() - started)
            if outcome is None or outcome.fields != len(names) or outcome.clicks != len(names):
                raise RuntimeError(
                    f"aggregator batch moved {outcome}, expected {len(names)} fields"
                )
        return durations
    finally:
        await pool.close()
        await client.aclose()


def analytics_row(redis_url: str, tmp: Path, env: dict[str, str]) -> Row:
    figure = "analytics ingest into embedded ClickHouse"
    if not _available("analytics.main"):
        return Row(figure, "n/a", note="analytics/main.py not available yet")
    migrate = stack.start_command("migrate", tmp, env, "migrate")
    try:
        if migrate.proc.wait(120) != 0:
            return Row(figure, "failed", note=f"linkedge migrate: {migrate.tail(3)}")
    finally:
        migrate.stop()
    port = free_port()
    proc = stack.start_command("analytics", tmp, dict(env, ANALYTICS_PORT=str(port)), "analytics")
    try:
        _wait_ready(f"http://127.0.0.1:{port}/readyz", proc)
        seconds = asyncio.run(_time_ingest(redis_url, ANALYTICS_EVENTS))
    except RuntimeError as exc:
        return Row(figure, "failed", note=str(exc).splitlines()[0][:120])
    finally:
        proc.stop()
    return Row(
        figure,
        f"{ANALYTICS_EVENTS / seconds:,.0f} events/s",
        note=f"{ANALYTICS_EVENTS // 1000}k events in entries of {ANALYTICS_EVENTS_PER_ENTRY} over {SHARDS} streams, "
        f"drained (read and acked) in {seconds:.1f}s",
    )


def _wait_ready(url: str, proc: stack.Proc, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"analytics exited: {proc.tail(5)}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"analytics not ready within {timeout:.0f}s")


def sample_click(ids: events.ClickIds, n: int, ts_ms: int) -> events.Click:
    """A click as the edge records it: a browser, a referer, one of 1000 links."""
    link_id = 1 + n % 1000
    return events.Click(
        id=ids.new(ts_ms),
        ts_ms=ts_ms,
        link_id=link_id,
        account_id=1,
        code=f"bn{link_id - 1:06d}",
        target=f"https://example.com/landing/{link_id - 1}",
        ip=f"127.0.{n % 250}.{1 + n % 200}",
        user_agent="Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
        referer="https://news.example.org/",
        accept_language="en-US,en;q=0.9",
        host="127.0.0.1",
        utm={"utm_source": "bench"} if n % 3 == 0 else {},
    )


async def _time_ingest(redis_url: str, count: int) -> float:
    client = aioredis.Redis.from_url(redis_url)
    try:
        ids = events.ClickIds()
        now = int(time.time() * 1000)
        started = time.perf_counter()
        per_entry = ANALYTICS_EVENTS_PER_ENTRY
        per_pipeline = 10 * per_entry
        for start in range(0, count, per_pipeline):
            async with client.pipeline(transaction=False) as pipe:
                for first in range(start, min(count, start + per_pipeline), per_entry):
                    encoded = [
                        events.encode(sample_click(ids, n, now))
                        for n in range(first, min(count, first + per_entry))
                    ]
                    shard = (first // per_entry) % SHARDS
                    pipe.xadd(
                        keys.clicks_stream(shard), {events.STREAM_FIELD: events.join_entry(encoded)}
                    )
                await pipe.execute()
        deadline = time.monotonic() + DRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            if await _drained(client):
                return time.perf_counter() - started
            await asyncio.sleep(0.2)
        raise RuntimeError(f"analytics did not drain {count} events within {DRAIN_TIMEOUT_S:.0f}s")
    finally:
        await client.aclose()


async def _drained(client: aioredis.Redis) -> bool:
    for shard in range(SHARDS):
        groups = await client.xinfo_groups(keys.clicks_stream(shard))
        group = next(
            (
                g
                for g in groups
                if g["name"] in (keys.ANALYTICS_GROUP, keys.ANALYTICS_GROUP.encode())
            ),
            None,
        )
        if group is None or group.get("lag") not in (0, None) or group["pending"] != 0:
            return False
        if group.get("lag") is None:  # Redis < 7: compare the last delivered id with the stream's
            info = await client.xinfo_stream(keys.clicks_stream(shard))
            if group["last-delivered-id"] != info["last-generated-id"]:
                return False
    return True
