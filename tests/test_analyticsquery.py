"""The analytics query's checks, ranges and SQL, without a server (``linkedge.analyticsquery``,
``linkedge.analyticssql``); the queries themselves run in tests/test_analytics_query.py."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from linkedge import analyticssql
from linkedge.analyticsquery import QueryError, parse

NOW = datetime(2026, 3, 29, 12, 30, tzinfo=UTC)  # Europe/Paris went to summer time at 01:00 UTC


def ranges(body: dict[str, Any]) -> tuple[str, str]:
    query = parse({"metrics": ["clicks"], **body}, NOW)
    return query.start.isoformat(), query.end.isoformat()


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"date_range": "today"}, ("2026-03-29T00:00:00+00:00", "2026-03-30T00:00:00+00:00")),
        (
            {"date_range": "today", "timezone": "Europe/Paris"},  # a 23-hour day
            ("2026-03-29T00:00:00+01:00", "2026-03-30T00:00:00+02:00"),
        ),
        (
            {"date_range": "7d", "timezone": "Pacific/Kiritimati"},  # already March 30 there
            ("2026-03-24T00:00:00+14:00", "2026-03-31T00:00:00+14:00"),
        ),
        ({"date_range": "24h"}, ("2026-03-28T13:00:00+00:00", "2026-03-29T13:00:00+00:00")),
        ({"date_range": "month"}, ("2026-03-01T00:00:00+00:00", "2026-04-01T00:00:00+00:00")),
        ({"date_range": "12mo"}, ("2025-04-01T00:00:00+00:00", "2026-04-01T00:00:00+00:00")),
        (
            {"date_range": ["2025-12-31", "2026-01-01"], "timezone": "America/New_York"},
            ("2025-12-31T00:00:00-05:00", "2026-01-02T00:00:00-05:00"),
        ),
        (
            {"date_range": ["2026-01-01T10:00:00Z", "2026-01-01T12:30:00+01:00"]},
            ("2026-01-01T10:00:00+00:00", "2026-01-01T12:30:00+01:00"),
        ),
    ],
)
def test_date_ranges_resolve_in_the_time_zone(
    body: dict[str, Any], expected: tuple[str, str]
) -> None:
    assert ranges(body) == expected


def test_24h_is_24_real_hours_across_a_clock_change() -> None:
    query = parse({"metrics": ["clicks"], "date_range": "24h", "timezone": "Europe/Paris"}, NOW)
    assert query.end - query.start == timedelta(hours=24)


@pytest.mark.parametrize(
    "body",
    [
        {"metrics": ["clicks", "visitors"], "dimensions": ["time:day"], "date_range": "7d"},
        {"metrics": ["clicks"], "dimensions": ["time:month"], "date_range": "all"},
        {
            "metrics": ["bot_clicks"],
            "dimensions": ["country", "tag"],
            "filters": [["contains", "referrer", ["a", "b"]], ["is_not", "tag", ["x"]]],
            "date_range": ["2026-01-01", "2026-01-31"],
            "timezone": "Asia/Kolkata",
            "order_by": [["tag", "asc"]],
            "limit": 5,
            "offset": 10,
        },
    ],
)
def test_the_canonical_form_parses_back_to_the_same_query(body: dict[str, Any]) -> None:
    query = parse(body, NOW)
    assert parse(query.canonical(), NOW) == query


def test_every_fault_is_listed_by_field() -> None:
    with pytest.raises(QueryError) as caught:
        parse(
            {
                "metrics": ["clicks", "clicks"],
                "dimensions": ["time:day", "country", "device", "os"],
                "timezone": "UTC+2",
                "limit": "10",
                "extra": True,
            },
            NOW,
        )
    fields = [error["field"] for error in caught.value.errors]
    assert fields == ["extra", "metrics", "dimensions", "timezone", "limit"]


def test_series_limits() -> None:
    minute = {"metrics": ["clicks"], "dimensions": ["time:minute"]}
    assert parse({**minute, "date_range": "7d"}, NOW).limit == 7 * 24 * 60  # a series: all of it
    with pytest.raises(QueryError, match="time:minute"):
        parse({**minute, "date_range": ["2026-01-01", "2026-01-08"]}, NOW)
    with pytest.raises(QueryError, match="buckets"):
        parse({"metrics": ["clicks"], "dimensions": ["time:hour"],
               "date_range": ["2020-01-01", "2026-01-01"]}, NOW)  # fmt: skip
    assert parse({"metrics": ["clicks"], "dimensions": ["country"]}, NOW).limit == 100


def test_client_text_never_reaches_the_sql() -> None:
    """Values, the time zone and the range are bound parameters; names map to fixed columns."""
    hostile = "x') OR 1=1 --"
    query = parse(
        {
            "metrics": ["clicks", "visitors"],
            "dimensions": ["referrer", "tag", "time:hour"],
            "filters": [["is", "utm_source", [hostile]], ["contains", "tag", [hostile]]],
            "timezone": "America/St_Johns",
            "order_by": [["visitors", "desc"]],
            "date_range": "24h",
        },
        NOW,
    )
    statement = analyticssql.build(query, analyticssql.Scope(7, tags=[(1, [hostile])]))
    assert hostile not in statement.sql and "St_Johns" not in statement.sql
    assert "account_id = {account:UInt64}" in statement.sql
    assert statement.parameters["account"] == 7
    assert statement.parameters["f0"] == [hostile] and statement.parameters["tag_lists"] == [
        [hostile]
    ]
    assert statement.source is analyticssql.RAW


@pytest.mark.parametrize(
    ("body", "link_id", "source"),
    [
        ({"dimensions": ["time:day"], "date_range": "30d"}, None, "clicks_by_day"),
        (
            {"dimensions": ["country"], "date_range": "7d", "timezone": "Europe/Paris"},
            None,
            "clicks_by_hour",
        ),
        ({"dimensions": ["time:hour"], "date_range": "24h"}, None, "clicks_by_hour"),
        (
            {"filters": [["is", "device", ["mobile"]]], "dimensions": ["device"]},
            None,
            "clicks_by_day",
        ),
        ({"dimensions": ["country", "device"]}, None, "clicks"),
        ({"dimensions": ["time:minute"], "date_range": "today"}, None, "clicks"),
        ({"dimensions": ["link"]}, None, "clicks"),
        ({"dimensions": ["country"], "timezone": "Asia/Kolkata"}, None, "clicks"),
        ({"date_range": ["2026-01-01T00:30:00Z", "2026-01-02T00:00:00Z"]}, None, "clicks"),
        ({"dimensions": ["time:day"], "date_range": "30d"}, 42, "clicks"),
    ],
)
def test_a_rollup_answers_when_the_query_fits_it(
    body: dict[str, Any], link_id: int | None, source: str
) -> None:
    query = parse({"metrics": ["clicks"], **body}, NOW)
    assert analyticssql.choose_source(query, analyticssql.Scope(1, link_id)).table == source
