"""``linkedge reconcile``: Postgres vs ClickHouse per link per day, allowing for what is in flight.

Reconcile reads every link of the last days, so this module runs its own Postgres (the session's
is full of other tests' counts) besides its own Redis. ClickHouse is the embedded engine inside a
``linkedge analytics`` subprocess, reached over ``ANALYTICS_URL`` as in ``make run``; once that
process is stopped, reconcile opens the data path itself.
"""

from __future__ import annotations

import collections
import dataclasses
import datetime
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis
import redis.asyncio as aioredis
from conftest import ROOT, Db, Process, Stores, run
from test_analytics import (  # noqa: F401 - fixtures used by name
    SHARDS,
    Analytics,
    drained,
    eventually,
    expected,
    link_ids,
    make_clicks,
    produce,
    produce_entries,
    start_analytics,
)

from analytics.reconcile import read_in_flight
from linkedge import apikeys, events, keys
from linkedge.embedded import EmbeddedPostgres, EmbeddedRedis
from linkedge.migrate import migrate_postgres


@pytest.fixture(scope="module")
def own_pg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    server = EmbeddedPostgres(tmp_path_factory.mktemp("reconcile-pg")).start()
    run(migrate_postgres(server.url))
    yield server
    server.stop()


@pytest.fixture
def pg_db(own_pg: EmbeddedPostgres) -> Db:
    """This module's Postgres with no click counts: reconcile compares every link it holds."""
    db = Db(own_pg.url)
    db.execute("TRUNCATE link_daily_clicks, link_click_totals, aggregator_batches")
    return db


def reconcile(
    stores: Stores,
    redis_server: EmbeddedRedis,
    own_pg: EmbeddedPostgres,
    clickhouse: Path,
    analytics_url: str = "",
    **extra: str,
) -> subprocess.CompletedProcess[str]:
    env = stores.env(
        REDIS_URL=redis_server.url,
        DATABASE_URL=own_pg.url,
        CLICKHOUSE_URL=f"chdb://{clickhouse}",
        ANALYTICS_URL=analytics_url,
        CLICK_SHARDS=str(SHARDS),
        **extra,
    )
    return subprocess.run(
        [sys.executable, "-m", "linkedge.cli", "reconcile", "--days", "3"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        check=False,
        text=True,
        timeout=120,
    )


def write_postgres(db: Db, clicks: list[events.Click]) -> None:
    """What the aggregator would have written for ``clicks``."""
    per_day: dict[tuple[int, datetime.date], list[int]] = {}
    for click in clicks:
        day = datetime.datetime.strptime(click.day, "%Y%m%d").date()
        counts = per_day.setdefault((click.link_id, day), [0, 0])
        counts[0] += 1
        counts[1] += not click.bot
    for (link_id, day), (total, human) in per_day.items():
        db.execute(
            """INSERT INTO link_daily_clicks (link_id, day, clicks, human_clicks)
               VALUES ($1, $2, $3, $4)
               ON CONFLICT (link_id, day) DO UPDATE
               SET clicks = link_daily_clicks.clicks + EXCLUDED.clicks,
               human_clicks = link_daily_clicks.human_clicks + EXCLUDED.human_clicks""",
            link_id,
            day,
            total,
            human,
        )


def record_counters(client: redis.Redis, clicks: list[events.Click]) -> None:
    """The edge's counter increments for ``clicks`` (not yet moved by an aggregator): the first
    as an older edge wrote it (HINCRBY of its field), the rest as one flush field."""
    fields = [events.counter_field(c.link_id, c.day, bool(c.bot)) for c in clicks]
    client.hincrby(keys.counts(0), fields[0], 1)
    flush = collections.Counter(fields[1:])
    client.hset(keys.counts(0), f"~{uuid.uuid4().hex}", events.join_counters(dict(flush)))


def test_reconcile_in_sync_in_flight_and_tampered(
    stores: Stores,
    own_redis: EmbeddedRedis,
    own_pg: EmbeddedPostgres,
    pg_db: Db,
    rds: redis.Redis,
    start_analytics: Callable[..., Analytics],  # noqa: F811
    tmp_path: Path,
) -> None:
    db = pg_db
    clickhouse = tmp_path / "clickhouse"
    links = link_ids(3)
    today = make_clicks(links, 90)
    yesterday = [
        dataclasses.replace(
            c, id=events.ClickIds().new(c.ts_ms - 86_400_000), ts_ms=c.ts_ms - 86_400_000
        )
        for c in make_clicks(links[:2], 40)
    ]
    clicks = today + yesterday
    analytics = start_analytics()
    produce(rds, clicks)
    eventually(drained(rds, analytics, clicks), "clicks in ClickHouse")
    write_postgres(db, clicks)

    result = reconcile(stores, own_redis, own_pg, clickhouse, analytics.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "in sync: 5 link-day(s) compared" in result.stdout

    # Postgres tampered with: a difference nothing in flight explains.
    victim = links[2]
    db.execute("UPDATE link_daily_clicks SET clicks = clicks + 5 WHERE link_id = $1", victim)
    result = reconcile(stores, own_redis, own_pg, clickhouse, analytics.url)
    assert result.returncode == 1, result.stdout + result.stderr
    line = next(line for line in result.stdout.splitlines() if str(victim) in line)
    total, _ = expected(today)[victim]
    assert line.split()[2:4] == [str(total + 5), str(total)] and line.endswith("DIFFERS")
    assert "1 link-day(s) differ beyond what is in flight" in result.stdout
    db.execute("UPDATE link_daily_clicks SET clicks = clicks - 5 WHERE link_id = $1", victim)

    # Clicks in ClickHouse whose counters the aggregator has not moved yet: in flight, exit 0.
    late = make_clicks(links[:1], 3)
    record_counters(rds, late)
    produce(rds, late)
    eventually(drained(rds, analytics, clicks + late), "late clicks in ClickHouse")
    result = reconcile(stores, own_redis, own_pg, clickhouse, analytics.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "differ only by clicks still in flight" in result.stdout
    rds.delete(keys.counts(0))
    write_postgres(db, late)

    # Analytics stopped: reconcile opens the embedded engine itself; entries not yet consumed
    # (Postgres already has them) are in flight too, every event of them.
    assert analytics.process.stop() == 0
    unread = make_clicks(links[1:2], 30)
    produce_entries(rds, unread, 30)
    write_postgres(db, unread)
    result = reconcile(stores, own_redis, own_pg, clickhouse)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "differ only by clicks still in flight" in result.stdout

    # ANALYTICS_URL pointing at nothing: a clear error and exit 2, not a verdict.
    result = reconcile(stores, own_redis, own_pg, clickhouse, analytics.url)
    assert result.returncode == 2 and "did not answer" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_in_flight_counts_every_event_of_unacknowledged_entries(
    own_redis: EmbeddedRedis, rds: redis.Redis
) -> None:
    link = link_ids(1)[0]
    acked, pending, undelivered = (make_clicks([link], n) for n in (10, 50, 20))
    stream = keys.clicks_stream(2)
    group = keys.ANALYTICS_GROUP
    rds.xgroup_create(stream, group, id="0", mkstream=True)

    def add(encoded: list[bytes]) -> bytes:
        entry_id: bytes = rds.xadd(stream, {events.STREAM_FIELD: events.join_entry(encoded)})
        return entry_id

    done = add([events.encode(c) for c in acked])
    rds.xreadgroup(group, "busy-host", {stream: ">"})
    rds.xack(stream, group, done)  # in ClickHouse already: not in flight
    bad = b'{"v": 1, "id": "x"}'  # never reaches ClickHouse: not in flight either
    encoded = [events.encode(c) for c in pending]
    add(encoded[:7] + [bad] + encoded[7:])
    assert len(rds.xreadgroup(group, "busy-host", {stream: ">"})[0][1]) == 1  # read, not acked
    add([events.encode(c) for c in undelivered])

    async def in_flight() -> tuple[dict[Any, int], dict[Any, int]]:
        client = aioredis.Redis.from_url(own_redis.url)
        try:
            flight = await read_in_flight(client, SHARDS)
        finally:
            await client.aclose()
        return dict(flight.unacked), dict(flight.unacked_human)

    day = pending[0].day
    key = (link, f"{day[:4]}-{day[4:6]}-{day[6:]}")
    total, human = expected(pending + undelivered)[link]
    assert total == 70 and run(in_flight()) == ({key: total}, {key: human})


TOKEN = "reconcile-test-token"


@pytest.fixture
def with_token(
    own_redis: EmbeddedRedis,
    pg_db: Db,
    rds: redis.Redis,
    start_analytics: Callable[..., Analytics],  # noqa: F811
) -> Analytics:
    """Analytics started with ``TOKEN``, holding clicks that Postgres holds too."""
    clicks = make_clicks(link_ids(2), 40)
    analytics = start_analytics(ANALYTICS_TOKEN=TOKEN)
    produce(rds, clicks)
    write_postgres(pg_db, clicks)

    def counted() -> bool:
        for link_id, (total, _) in expected(clicks).items():
            answer = httpx.get(
                f"{analytics.url}/internal/link-counts",
                params={"link_id": link_id},
                headers={"Authorization": f"Bearer {TOKEN}"},
                timeout=30,
            )
            if answer.status_code != 200 or answer.json().get("distinct_clicks") != total:
                return False
        return True

    eventually(counted, "clicks in ClickHouse")
    return analytics


def test_reconcile_sends_the_analytics_token(
    stores: Stores,
    own_redis: EmbeddedRedis,
    own_pg: EmbeddedPostgres,
    with_token: Analytics,
    tmp_path: Path,
) -> None:
    result = reconcile(
        stores, own_redis, own_pg, tmp_path / "clickhouse", with_token.url, ANALYTICS_TOKEN=TOKEN
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "in sync: 2 link-day(s) compared" in result.stdout


def test_reconcile_with_another_token_says_401_and_exits_2(
    stores: Stores,
    own_redis: EmbeddedRedis,
    own_pg: EmbeddedPostgres,
    with_token: Analytics,
    tmp_path: Path,
) -> None:
    assert httpx.get(f"{with_token.url}/internal/daily-counts", timeout=30).status_code == 401
    for given in ("another-token", ""):
        result = reconcile(
            stores,
            own_redis,
            own_pg,
            tmp_path / "clickhouse",
            with_token.url,
            ANALYTICS_TOKEN=given,
        )
        assert result.returncode == 2, result.stdout + result.stderr
        assert "answered 401: ANALYTICS_TOKEN" in result.stderr
        assert TOKEN not in result.stderr + result.stdout
        assert "Traceback" not in result.stderr


GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
BROWSER = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.mark.slow
def test_redirects_counted_exactly_in_postgres_and_clickhouse(
    stores: Stores,
    own_redis: EmbeddedRedis,
    own_pg: EmbeddedPostgres,
    pg_db: Db,
    start_edge: Callable[..., Any],
    start_analytics: Callable[..., Analytics],  # noqa: F811
    linkedge_process: Callable[..., Process],
    tmp_path: Path,
) -> None:
    """N redirects through a 2-worker edge: N in Postgres, N distinct click ids in ClickHouse."""

    async def new_key() -> str:
        conn = await asyncpg.connect(own_pg.url, timeout=10)
        try:
            return (await apikeys.create_key(conn, f"pipeline-{tmp_path.name}"))[1]
        finally:
            await conn.close()

    # The module's stores hold the previous test's (deliberately tampered) link-days: start clean,
    # since reconcile compares every link.
    with redis.Redis.from_url(own_redis.url) as own:
        own.flushall()
    pg_db.execute("TRUNCATE link_daily_clicks, link_click_totals, aggregator_batches")
    headers = {"Authorization": f"Bearer {run(new_key())}"}
    common = {"REDIS_URL": own_redis.url, "DATABASE_URL": own_pg.url, "CLICK_SHARDS": str(SHARDS)}
    edge = start_edge(workers=2, **common)
    analytics = start_analytics()
    linkedge_process(
        "aggregator", AGGREGATOR_METRICS_PORT="0", AGGREGATE_INTERVAL_S="0.1", **common
    )
    served: dict[str, list[int]] = {}  # code -> [clicks, human clicks]
    with edge.client() as client:
        for i in range(3):
            made = client.post(
                "/api/v1/links", json={"url": f"https://example.com/{i}"}, headers=headers
            )
            assert made.status_code == 201, made.text
            served[made.json()["code"]] = [0, 0]
        codes = list(served)
        for i in range(150):
            code = codes[i % 3]
            if i % 5 == 0:
                answer = client.head(f"/{code}", headers={"User-Agent": BROWSER})
            elif i % 7 == 0:
                answer = client.get(f"/{code}", headers={"User-Agent": GOOGLEBOT})
            elif i % 11 == 0:
                answer = client.get(
                    f"/{code}", headers={"User-Agent": BROWSER, "Sec-Purpose": "prefetch"}
                )
            else:
                answer = client.get(f"/{code}", headers={"User-Agent": BROWSER})
                served[code][1] += 1
            assert answer.status_code == 302
            served[code][0] += 1
    assert edge.process.stop() == 0  # graceful: every click flushed to Redis

    ids = {
        row["code"]: row["id"]
        for row in pg_db.fetch("SELECT id, code FROM links WHERE code = ANY($1)", codes)
    }

    def postgres() -> dict[str, list[int]]:
        rows = pg_db.fetch(
            "SELECT link_id, sum(clicks) AS c, sum(human_clicks) AS h"
            " FROM link_daily_clicks GROUP BY link_id"
        )
        found = {row["link_id"]: [row["c"], row["h"]] for row in rows}
        return {code: found.get(link_id, [0, 0]) for code, link_id in ids.items()}

    def clickhouse() -> dict[str, list[int]]:
        counts = {code: analytics.counts(link_id) for code, link_id in ids.items()}
        return {
            code: [c.get("distinct_clicks", 0), c.get("human_clicks", 0)]
            for code, c in counts.items()
        }

    eventually(lambda: postgres() == served, f"Postgres counts {served}", timeout=60)
    eventually(lambda: clickhouse() == served, f"ClickHouse counts {served}", timeout=60)
    for code, link_id in ids.items():
        counts = analytics.counts(link_id)
        assert counts["final_rows"] == counts["hourly_clicks"] == served[code][0]
    result = reconcile(stores, own_redis, own_pg, tmp_path / "clickhouse", analytics.url)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "in sync" in result.stdout
