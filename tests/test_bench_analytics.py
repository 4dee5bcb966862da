"""The analytics bench at a tiny size, end to end, and its synthetic clicks and checks.

The scenario runs as ``make bench`` runs it (clicks loaded by a process of their own, then
``linkedge analytics`` and an edge, the dashboard queries over HTTP), on 20,000 clicks over 50
links. No timing is asserted: only that every answer passed the bench's own checks.
"""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx
import numpy as np
from conftest import Stores

from analytics.enrich import COLUMNS
from linkedge.embedded import EmbeddedRedis
from loadtest.bench import analytics, clickgen, dashboardqueries
from loadtest.bench.dashboardqueries import DashboardQuery, Timing

NOW_MS = 1_765_000_000_000


def _links(count: int) -> clickgen.Links:
    return clickgen.Links(
        ids=np.arange(101, 101 + count, dtype=np.uint64),
        accounts=np.array([7 if i % 2 == 0 else 8 for i in range(count)], dtype=np.uint64),
        codes=[f"c{i}" for i in range(count)],
        targets=[f"https://example.com/{i}" for i in range(count)],
    )


def test_the_scenario_answers_every_dashboard_query_correctly(
    stores: Stores, own_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    config = analytics.Config(rows=20_000, links=50, batch=7_000, runs=2, warmups=1)
    result = analytics.run_scenario(config, tmp_path, own_redis.url, stores.database_url)

    assert result.problems == []
    assert result.load["rows"] == 20_000 and len(result.load["batches_s"]) == 3
    for name, (generated, direct) in result.checks.items():
        assert generated == direct > 0, name
    names = [timing.query.name for timing in result.timings]
    assert len(names) == 9 and all(len(t.samples_ms) == 2 for t in result.timings)
    for timing in result.timings:
        assert timing.answer["results"], timing.query.name
    assert {probe["name"] for probe in result.load["probes"]} == set(names)
    table = analytics.format_result(result)
    assert "checks: ok" in table and "rows/s" in table


def test_generated_clicks_have_the_clicks_columns_and_their_mix() -> None:
    generator = clickgen.ClickGenerator(_links(100), now_ms=NOW_MS, people=5_000, seed=3)
    table = generator.batch(20_000)
    assert table.column_names == list(COLUMNS)
    link = table.column("link_id").to_numpy()
    counts = Counter(link.tolist())
    assert counts[101] > counts[102] > counts[110]  # Zipf: rank 1 first
    account = table.column("account_id").to_numpy()
    assert set(account[link == 101].tolist()) == {7} and set(account[link == 102].tolist()) == {8}
    bots = table.column("is_bot").to_numpy()
    assert 0.08 < bots.mean() < 0.12
    reasons = Counter(table.column("bot_reason").to_pylist())
    assert set(reasons) == {"", "crawler", "head"}
    devices = table.column("device_type").to_pylist()
    assert {devices[i] for i in np.flatnonzero(bots == 0)} <= {
        "desktop",
        "mobile",
        "tablet",
        "other",
    }
    assert len(set(table.column("country").to_pylist())) > 30
    ts = table.column("ts").cast("int64").to_numpy()
    assert ts.min() >= NOW_MS - 35 * clickgen.DAY_MS and ts.max() < NOW_MS
    ids = [uuid.UUID(bytes=raw) for raw in table.column("click_id").to_pylist()[:50]]
    assert all(
        i.version == 7 and i.int >> 80 == t for i, t in zip(ids, ts[:50].tolist(), strict=True)
    )
    hashes = table.column("visitor_hash").to_pylist()
    assert all(len(h) == 16 and int(h, 16) >= 0 for h in hashes[:50])
    assert len(set(hashes)) < len(hashes)  # people come back
    again = clickgen.ClickGenerator(_links(100), now_ms=NOW_MS, people=5_000, seed=3).batch(20_000)
    assert again.equals(table)


def test_nearest_rank_percentiles() -> None:
    samples = [float(v) for v in range(1, 21)]
    assert dashboardqueries.percentile(samples, 50) == 10.0
    assert dashboardqueries.percentile(samples, 95) == 19.0
    assert dashboardqueries.percentile([5.0], 95) == 5.0


def test_a_series_that_does_not_add_up_fails_the_check() -> None:
    now = datetime(2026, 12, 8, 1, tzinfo=UTC)
    queries = dashboardqueries.dashboard_queries(
        (date(2026, 11, 9), date(2026, 12, 8)), (now - timedelta(hours=24), now), "c0"
    )
    series = next(q for q in queries if q.name.startswith("daily series, account"))
    answer = {"results": [{"dimensions": ["2026-12-01"], "metrics": [90, 9]}], "meta": {}}
    with httpx.Client() as client:
        assert (
            dashboardqueries.check(
                client, [Timing(series, [1.0], answer)], {"account 30d": (99, 99)}
            )
            == []
        )
        problems = dashboardqueries.check(
            client, [Timing(series, [1.0], answer)], {"account 30d": (100, 100)}
        )
        assert problems == [f"{series.name}: the series adds up to 99 clicks, uniqExact counts 100"]
        empty = Timing(series, [1.0], {"results": [], "meta": {}})
        assert dashboardqueries.check(client, [empty], {"account 30d": (5, 5)}) == [
            f"{series.name}: empty answer"
        ]
        wrong = DashboardQuery("x", series.body, "account 30d")
        mismatch = dashboardqueries.check(
            client, [Timing(wrong, [1.0], answer)], {"account 30d": (98, 99)}
        )
        assert mismatch[0] == "account 30d: 98 clicks generated, uniqExact counts 99"
