"""The analytics query API end to end: clicks through a running edge, read back by breakdown.

One edge (client IPs from ``X-Forwarded-For`` behind ``TRUSTED_PROXIES``), aggregator and
``linkedge analytics`` (the embedded ClickHouse engine, reached by the edge over the analytics
port with ``ANALYTICS_TOKEN``) run for the module on a Redis of its own. A known mix of clicks
goes through the edge: humans and bots (HEAD, a crawler), a phone and a desktop, referrers, UTM
values, IPs of known countries, on three links of one account (two tagged) and one link of
another account. Every test reads that one data set.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import itertools
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import httpx
import pytest
from conftest import (
    ANALYTICS_TOKEN,
    ROOT,
    Edge,
    Stores,
    analytics_pipeline,
    run,
)

from linkedge import apikeys
from linkedge.embedded import EmbeddedRedis, free_port

QUERY = "/api/v1/analytics/query"
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0"
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
DEVICE = {IPHONE: "mobile", FIREFOX: "desktop", GOOGLEBOT: "bot"}
COUNTRY = {"8.8.8.8": "US", "81.2.69.142": "GB", "1.1.1.1": "AU", "193.0.6.139": "NL",
           "202.12.27.33": "JP"}  # fmt: skip
NEWS = "https://news.example.com/a"
SEARCH = "https://www.search.example.org/?q=1"
LAUNCH = "?utm_source=newsletter&utm_medium=email&utm_campaign=launch"


@dataclasses.dataclass(frozen=True)
class Sent:
    """Clicks sent alike: ``times`` requests of one link."""

    link: str  # alpha, beta, gamma (account A) or other (account B)
    times: int
    method: str
    agent: str
    ip: str
    referer: str = ""
    query: str = ""

    @property
    def bot(self) -> str:
        return "head" if self.method == "HEAD" else "crawler" if self.agent == GOOGLEBOT else ""


PLAN = [
    Sent("alpha", 4, "GET", IPHONE, "8.8.8.8", NEWS, LAUNCH),
    Sent("alpha", 3, "GET", FIREFOX, "81.2.69.142", SEARCH),
    Sent("alpha", 2, "HEAD", FIREFOX, "8.8.8.8"),
    Sent("beta", 2, "GET", FIREFOX, "1.1.1.1", query="?utm_source=twitter"),
    Sent("beta", 2, "GET", GOOGLEBOT, "193.0.6.139"),
    Sent("gamma", 3, "GET", IPHONE, "202.12.27.33"),
    Sent("other", 2, "GET", FIREFOX, "8.8.8.8"),
]
TAGS = {"alpha": ["red", "blue"], "beta": ["red"], "gamma": []}
MINE = [sent for sent in PLAN if sent.link != "other"]


def expected(by: Callable[[Sent], str], plan: list[Sent] = MINE) -> dict[str, int]:
    counts: Counter[str] = Counter()
    for sent in plan:
        counts[by(sent)] += sent.times
    return dict(counts)


@dataclasses.dataclass
class World:
    edge: Edge
    analytics_url: str
    key: str  # account A, every scope
    links_only_key: str  # account A, links:read only
    other_key: str  # account B
    codes: dict[str, str]  # alpha/beta/gamma/other -> code

    def client(self, key: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {key or self.key}"}
        return httpx.Client(base_url=self.edge.url, headers=headers, timeout=30)

    def query(self, body: dict[str, Any], key: str | None = None) -> dict[str, Any]:
        with self.client(key) as client:
            response = client.post(QUERY, json=body)
        assert response.status_code == 200, response.text
        return response.json()  # type: ignore[no-any-return]

    def total(self, *filters: list[Any], key: str | None = None) -> int:
        """Clicks of the last 30 days matching every filter."""
        answer = self.query({"metrics": ["clicks"], "filters": list(filters)}, key)
        return int(answer["results"][0]["metrics"][0])

    def breakdown(self, body: dict[str, Any], key: str | None = None) -> dict[Any, list[int]]:
        answer = self.query(body, key)
        return {
            tuple(r["dimensions"]) if len(r["dimensions"]) > 1 else r["dimensions"][0]: r["metrics"]
            for r in answer["results"]
        }


def _new_key(dsn: str, account: str, scopes: tuple[str, ...]) -> str:
    async def go() -> str:
        conn = await asyncpg.connect(dsn, timeout=10)
        try:
            return (await apikeys.create_key(conn, account, scopes))[1]
        finally:
            await conn.close()

    return str(run(go()))


def _send(edge_url: str, codes: dict[str, str]) -> None:
    with httpx.Client(base_url=edge_url, timeout=10, follow_redirects=False) as client:
        for sent in PLAN:
            headers = {"User-Agent": sent.agent, "X-Forwarded-For": sent.ip}
            if sent.referer:
                headers["Referer"] = sent.referer
            for _ in range(sent.times):
                response = client.request(
                    sent.method, f"/{codes[sent.link]}{sent.query}", headers=headers
                )
                assert response.status_code == 302, response.text


@pytest.fixture(scope="module")
def world(
    stores: Stores, own_redis: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[World]:
    tmp = tmp_path_factory.mktemp("analytics-query")
    with analytics_pipeline(
        stores,
        own_redis.url,
        tmp,
        ANALYTICS_BLOCK_MS="200",
        AGGREGATE_INTERVAL_S="0.2",
        VISITOR_SALT_SECRET="analytics-query-test",
        TRUSTED_PROXIES="127.0.0.1",
        RATE_LIMIT_BURST="100000",
    ) as (edge, analytics_url):
        suffix = uuid.uuid4().hex[:8]
        account_a, account_b = f"aq-a-{suffix}", f"aq-b-{suffix}"
        key = _new_key(stores.database_url, account_a, apikeys.SCOPES)
        world = World(
            edge=edge,
            analytics_url=analytics_url,
            key=key,
            links_only_key=_new_key(stores.database_url, account_a, ("links:read",)),
            other_key=_new_key(stores.database_url, account_b, apikeys.SCOPES),
            codes={name: f"aq-{name}-{suffix}" for name in [*TAGS, "other"]},
        )
        for name, code in world.codes.items():
            owner = world.other_key if name == "other" else key
            with world.client(owner) as client:
                body = {
                    "url": f"https://example.com/{name}",
                    "code": code,
                    "tags": TAGS.get(name, []),
                }
                assert client.post("/api/v1/links", json=body).status_code == 201
        _send(edge.url, world.codes)
        _wait_counted(world)
        yield world


def _wait_counted(world: World, timeout: float = 60.0) -> None:
    """Until ClickHouse (through the API) and Postgres both hold every click sent."""
    total = sum(sent.times for sent in MINE)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        mine = world.query({"metrics": ["clicks"], "date_range": "7d"})["results"][0]["metrics"]
        theirs = world.query({"metrics": ["clicks"]}, world.other_key)["results"][0]["metrics"]
        with world.client() as client:
            postgres = sum(
                client.get(f"/api/v1/links/{world.codes[name]}").json()["clicks"] for name in TAGS
            )
        if mine == [total] and theirs == [2] and postgres == total:
            return
        time.sleep(0.3)
    raise AssertionError(f"clicks not all counted within {timeout}s: {mine} {theirs} {postgres}")


def test_totals_and_every_breakdown_match_what_was_sent(world: World) -> None:
    answer = world.query(
        {"metrics": ["clicks", "human_clicks", "bot_clicks", "visitors"], "date_range": "30d"}
    )
    humans = sum(sent.times for sent in MINE if not sent.bot)
    visitors = len({(sent.ip, sent.agent) for sent in MINE})  # one UTC day: one salt
    assert answer["results"] == [{"dimensions": [], "metrics": [16, humans, 16 - humans, visitors]}]
    assert answer["meta"]["total_rows"] == 1 and answer["meta"]["timezone"] == "UTC"

    def clicks_by(dimension: str, **extra: Any) -> dict[Any, int]:
        body = {"metrics": ["clicks"], "dimensions": [dimension], **extra}
        return {value: metrics[0] for value, metrics in world.breakdown(body).items()}

    codes = world.codes
    assert clicks_by("link") == {codes[name]: n for name, n in expected(lambda s: s.link).items()}
    assert clicks_by("country") == expected(lambda s: COUNTRY[s.ip])
    assert clicks_by("device") == expected(lambda s: DEVICE[s.agent])
    assert clicks_by("bot_reason") == expected(lambda s: s.bot)
    assert clicks_by("referrer") == expected(lambda s: s.referer)
    assert clicks_by("referrer_host") == {"news.example.com": 4, "search.example.org": 3, "": 9}
    assert clicks_by("utm_source") == {"newsletter": 4, "twitter": 2, "": 10}
    assert clicks_by("utm_campaign") == {"launch": 4, "": 12}
    assert clicks_by("browser")["Firefox"] == 7
    assert clicks_by("os")["iOS"] == 7

    two = world.breakdown(
        {"metrics": ["clicks", "human_clicks"], "dimensions": ["country", "device"]}
    )
    assert two[("US", "mobile")] == [4, 4] and two[("US", "desktop")] == [2, 0]
    three = world.query(
        {"metrics": ["visitors"], "dimensions": ["link", "country", "device"], "limit": 2}
    )
    assert len(three["results"]) == 2 and three["meta"]["total_rows"] == 6


def test_rollups_and_raw_clicks_give_the_same_numbers(world: World) -> None:
    body = {"metrics": ["clicks", "human_clicks", "bot_clicks", "visitors"],
            "dimensions": ["country"], "date_range": "all"}  # fmt: skip
    by_day = world.query(body)
    by_hour = world.query({**body, "date_range": "24h"})
    raw = world.query({**body, "timezone": "Asia/Kolkata"})  # +05:30: no rollup fits
    assert by_day["meta"]["source"] == "clicks_by_day"
    assert by_hour["meta"]["source"] == "clicks_by_hour"
    assert raw["meta"]["source"] == "clicks"
    assert by_day["results"] == by_hour["results"] == raw["results"]
    assert sum(r["metrics"][0] for r in raw["results"]) == 16
    filtered = {
        "metrics": ["clicks"],
        "filters": [["is", "country", ["US", "GB"]]],
        "date_range": "7d",
    }
    assert world.query(filtered)["meta"]["source"] == "clicks_by_day"
    assert world.query(filtered)["results"][0]["metrics"] == [9]
    assert world.query({**filtered, "dimensions": ["utm_term"]})["meta"]["source"] == "clicks"


def test_filters_combine_with_and(world: World) -> None:
    total = world.total
    assert total(["is", "country", ["US"]]) == 6
    assert total(["is_not", "country", ["US"]]) == 10
    assert total(["is", "country", ["US"]], ["is", "device", ["mobile"]]) == 4
    assert total(["contains", "referrer", ["SEARCH.example"]]) == 3
    assert total(["contains", "referrer", ["nothing", "NEWS."]]) == 4  # any of the values
    assert total(["is", "link", [world.codes["beta"]]], ["is_not", "bot_reason", [""]]) == 2
    assert total(["is", "utm_medium", ["email"]], ["is", "country", ["GB"]]) == 0


def test_time_series_fill_empty_buckets_and_sum_to_the_total(world: World) -> None:
    hours = world.query(
        {"metrics": ["clicks", "visitors"], "dimensions": ["time:hour"], "date_range": "24h"}
    )
    assert len(hours["results"]) == 24 == hours["meta"]["total_rows"]
    assert sum(r["metrics"][0] for r in hours["results"]) == 16
    assert sum(1 for r in hours["results"] if r["metrics"] == [0, 0]) >= 22  # the empty hours
    starts = [datetime.fromisoformat(r["dimensions"][0]) for r in hours["results"]]
    steps = {later - earlier for earlier, later in itertools.pairwise(starts)}
    assert steps == {timedelta(hours=1)}

    days = world.query({"metrics": ["clicks"], "dimensions": ["time:day"], "date_range": "7d"})
    today = datetime.now(UTC).date()
    assert [r["dimensions"][0] for r in days["results"]][-1] == today.isoformat()
    assert len(days["results"]) == 7 and sum(r["metrics"][0] for r in days["results"]) == 16

    minutes = world.query(
        {"metrics": ["clicks"], "dimensions": ["time:minute"], "date_range": "24h"}
    )
    assert len(minutes["results"]) == 24 * 60 and minutes["meta"]["source"] == "clicks"
    week = world.query({"metrics": ["clicks"], "dimensions": ["time:minute"], "date_range": "7d"})
    assert len(week["results"]) == 7 * 24 * 60  # the longest series, whole by default
    assert sum(r["metrics"][0] for r in week["results"]) == 16
    assert sum(r["metrics"][0] for r in minutes["results"]) == 16

    top = world.query({"metrics": ["clicks"], "dimensions": ["time:hour"], "date_range": "24h",
                       "order_by": [["clicks", "desc"]], "limit": 1})  # fmt: skip
    assert top["results"][0]["metrics"][0] >= 8 and top["meta"]["total_rows"] == 24


def test_time_zone_sets_the_buckets(world: World) -> None:
    zone = "Asia/Kolkata"
    before = datetime.now(ZoneInfo(zone))
    hours = world.query({"metrics": ["clicks"], "dimensions": ["time:hour"],
                         "date_range": "24h", "timezone": zone})  # fmt: skip
    after = datetime.now(ZoneInfo(zone))
    assert all(r["dimensions"][0].endswith(":00:00+05:30") for r in hours["results"])
    busy = [datetime.fromisoformat(r["dimensions"][0]) for r in hours["results"] if r["metrics"][0]]
    assert busy and all(moment.tzinfo is not None for moment in busy)
    assert {moment.hour for moment in busy} <= {before.hour, after.hour, (before.hour - 1) % 24}

    zone = "Pacific/Kiritimati"  # UTC+14: its day is usually not the UTC day
    days = world.query({"metrics": ["clicks"], "dimensions": ["time:day"],
                        "date_range": "7d", "timezone": zone})  # fmt: skip
    local_day = datetime.now(ZoneInfo(zone)).date().isoformat()
    assert days["results"][-1]["dimensions"] == [local_day]
    assert days["meta"]["date_range"][1].endswith("+14:00")
    assert sum(r["metrics"][0] for r in days["results"]) == 16


def test_per_link_totals_match_postgres_and_the_link_route(world: World) -> None:
    body = {"metrics": ["clicks", "human_clicks"], "dimensions": ["link"], "date_range": "all"}
    by_link = world.breakdown(body)
    with world.client() as client:
        for name in TAGS:
            code = world.codes[name]
            link = client.get(f"/api/v1/links/{code}").json()
            assert by_link[code] == [link["clicks"], link["human_clicks"]], name
            one = client.get(
                f"/api/v1/links/{code}/analytics",
                params={"metrics": "clicks,human_clicks", "date_range": "all"},
            )
            assert one.status_code == 200, one.text
            assert one.json()["results"][0]["metrics"] == by_link[code]
            assert one.json()["meta"]["source"] == "clicks"  # its rows, by the sort key
        alpha = client.get(
            f"/api/v1/links/{world.codes['alpha']}/analytics",
            params={
                "metrics": "clicks",
                "dimensions": "country",
                "filters": '[["is_not", "bot_reason", ["head"]]]',
                "date_range": f"{datetime.now(UTC).date()},{datetime.now(UTC).date()}",
            },
        ).json()
        assert {r["dimensions"][0]: r["metrics"][0] for r in alpha["results"]} == {"US": 4, "GB": 3}


def test_tags_as_dimension_and_filter(world: World) -> None:
    by_tag = world.breakdown({"metrics": ["clicks"], "dimensions": ["tag"]})
    assert by_tag == {"red": [13], "blue": [9], "": [3]}  # alpha is red and blue, gamma untagged
    assert world.total(["is", "tag", ["blue"]]) == 9
    assert world.total(["is_not", "tag", ["blue"]]) == 7
    assert world.total(["contains", "tag", ["RE"]]) == 13
    assert world.total(["is", "tag", ["red"]], key=world.other_key) == 0
    both = world.breakdown({"metrics": ["clicks"], "dimensions": ["tag", "link"],
                            "filters": [["is", "tag", ["red"]]]})  # fmt: skip
    assert both[("blue", world.codes["alpha"])] == [9] and both[("red", world.codes["beta"])] == [4]


def test_csv_answers(world: World) -> None:
    body = {"metrics": ["clicks", "visitors"], "dimensions": ["country"]}
    with world.client() as client:
        by_accept = client.post(QUERY, json=body, headers={"Accept": "text/csv"})
        by_param = client.post(f"{QUERY}?format=csv", json=body)
        per_link = client.get(
            f"/api/v1/links/{world.codes['beta']}/analytics",
            params={"metrics": "clicks", "dimensions": "device", "format": "csv"},
        )
    assert by_accept.headers["content-type"].startswith("text/csv")
    assert by_accept.text == by_param.text
    rows = list(csv.reader(io.StringIO(by_accept.text)))
    assert rows[0] == ["country", "clicks", "visitors"]
    assert {row[0]: int(row[1]) for row in rows[1:]} == expected(lambda s: COUNTRY[s.ip])
    assert sorted(csv.reader(io.StringIO(per_link.text)))[:-1] == [["bot", "2"], ["desktop", "2"]]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metrics": ["pageviews"]}, "metrics"),
        ({"dimensions": ["country"]}, "metrics"),
        ({"metrics": ["clicks"], "dimensions": ["city"]}, "dimensions"),
        ({"metrics": ["clicks"], "dimensions": ["link", "country", "device", "os"]}, "dimensions"),
        ({"metrics": ["clicks"], "dimensions": ["time:day", "time:hour"]}, "dimensions"),
        ({"metrics": ["clicks"], "dimensions": ["time:minute"], "date_range": "30d"}, "date_range"),
        ({"metrics": ["clicks"], "timezone": "Mars/Olympus_Mons"}, "timezone"),
        ({"metrics": ["clicks"], "date_range": "yesterday"}, "date_range"),
        ({"metrics": ["clicks"], "date_range": ["2026-02-30", "2026-03-01"]}, "date_range"),
        ({"metrics": ["clicks"], "date_range": ["2026-03-02", "2026-03-01"]}, "date_range"),
        ({"metrics": ["clicks"], "filters": [["like", "country", ["US"]]]}, "filters[0]"),
        ({"metrics": ["clicks"], "filters": [["is", "time:day", ["x"]]]}, "filters[0]"),
        ({"metrics": ["clicks"], "filters": [["is", "country", "US"]]}, "filters[0]"),
        ({"metrics": ["clicks"], "order_by": [["country", "asc"]]}, "order_by"),
        ({"metrics": ["clicks"], "limit": 10001}, "limit"),
        ({"metrics": ["clicks"], "offset": -1}, "offset"),
        ({"metrics": ["clicks"], "select": "1; DROP TABLE clicks"}, "select"),
        ([], "body"),
    ],
)
def test_bad_queries_are_422_naming_the_field(world: World, body: Any, field: str) -> None:
    with world.client() as client:
        response = client.post(QUERY, json=body)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert field in [error["field"] for error in response.json()["errors"]]


def test_bad_link_route_parameters_are_422(world: World) -> None:
    path = f"/api/v1/links/{world.codes['alpha']}/analytics"
    with world.client() as client:
        for params, field in [
            ({"metrics": "clicks", "filters": "[not json"}, "filters"),
            ({"metrics": "clicks", "limit": "ten"}, "limit"),
            ({"metrics": "clicks", "format": "xml"}, "format"),
            (
                {"metrics": "clicks", "dimensions": "time:minute", "date_range": "7d,2026-01-01"},
                "date_range",
            ),
            ({}, "metrics"),
        ]:
            response = client.get(path, params=params)
            assert response.status_code == 422, (params, response.text)
            assert field in [e["field"] for e in response.json()["errors"]], params


def test_scope_and_accounts_are_enforced(world: World) -> None:
    body = {"metrics": ["clicks"]}
    with world.client(world.links_only_key) as client:
        refused = client.post(QUERY, json=body)
        assert refused.status_code == 403 and "stats:read" in refused.json()["detail"]
        alpha = f"/api/v1/links/{world.codes['alpha']}/analytics"
        assert client.get(alpha, params={"metrics": "clicks"}).status_code == 403
    with httpx.Client(base_url=world.edge.url, timeout=10) as anonymous:
        assert anonymous.post(QUERY, json=body).status_code == 401
    # Account B sees its own two clicks and nothing of account A's, by any dimension.
    other = world.query(
        {"metrics": ["clicks"], "dimensions": ["link"], "date_range": "all"}, world.other_key
    )
    assert other["results"] == [{"dimensions": [world.codes["other"]], "metrics": [2]}]
    assert world.breakdown({"metrics": ["clicks"], "dimensions": ["tag"]}, world.other_key) == {
        "": [2]
    }
    with world.client(world.other_key) as client:
        foreign = client.get(
            f"/api/v1/links/{world.codes['alpha']}/analytics", params={"metrics": "clicks"}
        )
        assert foreign.status_code == 404
    mine = world.breakdown({"metrics": ["clicks"], "dimensions": ["link"]})
    assert world.codes["other"] not in mine


def test_internal_routes_need_the_token(world: World) -> None:
    body = {"account_id": 1, "link_id": None, "tags": [], "query": {"metrics": ["clicks"]}}
    refused = httpx.post(f"{world.analytics_url}/internal/query", json=body, timeout=10)
    assert refused.status_code == 401 and "clicks" not in refused.text
    headers = {"Authorization": f"Bearer {ANALYTICS_TOKEN}"}
    allowed = httpx.post(
        f"{world.analytics_url}/internal/query", json=body, headers=headers, timeout=10
    )
    assert allowed.status_code == 200, allowed.text


def test_deleted_links_keep_their_history(world: World) -> None:
    before = world.breakdown({"metrics": ["clicks"], "dimensions": ["link"]})
    gamma = world.codes["gamma"]
    with world.client() as client:
        assert client.delete(f"/api/v1/links/{gamma}").status_code == 204
    assert world.breakdown({"metrics": ["clicks"], "dimensions": ["link"]}) == before
    assert before[gamma] == [3]


@pytest.mark.parametrize("reached", ["analytics", "clickhouse"])
def test_analytics_or_clickhouse_unreachable_is_a_503(
    world: World, start_edge: Callable[..., Edge], tmp_path: Path, reached: str
) -> None:
    closed = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    if reached == "analytics":  # the embedded engine, asked through the analytics port
        env = {"CLICKHOUSE_URL": f"chdb://{tmp_path / 'nowhere'}", "ANALYTICS_URL": closed}
    else:  # a ClickHouse server, asked directly by the edge
        env = {"CLICKHOUSE_URL": closed}
    down = start_edge(workers=1, **env)
    with httpx.Client(base_url=down.url, timeout=30) as client:
        response = client.post(
            QUERY, json={"metrics": ["clicks"]}, headers={"Authorization": f"Bearer {world.key}"}
        )
    assert response.status_code == 503, response.text
    assert response.headers["content-type"] == "application/problem+json"


def test_migration_backfills_the_rollups_from_stored_clicks(tmp_path: Path) -> None:
    """Clicks stored before the rollups existed are in them once the migration has run (in a
    child: one chdb data path per process)."""
    script = f"""
import time
from analytics.enrich import Enricher
from analytics.writer import ClickHouseWriter, batch_token
from linkedge import analyticssql
from linkedge.analyticsquery import parse
from linkedge.events import Click, ClickIds
from linkedge.migrate import migrate_clickhouse
ids, now = ClickIds(), int(time.time() * 1000)
rows = [Enricher(b"s").row(Click(id=ids.new(now), ts_ms=now, link_id=5, account_id=3, code="bf",
        target="t", ip="8.8.8.8", bot="" if i % 3 else "crawler")) for i in range(9)]
writer = ClickHouseWriter("chdb://{tmp_path / "ch"}")
client = writer._get()
for statement in ("DROP VIEW clicks_by_hour_mv", "DROP VIEW clicks_by_day_mv",
                  "DROP TABLE clicks_by_hour", "DROP TABLE clicks_by_day"):
    client.command(statement)
client.command("ALTER TABLE schema_migrations DELETE WHERE version = 2 SETTINGS mutations_sync = 1")
writer.insert(rows, batch_token(["0/1-0"]))
print(migrate_clickhouse("", client))
writer.insert(rows, batch_token(["0/2-0"]))  # the same clicks again, after the views exist
for date_range in ("7d", "24h"):
    query = parse({{"metrics": ["clicks", "human_clicks", "visitors"], "date_range": date_range}})
    answer = analyticssql.run(client, query, analyticssql.Scope(3), timeout_s=10)
    print(answer["meta"]["source"], answer["results"][0]["metrics"])
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
        cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.splitlines() == [
        "['0002_rollups.sql']",
        "clicks_by_day [9, 6, 1]",
        "clicks_by_hour [9, 6, 1]",
    ]
