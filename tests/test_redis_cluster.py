"""linkedge on a Redis Cluster: client choice, redirects, invalidation, counts, reconcile.

Most tests here use a one-node cluster owning every slot (``cluster_url``): they show that each
process detects cluster mode and talks through ``RedisCluster`` (slot routing, per-slot MGET,
cluster pipelines, scripts), and check which client each process ended up with. The pipeline test
runs on three primaries sharing the slots (``tests/cluster_harness.py``), the click shards spread
over all three, so a command sent to the wrong node would get ``MOVED``: the edge, the aggregator
and analytics each start from a different node, and ``linkedge reconcile`` reads the in-flight
counters of every shard.
"""

from __future__ import annotations

import asyncio
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis
import redis.asyncio as aioredis

from aggregator.main import Aggregator
from edge.linkstore import INVALIDATED_MARKER
from edge.resources import Resources
from linkedge import apikeys, keys, redisclient
from linkedge.embedded import EmbeddedPostgres, free_port
from linkedge.events import counter_items, parse_counter_field, split_entry
from linkedge.migrate import migrate_postgres
from linkedge.settings import Secret, Settings
from tests.cluster_harness import LocalCluster
from tests.conftest import ROOT, Db, Edge, Process, Stores, run, wait_http

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


# ---- three primaries -------------------------------------------------------------------------
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """A Redis Cluster of three primaries, the slots split evenly between them."""
    cluster = LocalCluster(tmp_path_factory.mktemp("redis-three-nodes"), size=3).start()
    yield cluster
    cluster.stop()


@pytest.fixture(scope="module")
def pipeline_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """A Postgres of the pipeline test's own: reconcile compares every link-day it holds, and the
    session's Postgres holds other tests' counts, which this test's ClickHouse never saw."""
    server = EmbeddedPostgres(tmp_path_factory.mktemp("cluster-pg")).start()
    run(migrate_postgres(server.url))
    yield server
    server.stop()


def _reconcile(stores: Stores, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "linkedge.cli", "reconcile", "--days", "2"],
        env=stores.env(**env),
        cwd=ROOT,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_pipeline_and_reconcile_on_a_three_node_cluster(
    three_nodes: LocalCluster,
    pipeline_pg: EmbeddedPostgres,
    stores: Stores,
    start_edge: Callable[..., Edge],
    linkedge_process: Callable[..., Process],
    tmp_path: Path,
) -> None:
    """Redirects through an edge, the aggregator and analytics on three primaries: Postgres and
    ClickHouse count exactly what was served and reconcile says in sync; with the aggregator
    stopped, the counters waiting on the three nodes are read as in flight."""
    nodes = three_nodes.nodes
    owners = {three_nodes.node_of(keys.counts(shard)).port for shard in range(SHARDS)}
    assert owners == {node.port for node in nodes}  # every node holds click shards
    db = Db(pipeline_pg.url)
    token = secrets.token_urlsafe(32)
    common = {
        "DATABASE_URL": pipeline_pg.url,
        "CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
        "CLICK_SHARDS": str(SHARDS),
        "ANALYTICS_TOKEN": token,
        "LOG_LEVEL": "INFO",
    }
    analytics_port, aggregator_port = free_port(), free_port()
    analytics_url = f"http://127.0.0.1:{analytics_port}"
    analytics = linkedge_process(
        "analytics",
        REDIS_URL=nodes[2].url,
        ANALYTICS_PORT=str(analytics_port),
        ANALYTICS_BLOCK_MS="200",
        **common,
    )
    wait_http(f"{analytics_url}/healthz", analytics, timeout=60)

    def start_aggregator() -> Process:
        proc = linkedge_process(
            "aggregator",
            REDIS_URL=nodes[1].url,
            AGGREGATOR_METRICS_PORT=str(aggregator_port),
            AGGREGATE_INTERVAL_S="0.1",
            **common,
        )
        wait_http(f"http://127.0.0.1:{aggregator_port}/healthz", proc)
        return proc

    aggregator = start_aggregator()
    edge = start_edge(workers=2, REDIS_URL=nodes[0].url, **common)

    async def new_key() -> str:
        conn = await asyncpg.connect(pipeline_pg.url, timeout=10)
        try:
            return (await apikeys.create_key(conn, f"cluster-{tmp_path.name}"))[1]
        finally:
            await conn.close()

    headers = {"Authorization": f"Bearer {run(new_key())}"}
    served: dict[str, list[int]] = {}  # code -> [clicks, human clicks]

    def redirect(client: httpx.Client, code: str, i: int) -> None:
        if i % 5 == 0:
            answer = client.head(f"/{code}", headers=BROWSER)
        elif i % 7 == 0:
            answer = client.get(f"/{code}", headers={"User-Agent": GOOGLEBOT})
        else:
            answer = client.get(f"/{code}", headers=BROWSER)
            served[code][1] += 1
        assert answer.status_code == 302, answer.text
        served[code][0] += 1

    with edge.client() as client:
        for i in range(3):
            made = client.post(
                "/api/v1/links", json={"url": f"https://example.com/{i}"}, headers=headers
            )
            assert made.status_code == 201, made.text
            served[made.json()["code"]] = [0, 0]
        codes = list(served)
        for i in range(240):
            redirect(client, codes[i % 3], i)
    ids = {row["code"]: row["id"] for row in db.fetch("SELECT id, code FROM links")}

    def postgres() -> dict[str, list[int]]:
        rows = db.fetch(
            "SELECT link_id, sum(clicks) AS c, sum(human_clicks) AS h"
            " FROM link_daily_clicks GROUP BY link_id"
        )
        found = {row["link_id"]: [row["c"], row["h"]] for row in rows}
        return {code: found.get(link_id, [0, 0]) for code, link_id in ids.items()}

    def clickhouse() -> dict[str, list[int]]:
        counts = {}
        for code, link_id in ids.items():
            answer = httpx.get(
                f"{analytics_url}/internal/link-counts",
                params={"link_id": link_id},
                headers={"Authorization": f"Bearer {token}"},
                timeout=30,
            )
            found = answer.json() if answer.status_code == 200 else {}
            counts[code] = [found.get("distinct_clicks", 0), found.get("human_clicks", 0)]
        return counts

    _wait_for(lambda: postgres() == served, f"Postgres counts {served}", timeout=60)
    _wait_for(lambda: clickhouse() == served, f"ClickHouse counts {served}", timeout=60)
    reconcile_env = {**common, "REDIS_URL": nodes[0].url, "ANALYTICS_URL": analytics_url}
    result = _reconcile(stores, **reconcile_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "in sync" in result.stdout
    assert "Redis Cluster detected" in result.stderr

    # The aggregator stopped: the next clicks reach ClickHouse, their counters wait in the shards'
    # counts hashes on the three nodes, and reconcile reads them there as in flight.
    assert aggregator.stop() == 0
    with edge.client() as client:
        for i in range(60):
            redirect(client, codes[i % 3], i)
    _wait_for(lambda: clickhouse() == served, f"ClickHouse counts {served}", timeout=60)
    result = _reconcile(stores, **reconcile_env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "differ only by clicks still in flight" in result.stdout

    # A new aggregator moves them: both stores count exactly what was served again.
    start_aggregator()
    _wait_for(lambda: postgres() == served, f"Postgres counts {served}", timeout=60)
    result = _reconcile(stores, **reconcile_env)
    assert result.returncode == 0 and "in sync" in result.stdout, result.stdout + result.stderr
    assert edge.process.stop() == 0
    for proc in (edge.process, analytics, aggregator):
        assert "Redis Cluster detected" in proc.output()
