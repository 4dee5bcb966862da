"""The aggregator: Redis counters -> Postgres, exactly once, through crashes, races and outages.

Input is written the way edges write it: one field per flush on ``keys.counts(shard)``, its value
``events.join_counters`` of ``events.counter_field`` counters, and (as edges before that did)
HINCRBY of single counter fields. The module runs its own Redis (the shard keys are global, and the
session's Redis is shared with other tests); link ids are random per test, so the shared Postgres
needs no cleanup.
"""

from __future__ import annotations

import asyncio
import datetime
import random
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import redis
from conftest import Db, Process, Stores, run, wait_http
from prometheus_client import REGISTRY

from aggregator.flush import fold
from aggregator.main import Aggregator
from linkedge import keys
from linkedge.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from linkedge.events import counter_field, join_counters
from linkedge.migrate import migrate_postgres
from linkedge.settings import Secret, Settings

SHARDS = 4
TODAY = datetime.date.today()
YESTERDAY = TODAY - datetime.timedelta(days=1)

Key = tuple[int, datetime.date, bool]  # link id, day, bot


def make_settings(redis_url: str, database_url: str, **changes: Any) -> Settings:
    return Settings(
        redis_url=Secret(redis_url),
        database_url=Secret(database_url),
        click_shards=SHARDS,
        aggregator_metrics_port=0,
        aggregate_interval_s=0.05,
    ).replace(**changes)


@pytest.fixture
def agg_settings(own_redis: EmbeddedRedis, stores: Stores) -> Settings:
    return make_settings(own_redis.url, stores.database_url)


def link_ids(n: int) -> list[int]:
    return [random.randrange(10**12, 2**62) for _ in range(n)]


def produce(client: redis.Redis, counts: Counter[Key]) -> None:
    """Write ``counts`` into random shards in as many increments as edges would make: most as
    flush fields (several counters each), some as HINCRBY of one field (older edges)."""
    pipe = client.pipeline(transaction=False)
    flushes: dict[int, dict[str, int]] = {}
    for (link_id, day, bot), n in counts.items():
        while n > 0:
            step = random.randint(1, n)
            field = counter_field(link_id, day.strftime("%Y%m%d"), bot)
            shard = random.randrange(SHARDS)
            if random.random() < 0.2:
                pipe.hincrby(keys.counts(shard), field, step)
            else:
                flush = flushes.setdefault(shard, {})
                if field in flush:  # one flush names a counter once: this goes to the next one
                    pipe.hset(keys.counts(shard), f"~{uuid.uuid4().hex}", join_counters(flush))
                    flush = flushes[shard] = {}
                flush[field] = step
            n -= step
    for shard, flush in flushes.items():
        pipe.hset(keys.counts(shard), f"~{uuid.uuid4().hex}", join_counters(flush))
    pipe.execute()


def random_counts(links: list[int], clicks: int) -> Counter[Key]:
    counts: Counter[Key] = Counter()
    for _ in range(clicks):
        counts[
            (random.choice(links), random.choice((TODAY, YESTERDAY)), random.random() < 0.3)
        ] += 1
    return counts


def expected_rows(
    counts: Counter[Key],
) -> tuple[dict[tuple[int, datetime.date], tuple[int, int]], dict[int, tuple[int, int]]]:
    daily: Counter[tuple[int, datetime.date, str]] = Counter()
    totals: Counter[tuple[int, str]] = Counter()
    for (link_id, day, bot), n in counts.items():
        for kind in ("all",) if bot else ("all", "human"):
            daily[(link_id, day, kind)] += n
            totals[(link_id, kind)] += n
    days = {(link, day) for link, day, _ in daily}
    links = {link for link, _ in totals}
    return (
        {(lk, day): (daily[(lk, day, "all")], daily[(lk, day, "human")]) for lk, day in days},
        {link: (totals[(link, "all")], totals[(link, "human")]) for link in links},
    )


def stored_rows(
    db: Db, links: list[int]
) -> tuple[dict[tuple[int, datetime.date], tuple[int, int]], dict[int, tuple[int, int]]]:
    daily = db.fetch(
        "SELECT link_id, day, clicks, human_clicks FROM link_daily_clicks WHERE link_id = ANY($1)",
        links,
    )
    totals = db.fetch(
        "SELECT link_id, clicks, human_clicks FROM link_click_totals WHERE link_id = ANY($1)", links
    )
    return (
        {(r["link_id"], r["day"]): (r["clicks"], r["human_clicks"]) for r in daily},
        {r["link_id"]: (r["clicks"], r["human_clicks"]) for r in totals},
    )


def pending(client: redis.Redis) -> list[str]:
    """Counter keys still in Redis (live counters, snapshots, batch ids)."""
    found = []
    for shard in range(SHARDS):
        for key in (keys.counts(shard), keys.counts_snapshot(shard), keys.counts_batch(shard)):
            if client.exists(key):
                found.append(key)
    return found


async def one_pass(settings: Settings) -> dict[str, Any]:
    aggregator = Aggregator(settings)
    await aggregator.start()
    try:
        await aggregator.tick()
    finally:
        await aggregator.close()
    return aggregator.summary()


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_pass_moves_exact_totals(rds: redis.Redis, agg_settings: Settings, db: Db) -> None:
    links = link_ids(30)
    counts = random_counts(links, 3000)
    produce(rds, counts)
    moved_before = metric("linkedge_aggregator_clicks_moved_total", kind="all")

    summary = run(one_pass(agg_settings))

    assert stored_rows(db, links) == expected_rows(counts)
    assert pending(rds) == []
    assert summary["clicks_moved"] == 3000
    assert metric("linkedge_aggregator_clicks_moved_total", kind="all") - moved_before == 3000
    assert (
        db.fetchval(
            "SELECT count(*) FROM link_daily_clicks"
            " WHERE link_id = ANY($1) AND day NOT IN ($2, $3)",
            links,
            TODAY,
            YESTERDAY,
        )
        == 0
    )


def test_crash_after_commit_replays_as_noop(
    rds: redis.Redis, agg_settings: Settings, db: Db
) -> None:
    links = link_ids(5)
    first, later = random_counts(links, 500), random_counts(links, 200)
    produce(rds, first)

    async def crash_after_commit() -> str:
        aggregator = Aggregator(agg_settings)
        await aggregator.start()
        try:
            assert aggregator.flusher is not None
            batch = await aggregator.flusher.take(0)
            assert batch is not None
            assert await aggregator.flusher.apply(batch, fold(batch.pairs)) is True
            return batch.batch_id  # "crash": the snapshot and batch id stay in Redis
        finally:
            await aggregator.close()

    batch_id = run(crash_after_commit())
    assert rds.get(keys.counts_batch(0)) == batch_id.encode()
    produce(rds, later)  # the edge keeps counting into the live hash meanwhile
    replayed_before = metric("linkedge_aggregator_batches_total", result="replayed")

    summary = run(one_pass(agg_settings))

    assert summary["batches_replayed"] == 1
    assert metric("linkedge_aggregator_batches_total", result="replayed") - replayed_before == 1
    run(one_pass(agg_settings))  # shard 0's live counters, renamed after the replay finished
    assert stored_rows(db, links) == expected_rows(first + later)
    assert pending(rds) == []
    assert db.fetchval("SELECT count(*) FROM aggregator_batches WHERE batch_id = $1", batch_id) == 1


def test_two_aggregators_racing_on_one_batch_count_once(
    rds: redis.Redis, agg_settings: Settings, db: Db
) -> None:
    links = link_ids(5)
    counts = random_counts(links, 400)
    produce(rds, counts)

    async def race() -> tuple[list[bool], list[bool]]:
        a, b = Aggregator(agg_settings), Aggregator(agg_settings)
        await a.start()
        await b.start()
        try:
            assert a.flusher is not None and b.flusher is not None
            applied: list[bool] = []
            finished: list[bool] = []
            for shard in range(SHARDS):
                batch_a = await a.flusher.take(shard)
                batch_b = await b.flusher.take(shard)  # sees a's unfinished batch, same id
                if batch_a is None:
                    assert batch_b is None
                    continue
                assert batch_b is not None and batch_b.batch_id == batch_a.batch_id
                counts_a, counts_b = fold(batch_a.pairs), fold(batch_b.pairs)
                applied += await asyncio.gather(
                    a.flusher.apply(batch_a, counts_a), b.flusher.apply(batch_b, counts_b)
                )
                finished += await asyncio.gather(
                    a.flusher.finish(batch_a, []), b.flusher.finish(batch_b, [])
                )
            return applied, finished
        finally:
            await a.close()
            await b.close()

    applied, finished = run(race())

    assert applied.count(True) == applied.count(False) > 0
    assert finished.count(True) == finished.count(False) > 0
    assert stored_rows(db, links) == expected_rows(counts)
    assert pending(rds) == []


def test_concurrent_passes_under_load_count_once(
    rds: redis.Redis, agg_settings: Settings, db: Db
) -> None:
    links = link_ids(20)
    chunks = [random_counts(links, 300) for _ in range(20)]

    async def go() -> None:
        aggs = [Aggregator(agg_settings) for _ in range(3)]
        for agg in aggs:
            await agg.start()
        try:

            async def keep_passing(agg: Aggregator, done: asyncio.Event) -> None:
                while not done.is_set():
                    await agg.tick()

            done = asyncio.Event()
            passes = [asyncio.create_task(keep_passing(agg, done)) for agg in aggs]
            for chunk in chunks:
                await asyncio.to_thread(produce, rds, chunk)
                await asyncio.sleep(0.01)
            done.set()
            await asyncio.gather(*passes)
            await aggs[0].tick()
        finally:
            for agg in aggs:
                await agg.close()

    run(go())
    assert stored_rows(db, links) == expected_rows(sum(chunks, Counter()))
    assert pending(rds) == []


def test_malformed_fields_are_set_aside(rds: redis.Redis, agg_settings: Settings, db: Db) -> None:
    links = link_ids(2)
    good = random_counts(links, 50)
    stranger = link_ids(1)[0]  # never in ``good``: its field below must not overwrite a good one
    produce(rds, good)
    bad = {
        b"garbage": b"3",
        b"1:2026:h": b"1",
        b"x:20260101:h": b"2",
        f"{links[0]}:20261399:b".encode(): b"4",
        f"{links[0]}:{TODAY:%Y%m%d}:q".encode(): b"5",
        f"{2**64}:{TODAY:%Y%m%d}:h".encode(): b"6",
        f"{stranger}:{TODAY:%Y%m%d}:b".encode(): str(10**15).encode(),  # implausibly many
    }
    for field, value in bad.items():
        rds.hincrby(keys.counts(1), field, int(value))
    not_a_number = f"{stranger}:{TODAY:%Y%m%d}:h".encode()
    rds.hset(keys.counts(2), not_a_number, b"many")
    # A flush field with bad lines among good ones: the good ones count, each bad one is set aside.
    good_line = counter_field(links[1], f"{TODAY:%Y%m%d}", False)
    good[(links[1], TODAY, False)] += 7
    rds.hset(keys.counts(3), "~f1", f"{good_line} 7\nno-count-here\n1:2026:h 3\n".encode())
    aside_before = metric("linkedge_aggregator_fields_set_aside_total")

    summary = run(one_pass(agg_settings))

    assert stored_rows(db, links) == expected_rows(good)
    assert stored_rows(db, [stranger]) == ({}, {})
    assert pending(rds) == []
    assert rds.hgetall(keys.counts_bad(1)) == bad
    assert rds.hgetall(keys.counts_bad(2)) == {not_a_number: b"many"}
    assert rds.hgetall(keys.counts_bad(3)) == {b"no-count-here": b"", b"1:2026:h": b"3"}
    assert summary["fields_set_aside"] == len(bad) + 3
    assert metric("linkedge_aggregator_fields_set_aside_total") - aside_before == len(bad) + 3

    rds.hincrby(keys.counts(1), b"garbage", 2)  # the same bad field again: added up, not replaced
    run(one_pass(agg_settings))
    assert rds.hget(keys.counts_bad(1), b"garbage") == b"5"


def test_shards_beyond_click_shards_are_drained_not_stranded(
    rds: redis.Redis, agg_settings: Settings, db: Db
) -> None:
    links = link_ids(3)
    counts = random_counts(links, 100)
    for (link_id, day, bot), n in counts.items():  # written by an edge with more shards
        rds.hincrby(keys.counts(SHARDS + 3), counter_field(link_id, f"{day:%Y%m%d}", bot), n)

    run(one_pass(agg_settings))

    assert stored_rows(db, links) == expected_rows(counts)
    assert rds.keys(f"{keys.PREFIX}:*") == []


def test_probe_endpoints(rds: redis.Redis, agg_settings: Settings) -> None:
    async def go() -> dict[str, httpx.Response]:
        aggregator = Aggregator(agg_settings)
        await aggregator.start()
        try:
            await aggregator.tick()
            base = f"http://127.0.0.1:{aggregator.server.port}"
            async with httpx.AsyncClient(base_url=base, timeout=5) as client:
                return {
                    "metrics": await client.get("/metrics"),
                    "healthz": await client.get("/healthz"),
                    "readyz": await client.get("/readyz"),
                    "missing": await client.get("/nope"),
                    "post": await client.post("/readyz"),
                }
        finally:
            await aggregator.close()

    answers = run(go())
    assert answers["healthz"].status_code == 200
    assert answers["readyz"].json() == {"status": "ready"}
    text = answers["metrics"].text
    for name in (
        "linkedge_aggregator_batches_total",
        "linkedge_aggregator_clicks_moved_total",
        "linkedge_aggregator_fields_set_aside_total",
        "linkedge_aggregator_flush_duration_seconds",
        "linkedge_aggregator_lag_seconds",
        "linkedge_aggregator_errors_total",
        "linkedge_aggregator_build_info",
    ):
        assert name in text
    assert answers["missing"].status_code == 404
    assert answers["missing"].headers["content-type"] == "application/problem+json"
    assert answers["post"].status_code == 405


class Producer(threading.Thread):
    """HINCRBYs like the edge, in small pipelines, until stopped; remembers all it wrote."""

    def __init__(self, url: str, links: list[int]) -> None:
        super().__init__(daemon=True)
        self.client = redis.Redis.from_url(url)
        self.links = links
        self.produced: Counter[Key] = Counter()
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            chunk = random_counts(self.links, 50)
            produce(self.client, chunk)
            self.produced += chunk
            time.sleep(0.005)

    def stop(self) -> Counter[Key]:
        self.halt.set()
        self.join()
        self.client.close()
        return self.produced


def aggregator_env(settings: Settings, port: int, **extra: str) -> dict[str, str]:
    return dict(
        REDIS_URL=settings.redis_url.get(),
        DATABASE_URL=settings.database_url.get(),
        CLICK_SHARDS=str(SHARDS),
        AGGREGATE_INTERVAL_S="0.02",
        AGGREGATOR_METRICS_PORT=str(port),
        LOG_LEVEL="INFO",
        **extra,
    )


def start_aggregator(
    linkedge_process: Callable[..., Process], settings: Settings, **extra: str
) -> tuple[Process, str]:
    port = free_port()
    proc = linkedge_process("aggregator", **aggregator_env(settings, port, **extra))
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/healthz", proc)
    return proc, url


def log_lines(proc: Process) -> list[dict[str, Any]]:
    lines = []
    for line in proc.log.read_text(errors="replace").splitlines():
        if line.startswith("{"):
            lines.append(orjson.loads(line))
    return lines


def wait_for(check: Callable[[], bool], what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
def test_sigkill_mid_flush_loses_nothing_counts_nothing_twice(
    rds: redis.Redis,
    own_redis: EmbeddedRedis,
    agg_settings: Settings,
    db: Db,
    linkedge_process: Callable[..., Process],
) -> None:
    links = link_ids(50)
    producer = Producer(own_redis.url, links)
    producer.start()
    try:
        for _ in range(4):  # two aggregators at a time, both killed without warning
            pair = [start_aggregator(linkedge_process, agg_settings)[0] for _ in range(2)]
            time.sleep(random.uniform(0.3, 1.0))
            for proc in pair:
                proc.signal(signal.SIGKILL)
    finally:
        produced = producer.stop()

    final, _ = start_aggregator(linkedge_process, agg_settings)
    wait_for(lambda: not pending(rds), "the last aggregator to drain Redis")
    assert final.stop() == 0
    assert stored_rows(db, links) == expected_rows(produced)
    assert sum(produced.values()) > 0
    summary = [line for line in log_lines(final) if line["msg"] == "aggregator stopped"]
    assert len(summary) == 1 and summary[0]["failed_passes"] == 0


@pytest.mark.slow
def test_postgres_outage_waits_in_redis(
    rds: redis.Redis,
    agg_settings: Settings,
    tmp_path: Path,
    linkedge_process: Callable[..., Process],
) -> None:
    pg = EmbeddedPostgres(tmp_path / "pg").start()
    try:
        run(migrate_postgres(pg.url))
        settings = agg_settings.replace(database_url=Secret(pg.url))
        own_db = Db(pg.url)
        links = link_ids(10)
        before, during = random_counts(links, 300), random_counts(links, 300)
        proc, url = start_aggregator(linkedge_process, settings)
        produce(rds, before)
        wait_for(
            lambda: stored_rows(own_db, links) == expected_rows(before),
            "the first clicks in Postgres",
        )

        pg.stop()
        produce(rds, during)
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 503, "readiness to fail")
        problem = httpx.get(f"{url}/readyz").json()
        assert problem["status"] == 503 and problem["detail"].startswith("postgres unavailable")
        wait_for(
            lambda: bool(rds.keys(f"{keys.PREFIX}:*:counts:snapshot")),
            "a snapshot waiting in Redis",
        )

        pg.start()  # same data directory, same port
        wait_for(
            lambda: stored_rows(own_db, links) == expected_rows(before + during),
            "the clicks of the outage",
        )
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "readiness to recover")
        assert proc.stop() == 0
        lines = log_lines(proc)
        causes = [line["error"] for line in lines if "pass failed" in line["msg"]]
        assert causes and len(causes) == len(set(causes))  # once per cause, not per retry
        assert sum("recovered" in line["msg"] for line in lines) == 1
        (summary,) = [line for line in lines if line["msg"] == "aggregator stopped"]
        assert summary["failed_passes"] >= len(causes)
    finally:
        pg.stop()


@pytest.mark.slow
def test_redis_outage_waits(
    agg_settings: Settings,
    db: Db,
    tmp_path: Path,
    linkedge_process: Callable[..., Process],
) -> None:
    server = EmbeddedRedis(tmp_path / "redis", persist=True).start()
    client = redis.Redis.from_url(server.url)
    try:
        settings = agg_settings.replace(redis_url=Secret(server.url))
        links = link_ids(10)
        before, after = random_counts(links, 200), random_counts(links, 200)
        proc, url = start_aggregator(linkedge_process, settings)
        produce(client, before)
        wait_for(
            lambda: stored_rows(db, links) == expected_rows(before), "the first clicks in Postgres"
        )

        server.stop()
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 503, "readiness to fail")
        assert httpx.get(f"{url}/readyz").json()["detail"].startswith("redis unavailable")
        server.start()
        produce(client, after)
        wait_for(
            lambda: stored_rows(db, links) == expected_rows(before + after),
            "the clicks after the outage",
        )
        wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, "readiness to recover")
        assert proc.stop() == 0
    finally:
        client.close()
        server.stop()


BROWSER = {
    "User-Agent": "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
}


@pytest.mark.slow
def test_redirects_through_the_edge_land_in_postgres_exactly(
    rds: redis.Redis,
    own_redis: EmbeddedRedis,
    agg_settings: Settings,
    start_edge: Callable[..., Any],
    account: Callable[..., Any],
    linkedge_process: Callable[..., Process],
) -> None:
    edge = start_edge(workers=2, REDIS_URL=own_redis.url, CLICK_SHARDS=str(SHARDS))
    who = account()
    with edge.client() as client:
        made = [
            client.post(
                "/api/v1/links", json={"url": f"https://example.com/{i}"}, headers=who.headers
            )
            for i in range(3)
        ]
        codes = [m.json()["code"] for m in made]
        served: Counter[tuple[str, bool]] = Counter()
        for i in range(120):
            code = codes[i % 3]
            if i % 5 == 0:
                assert client.head(f"/{code}").status_code == 302
                served[(code, True)] += 1
            else:
                assert client.get(f"/{code}", headers=BROWSER).status_code == 302
                served[(code, False)] += 1
    assert edge.process.stop() == 0  # graceful: every click is flushed to Redis

    proc, _ = start_aggregator(linkedge_process, agg_settings)
    wait_for(lambda: not pending(rds), "the aggregator to move every counter")
    assert proc.stop() == 0
    edge = start_edge(workers=1, REDIS_URL=own_redis.url)
    with edge.client() as client:
        for code in codes:
            link = client.get(f"/api/v1/links/{code}", headers=who.headers).json()
            human, bot = served[(code, False)], served[(code, True)]
            assert (link["clicks"], link["human_clicks"]) == (human + bot, human)
            stats = client.get(f"/api/v1/links/{code}/stats", headers=who.headers).json()
            daily = [(d["clicks"], d["human_clicks"]) for d in stats["daily"] if d["clicks"]]
            assert tuple(map(sum, zip(*daily, strict=True))) == (human + bot, human)
