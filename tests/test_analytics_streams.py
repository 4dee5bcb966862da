"""The consumer-group side of analytics (``analytics.consumer.StreamReader``) on Redis and on Redis
Cluster: each shard stream is its own hash slot there, so reads are per shard and the dead-letter
MULTI stays on one slot. The cluster is one real redis-server in cluster mode owning every slot.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis
from conftest import Process, wait_http
from test_analytics import Analytics, assert_exact, drained, link_ids, make_clicks, produce

from analytics.consumer import DeadEvent, StreamReader, dead_letter_stream
from linkedge import keys
from linkedge.embedded import EmbeddedRedis, free_port

SHARDS = 4  # as in test_analytics, whose helpers produce into that many shards


@pytest.fixture(scope="module")
def plain_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("streams-redis"), persist=False).start()
    yield server.url
    server.stop()


async def _scenario(client: aioredis.Redis) -> None:
    def reader(name: str, idle_ms: int = 60_000) -> StreamReader:
        return StreamReader(
            client,
            shards=SHARDS,
            consumer=name,
            block_ms=100,
            claim_idle_ms=idle_ms,
        )

    first = reader("first")
    await first.ensure_groups()
    await first.ensure_groups()  # an existing group is fine
    ids = {s: [await client.xadd(keys.clicks_stream(s), {b"e": b"%d" % i}) for i in range(10)]
           for s in range(SHARDS)}  # fmt: skip
    entries = await first.read(2 * SHARDS, block=False)  # two a shard
    assert sorted((e.shard, e.id) for e in entries) == sorted(
        (s, i) for s in ids for i in ids[s][:2]
    )
    entries += await first.read(100)
    assert sorted((e.shard, e.id) for e in entries) == sorted((s, i) for s in ids for i in ids[s])
    assert await first.read(100) == []  # nothing new: waited block_ms, returned empty

    # Settle all but the last two of each shard; shard 0's first entry is set aside as a dead
    # event (its entry acknowledged with it), shard 1's second entry has one.
    held = [e for e in entries if e.id in (ids[e.shard][-2], ids[e.shard][-1])]
    dead_entry = next(e for e in entries if e.shard == 0 and e.id == ids[0][0])
    partly = next(e for e in entries if e.shard == 1 and e.id == ids[1][1])
    dead = [
        DeadEvent(0, dead_entry.id, 0, dict(dead_entry.fields)),
        DeadEvent(1, partly.id, 3, {b"e": b"bad"}),
    ]
    done = [e for e in entries if e not in held and e is not dead_entry]
    await first.settle(done, dead)
    assert [(f[b"id"], f[b"i"]) for _, f in await client.xrange(dead_letter_stream(0))] == [
        (ids[0][0], b"0")
    ]
    assert [f for _, f in await client.xrange(dead_letter_stream(1))] == [
        {b"e": b"bad", b"id": ids[1][1], b"i": b"3"}
    ]
    lag = await first.lag()
    analytics = {s: lag[s].groups[keys.ANALYTICS_GROUP] for s in lag}
    assert {s: (lag[s].length, analytics[s].pending, analytics[s].undelivered) for s in lag} == {
        s: (10, 2, 0) for s in range(SHARDS)
    }
    assert all(analytics[s].oldest_pending_age_s >= 0 for s in lag)

    # Trimming removes only what the group acknowledged, never the held entries.
    assert await first.trim() == SHARDS * 8
    for s in range(SHARDS):
        assert [i for i, _ in await client.xrange(keys.clicks_stream(s))] == ids[s][-2:]

    # A second consumer takes over the held entries once they are idle long enough.
    assert await reader("second", idle_ms=60_000).claim(100) == []
    second = reader("second", idle_ms=0)
    some = await second.claim(SHARDS)  # a shard at a time: stops once it has enough
    assert len(some) == SHARDS and {e.shard for e in some} == {0, 1}
    claimed = await second.claim(100)  # idle 0: what it just claimed counts too
    assert sorted((e.shard, e.id) for e in claimed) == sorted((e.shard, e.id) for e in held)
    await second.settle(claimed, [])
    assert all(
        lag.groups[keys.ANALYTICS_GROUP].pending == 0 for lag in (await second.lag()).values()
    )
    assert await second.trim() == SHARDS  # all acknowledged: only the last delivered one stays
    for s in range(SHARDS):
        assert [i for i, _ in await client.xrange(keys.clicks_stream(s))] == ids[s][-1:]
    assert await second.forget_idle_consumers(0) == 2 * SHARDS - SHARDS  # "first" on every shard


@pytest.mark.parametrize("mode", ["redis", "cluster"])
def test_stream_reader(mode: str, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("plain_url" if mode == "redis" else "cluster_url")

    async def go() -> None:
        client: aioredis.Redis = (
            aioredis.RedisCluster.from_url(url)
            if mode == "cluster"
            else aioredis.Redis.from_url(url)  # type: ignore[assignment]
        )
        try:
            await client.flushall()
            await _scenario(client)
        finally:
            await client.aclose()

    asyncio.run(go())


def test_analytics_process_on_a_cluster(
    cluster_url: str, linkedge_process: Callable[..., Process], tmp_path: Path
) -> None:
    """``linkedge analytics`` finds the cluster by itself and consumes every shard exactly once."""
    plain = redis.Redis.from_url(cluster_url)  # one node owns every slot: plain commands work
    plain.flushall()
    clicks = make_clicks(link_ids(2), 120)
    produce(plain, clicks)
    port = free_port()
    proc = linkedge_process(
        "analytics",
        REDIS_URL=cluster_url,
        CLICKHOUSE_URL=f"chdb://{tmp_path / 'clickhouse'}",
        ANALYTICS_PORT=str(port),
        CLICK_SHARDS=str(SHARDS),
        ANALYTICS_BLOCK_MS="200",
        LOG_LEVEL="INFO",
    )
    analytics = Analytics(proc, port)
    wait_http(f"{analytics.url}/healthz", proc)
    check = drained(plain, analytics, clicks)
    deadline = time.monotonic() + 30
    while not check():
        assert time.monotonic() < deadline, proc.output()[-3000:]
        time.sleep(0.2)
    assert_exact(analytics, clicks)
    assert "Redis Cluster detected" in proc.output()
    plain.close()
