"""The analytics bench's fixed dashboard queries, timed through the HTTP API, and their checks.

The bodies are those the dashboard sends (``edge/dashboard/overview.js``): a series of human and
bot clicks by day (or minute), and panels of clicks, human clicks and visitors by one dimension,
ten rows, most clicks first. Ranges are explicit (the 30 UTC days ending today, the 24 whole hours
ending with the current one) so that the bench's direct counts cover exactly the same clicks.

The checks make a wrong answer fail the bench: every answer non-empty; a series' human and bot
clicks add up to the clicks counted directly in ``clicks`` (``uniqExact(click_id)``) and from the
generated rows; a breakdown over all its values (one untimed query, ``limit`` 10,000) adds up to
the same total, and its first ten rows are the timed panel's.
"""

from __future__ import annotations

import dataclasses
import math
import time
from datetime import date, datetime
from typing import Any

import httpx

QUERY = "/api/v1/analytics/query"
SLOW_MS = 1000.0  # a query slower than this is timed fewer times (see time_queries)
PANEL_METRICS = ["clicks", "human_clicks", "visitors"]
SERIES_METRICS = ["human_clicks", "bot_clicks"]
PANELS = {
    "countries": "country",
    "devices": "device",
    "browsers": "browser",
    "referrers": "referrer_host",
    "UTM sources": "utm_source",
}


@dataclasses.dataclass(frozen=True)
class DashboardQuery:
    name: str
    body: dict[str, Any]
    check: str  # the name of the direct count its total must equal
    link_code: str = ""  # set: GET /api/v1/links/{code}/analytics with the body as parameters


@dataclasses.dataclass
class Timing:
    query: DashboardQuery
    samples_ms: list[float]
    answer: dict[str, Any]

    @property
    def source(self) -> str:
        return str(self.answer.get("meta", {}).get("source", "?"))

    def percentile(self, q: float) -> float:
        return percentile(self.samples_ms, q)


def percentile(values: list[float], q: float) -> float:
    """The nearest-rank percentile: the smallest value with at least ``q``% of values at or below."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


def dashboard_queries(
    days: tuple[date, date], hours: tuple[datetime, datetime], link_code: str
) -> list[DashboardQuery]:
    """The fixed set: series of the account and of one link, five panels, a minute series."""
    month = [day.isoformat() for day in days]
    base = {"date_range": month, "timezone": "UTC"}
    series = {**base, "metrics": SERIES_METRICS, "dimensions": ["time:day"]}
    queries = [
        DashboardQuery("daily series, account, 30 days", series, "account 30d"),
        DashboardQuery(
            "daily series, one link, 30 days",
            {**series, "filters": [["is", "link", [link_code]]]},
            "link 30d",
        ),
        DashboardQuery(
            "same, GET /links/{code}/analytics", series, "link 30d", link_code=link_code
        ),
    ]
    for title, dimension in PANELS.items():
        body = {
            **base,
            "metrics": PANEL_METRICS,
            "dimensions": [dimension],
            "order_by": [["clicks", "desc"]],
            "limit": 10,
        }
        queries.append(DashboardQuery(f"top {title}, 30 days", body, "account 30d"))
    minute = {
        "date_range": [moment.isoformat() for moment in hours],
        "timezone": "UTC",
        "metrics": SERIES_METRICS,
        "dimensions": ["time:minute"],
    }
    queries.append(DashboardQuery("minute series, account, 24 hours", minute, "account 24h"))
    return queries


def post(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post(QUERY, json=body)
    if response.status_code != 200:
        raise RuntimeError(f"{QUERY} answered {response.status_code}: {response.text[:300]}")
    answer: dict[str, Any] = response.json()
    return answer


def ask(client: httpx.Client, query: DashboardQuery) -> dict[str, Any]:
    """The answer to ``query``: posted, or as the per-link route's query parameters."""
    if not query.link_code:
        return post(client, query.body)
    params = {
        name: ",".join(value) if isinstance(value, list) else value
        for name, value in query.body.items()
    }
    path = f"/api/v1/links/{query.link_code}/analytics"
    response = client.get(path, params=params)
    if response.status_code != 200:
        raise RuntimeError(f"{path} answered {response.status_code}: {response.text[:300]}")
    answer: dict[str, Any] = response.json()
    return answer


def time_queries(
    client: httpx.Client, queries: list[DashboardQuery], *, runs: int, warmups: int, slow_runs: int
) -> list[Timing]:
    """Each query ``warmups`` times untimed, then ``runs`` times timed (wall clock of the request);
    ``slow_runs`` times instead when the last warm-up took longer than ``SLOW_MS``. A query that
    fails (a 503 past the API's timeout) is timed until it fails, its error kept in the answer."""
    timings = []
    for query in queries:
        took = 0.0
        for _ in range(warmups):
            started = time.perf_counter()
            _attempt(client, query)
            took = (time.perf_counter() - started) * 1000
        samples, answer = [], {}
        for _ in range(slow_runs if took > SLOW_MS else runs):
            started = time.perf_counter()
            answer = _attempt(client, query)
            samples.append((time.perf_counter() - started) * 1000)
        timings.append(Timing(query, samples, answer))
    return timings


def _attempt(client: httpx.Client, query: DashboardQuery) -> dict[str, Any]:
    try:
        return ask(client, query)
    except (RuntimeError, httpx.HTTPError) as exc:
        return {"error": str(exc)[:200], "results": []}


def _total(answer: dict[str, Any], metrics: list[str]) -> int:
    return sum(sum(r["metrics"][: len(metrics)]) for r in answer["results"])


def check(
    client: httpx.Client, timings: list[Timing], expected: dict[str, tuple[int, int]]
) -> list[str]:
    """What is wrong with the answers; ``expected``: per check name, (generated, direct) counts."""
    problems = []
    for timing in timings:
        query, answer = timing.query, timing.answer
        name = query.name
        generated, direct = expected[query.check]
        if generated != direct:
            problems.append(
                f"{query.check}: {generated:,} clicks generated, uniqExact counts {direct:,}"
            )
        if "error" in answer:
            problems.append(f"{name}: {answer['error']}")
            continue
        results = answer.get("results") or []
        if not results or not any(any(r["metrics"]) for r in results):
            problems.append(f"{name}: empty answer")
            continue
        if query.body["dimensions"][0].startswith("time:"):
            total = _total(answer, SERIES_METRICS)
            if total != direct:
                problems.append(
                    f"{name}: the series adds up to {total:,} clicks, uniqExact counts {direct:,}"
                )
            continue
        everything = post(client, {**query.body, "limit": 10_000})
        total = sum(r["metrics"][0] for r in everything["results"])
        if total != direct:
            problems.append(
                f"{name}: its values add up to {total:,} clicks, uniqExact counts {direct:,}"
            )
        if everything["results"][: len(results)] != results:
            problems.append(
                f"{name}: the top {len(results)} differ from the full breakdown's first rows"
            )
        clicks = [r["metrics"][0] for r in results]
        if clicks != sorted(clicks, reverse=True):
            problems.append(f"{name}: not ordered by clicks")
    return problems
