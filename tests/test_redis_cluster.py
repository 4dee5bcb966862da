"""The edge and the aggregator on a Redis Cluster: client choice, redirects, invalidation, counts.

The cluster here is one node owning every slot: it shows that each process detects cluster mode
and talks through ``RedisCluster`` (slot routing, per-slot MGET, cluster pipelines, scripts), not
cross-node MOVED handling, so the tests also check which client each process ended up with.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
import redis.asyncio as aioredis

from aggregator.main import Aggregator
from edge.linkstore import INVALIDATED_MARKER
from edge.resources import Resources
from linkedge import keys, redisclient
from linkedge.embedded import free_port
from linkedge.events import counter_items, parse_counter_field, split_entry
from linkedge.settings import Secret, Settings
from tests.conftest import Db, Edge, Process, Stores, wait_http

SHARDS = 4
REDIRECTS = 30
BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
}


@pytest.fixture
def node(cluster_url: str) -> Iterator[redis.Redis]:
    """A plain client on the cluster's only node (it owns every slot), flushed per test."""
    client = redis.Redis.from_url(cluster_url)
    client.flushall()
    yield client
    client.close()


def test_the_node_says_whether_it_is_a_cluster(cluster_url: str, stores: Stores) -> None:
    async def go() -> tuple[bool, bool, bool]:
        cluster = redisclient.cluster_client(cluster_url, "test")
        try:
            return (
                await redisclient.cluster_enabled(stores.redis_url, timeout=5),
                await redisclient.cluster_enabled(cluster_url, timeout=5),
                await cluster.ping(),
            )
        finally:
            await cluster.aclose()

    assert asyncio.run(go()) == (False, True, True)


def test_edge_resources_use_the_pooled_client_on_one_node_and_the_cluster_client_on_a_cluster(
    cluster_url: str, node: redis.Redis, settings: Settings
) -> None:
    async def go(url: str) -> tuple[type, type | None]:
        resources = await Resources.open(settings.replace(redis_url=Secret(url)))
        try:
            # the invalidation pipeline (SETs on many slots + PUBLISH) on this client
            await resources.links.invalidate_many(["clA", "clB", "clC"])
            pool = getattr(resources.redis, "connection_pool", None)
            return type(resources.redis), type(pool) if pool is not None else None
        finally:
            await resources.close()

    assert asyncio.run(go(settings.redis_url.get())) == (
        aioredis.Redis,
        aioredis.BlockingConnectionPool,
    )
    assert asyncio.run(go(cluster_url)) == (aioredis.RedisCluster, None)
    for code in ("clA", "clB", "clC"):
        assert node.get(keys.link(code)) == INVALIDATED_MARKER


def _locations(edge: Edge, code: str, count: int) -> set[str | None]:
    """Locations of ``count`` requests, each on a new connection (so every worker answers)."""
    seen = set()
    for _ in range(count):
        with edge.client() as client:
            seen.add(client.get(f"/{code}", headers=BROWSER).headers.get("location"))
    return seen


def _cluster_clicks(node: redis.Redis) -> tuple[int, int]:
    """(clicks in the shard counters, events in the shard streams) on the cluster."""
    counted = streamed = 0
    for shard in range(SHARDS):
        for field, value in counter_items(node.hgetall(keys.counts(shard)).items()):
            parse_counter_field(field)
            counted += int(value)
        entries: Any = node.xrange(keys.clicks_stream(shard))
        for _id, fields in entries:
            streamed += len(split_entry(fields[b"e"]))
    return counted, streamed


def _wait_for(check: Callable[[], Any], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_edge_and_aggregator_on_a_cluster(
    cluster_url: str,
    node: redis.Redis,
    start_edge: Callable[..., Edge],
    account: Callable[..., Any],
    linkedge_process: Callable[..., Process],
    db: Db,
) -> None:
    """Redirects, an edit seen by every worker, clicks in the cluster, then exact Postgres counts."""
    edge = start_edge(workers=2, REDIS_URL=cluster_url, CLICK_SHARDS=str(SHARDS), CACHE_TTL_S="600")
    who = account()
    with edge.client() as client:
        made = client.post(
            "/api/v1/links", json={"url": "https://example.com/before"}, headers=who.headers
        )
        assert made.status_code == 201, made.text
        code = made.json()["code"]
    served = 0

    def locations(count: int) -> set[str | None]:
        nonlocal served
        served += count
        return _locations(edge, code, count)

    assert locations(REDIRECTS) == {"https://example.com/before"}
    _wait_for(lambda: node.exists(keys.link(code)), "the write-back through the cluster client")

    with edge.client() as client:
        patched = client.patch(
            f"/api/v1/links/{code}", json={"url": "https://example.com/after"}, headers=who.headers
        )
        assert patched.status_code == 200, patched.text
    _wait_for(lambda: locations(10) == {"https://example.com/after"}, "the edit to every worker")
    assert locations(REDIRECTS) == {"https://example.com/after"}
    assert edge.process.stop() == 0  # graceful: every click is flushed to Redis
    assert "Redis Cluster detected" in edge.process.output()
    assert _cluster_clicks(node) == (served, served)
    link_id = db.fetchval("SELECT id FROM links WHERE code = $1", code)

    port = free_port()
    proc = linkedge_process(
        "aggregator",
        REDIS_URL=cluster_url,
        CLICK_SHARDS=str(SHARDS),
        AGGREGATE_INTERVAL_S="0.05",
        AGGREGATOR_METRICS_PORT=str(port),
        LOG_LEVEL="INFO",
    )
    wait_http(f"http://127.0.0.1:{port}/healthz", proc)
    _wait_for(
        lambda: (
            db.fetchval("SELECT clicks FROM link_click_totals WHERE link_id = $1", link_id)
            == served
        ),
        "the aggregator to move every click",
    )
    assert all(not node.exists(keys.counts(shard)) for shard in range(SHARDS))
    assert httpx.get(f"http://127.0.0.1:{port}/readyz").status_code == 200
    assert proc.stop() == 0
    assert "Redis Cluster detected" in proc.output()


def test_aggregator_moves_counters_through_the_cluster_client(
    cluster_url: str, node: redis.Redis, stores: Stores, db: Db
) -> None:
    link_id = 987_654_321_012
    day = time.strftime("%Y%m%d")
    for shard in range(SHARDS):
        node.hincrby(keys.counts(shard), f"{link_id}:{day}:h", shard + 1)
    settings = Settings(
        redis_url=Secret(cluster_url),
        database_url=Secret(stores.database_url),
        click_shards=SHARDS,
        aggregator_metrics_port=0,
    )

    async def one_pass() -> type | None:
        aggregator = Aggregator(settings)
        await aggregator.start()
        try:
            await aggregator.tick()
            return type(aggregator.cluster) if aggregator.cluster is not None else None
        finally:
            await aggregator.close()

    assert asyncio.run(one_pass()) is aioredis.RedisCluster
    total = sum(range(1, SHARDS + 1))
    assert db.fetchval("SELECT clicks FROM link_click_totals WHERE link_id = $1", link_id) == total
