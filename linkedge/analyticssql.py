"""An analytics ``Query`` as ClickHouse SQL, run, and shaped into the API's answer.

The SQL text comes only from the fixed maps below; every value the client sent (filter values,
the time zone, the range) and the account are bound parameters (``{name:Type}``, bound by the
server for both ``chdb://`` and ``http(s)://``). Every statement is restricted to
``account_id = {account:UInt64}``, and to one link when the scope names one.

Where the rows come from (``source``): the rollups of ``schema/clickhouse/0002_rollups.sql`` when
the query fits one, else the raw ``clicks``. A rollup holds, per account, hour (or UTC day) and one
dimension value, ``uniqExact`` states of click ids, human click ids and visitor hashes, so every
metric it gives is exact, as on ``clicks``. It fits an account-wide query (no link scope, no
``link`` or ``tag``) naming at most one of ``ROLLUP_DIMENSIONS`` in its dimensions and filters
together, no ``time:minute``, over a range on its bucket boundaries: whole UTC hours with a time
zone whose offset is whole hours (``clicks_by_hour``), whole UTC days in UTC (``clicks_by_day``).
A query of one link reads ``clicks`` through its sort key ``(link_id, ts)``: only that link's rows.

``tag``: tags live in Postgres, so the caller passes the account's ``link id -> tags`` (tagged
links only) in ``Scope.tags``; it is bound as two arrays and read as a map of the click's link id.
A click of a link with two tags counts under each tag; one of an untagged link under ``""``.
"""

from __future__ import annotations

import csv
import dataclasses
import io
from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from linkedge.analyticsquery import Query

ROLLUP_DIMENSIONS = (
    "country", "device", "os", "browser", "referrer_host", "utm_source", "utm_medium",
    "utm_campaign", "bot_reason",
)  # fmt: skip
RAW_COLUMNS = {
    "link": "code",
    "country": "country",
    "device": "device_type",
    "os": "os",
    "browser": "browser",
    "referrer_host": "referrer_host",
    "referrer": "referrer",
    "utm_source": "utm_source",
    "utm_medium": "utm_medium",
    "utm_campaign": "utm_campaign",
    "utm_term": "utm_term",
    "utm_content": "utm_content",
    "bot_reason": "bot_reason",
    "host": "host",
}
RAW_METRICS = {
    "clicks": "uniqExact(click_id)",
    "human_clicks": "uniqExactIf(click_id, is_bot = 0)",
    "bot_clicks": "uniqExactIf(click_id, is_bot = 1)",
    "visitors": "uniqExact(visitor_hash)",
}
ROLLUP_METRICS = {
    "clicks": "uniqExactMerge(clicks)",
    "human_clicks": "uniqExactMerge(human_clicks)",
    "bot_clicks": "uniqExactMerge(clicks) - uniqExactMerge(human_clicks)",
    "visitors": "uniqExactMerge(visitors)",
}
TAGS = "mapFromArrays({tag_links:Array(UInt64)}, {tag_lists:Array(Array(String))})[link_id]"
SERIES_ROWS = 200_000  # most buckets one time series may read (an "all" range)
_TZ = "{tz:String}"


@dataclasses.dataclass(frozen=True, slots=True)
class Scope:
    """Whose clicks a query may read: one account, optionally one of its links."""

    account_id: int
    link_id: int | None = None
    tags: Sequence[tuple[int, Sequence[str]]] = ()  # (link id, tags) of the account's tagged links


@dataclasses.dataclass(frozen=True, slots=True)
class Source:
    table: str
    time_column: str
    rollup: bool


RAW = Source("clicks", "ts", rollup=False)
BY_HOUR = Source("clicks_by_hour", "hour", rollup=True)
BY_DAY = Source("clicks_by_day", "day", rollup=True)


@dataclasses.dataclass(frozen=True, slots=True)
class Statement:
    sql: str
    parameters: dict[str, Any]
    source: Source


def _whole_hours(query: Query) -> bool:
    tz = query.tz
    offsets = [moment.astimezone(tz).utcoffset() for moment in (query.start, query.end)]
    return all(o is not None and o.total_seconds() % 3600 == 0 for o in offsets)


def choose_source(query: Query, scope: Scope) -> Source:
    """The smallest table that answers ``query`` exactly."""
    named = set(query.dimensions) | {f.dimension for f in query.filters}
    plain = {name for name in named if not name.startswith("time:")}
    if scope.link_id is not None or query.grain == "minute" or len(plain) > 1:
        return RAW
    if not plain <= set(ROLLUP_DIMENSIONS):
        return RAW
    start, end = query.start.timestamp(), query.end.timestamp()
    if query.timezone == "UTC" and query.grain != "hour" and start % 86_400 == end % 86_400 == 0:
        return BY_DAY
    if start % 3600 == end % 3600 == 0 and _whole_hours(query):
        return BY_HOUR
    return RAW


def _time_expression(grain: str, source: Source) -> str:
    column = source.time_column
    if source is BY_DAY:  # a Date in UTC, used only for UTC queries of days, weeks and months
        return {"day": f"toString({column})", "week": f"toString(toMonday({column}))"}.get(
            grain, f"toString(toStartOfMonth({column}))"
        )
    return {
        "minute": f"toUnixTimestamp(toStartOfMinute({column}, {_TZ}))",
        "hour": f"toUnixTimestamp(toStartOfHour({column}, {_TZ}))",
        "day": f"toString(toDate({column}, {_TZ}))",
        "week": f"toString(toMonday({column}, {_TZ}))",
        "month": f"toString(toStartOfMonth({column}, {_TZ}))",
    }[grain]


def _column(dimension: str, source: Source) -> str:
    if dimension == "tag":
        return TAGS
    return "value" if source.rollup else RAW_COLUMNS[dimension]


def _dimension_expression(dimension: str, source: Source) -> str:
    if dimension.startswith("time:"):
        return _time_expression(dimension[5:], source)
    if dimension == "tag":
        return f"arrayJoin(if(empty({TAGS}), [''], {TAGS}))"
    return _column(dimension, source)


def _filter_expression(op: str, dimension: str, param: str, source: Source) -> str:
    values = f"{{{param}:Array(String)}}"
    column = _column(dimension, source)
    if dimension == "tag":
        if op == "contains":
            return f"arrayExists(t -> multiSearchAnyCaseInsensitiveUTF8(t, {values}), {column})"
        matched = f"hasAny({column}, {values})"
    elif op == "contains":
        return f"multiSearchAnyCaseInsensitiveUTF8({column}, {values})"
    else:
        matched = f"has({values}, {column})"
    return matched if op == "is" else f"NOT {matched}"


def _time_range(source: Source) -> str:
    if source is RAW:
        lower, upper = (f"fromUnixTimestamp64Milli({{{p}:Int64}}, 'UTC')" for p in ("lo", "hi"))
        return f"ts >= {lower} AND ts < {upper}"
    if source is BY_HOUR:
        return "hour >= toDateTime({lo_s:Int64}, 'UTC') AND hour < toDateTime({hi_s:Int64}, 'UTC')"
    lower, upper = (f"toDate(toDateTime({{{p}:Int64}}, 'UTC'))" for p in ("lo_s", "hi_s"))
    return f"day >= {lower} AND day < {upper}"


def _order(query: Query, aliases: dict[str, str]) -> list[str]:
    given = [f"{aliases[name]} {direction.upper()}" for name, direction in query.order_by]
    if not query.order_by:
        time = [aliases[d] for d in query.dimensions if d.startswith("time:")]
        given = [f"{alias} ASC" for alias in time] or [f"{aliases[query.metrics[0]]} DESC"]
    named = {clause.split(" ")[0] for clause in given}
    return given + [f"{aliases[d]} ASC" for d in query.dimensions if aliases[d] not in named]


def build(query: Query, scope: Scope) -> Statement:
    """The one SELECT answering ``query`` within ``scope``, and its parameters."""
    source = choose_source(query, scope)
    metrics = ROLLUP_METRICS if source.rollup else RAW_METRICS
    aliases = {name: f"m{i}" for i, name in enumerate(query.metrics)}
    aliases.update({name: f"d{i}" for i, name in enumerate(query.dimensions)})
    select = [f"{_dimension_expression(d, source)} AS {aliases[d]}" for d in query.dimensions]
    select += [f"{metrics[m]} AS {aliases[m]}" for m in query.metrics]
    start_ms, end_ms = (int(moment.timestamp() * 1000) for moment in (query.start, query.end))
    parameters: dict[str, Any] = {
        "account": scope.account_id,
        "tz": query.timezone,
        "lo": start_ms,
        "hi": end_ms,
        "lo_s": start_ms // 1000,
        "hi_s": end_ms // 1000,
    }
    where = ["account_id = {account:UInt64}", _time_range(source)]
    if scope.link_id is not None:
        where.append("link_id = {link:UInt64}")
        parameters["link"] = scope.link_id
    if source.rollup:
        named = (*query.dimensions, *(f.dimension for f in query.filters))
        rolled = [name for name in named if name in ROLLUP_DIMENSIONS]
        where.append("dimension = {dimension:String}")
        parameters["dimension"] = rolled[0] if rolled else ""
    for index, item in enumerate(query.filters):
        where.append(_filter_expression(item.op, item.dimension, f"f{index}", source))
        parameters[f"f{index}"] = list(item.values)
    if "tag" in query.dimensions or any(f.dimension == "tag" for f in query.filters):
        parameters["tag_links"] = [link_id for link_id, _ in scope.tags]
        parameters["tag_lists"] = [list(tags) for _, tags in scope.tags]
    sql = f"SELECT {', '.join(select)}"
    if query.dimensions and not query.is_series:
        sql += ", count() OVER () AS total_rows"
    sql += f"\nFROM {source.table}\nWHERE {' AND '.join(where)}"
    if query.dimensions:
        sql += f"\nGROUP BY {', '.join(aliases[d] for d in query.dimensions)}"
        sql += f"\nORDER BY {', '.join(_order(query, aliases))}"
    # limit and offset are integers checked by parse(), never text from the client.
    if query.is_series:
        sql += f"\nLIMIT {SERIES_ROWS:d}"
    elif query.dimensions:
        sql += f"\nLIMIT {query.limit:d} OFFSET {query.offset:d}"
    return Statement(sql, parameters, source)


def _format_bucket(grain: str | None, key: Any, query: Query) -> str:
    if grain in ("minute", "hour"):
        return datetime.fromtimestamp(int(key), query.tz).isoformat()
    return str(key)


def _series_keys(query: Query, first: Any) -> list[Any]:
    """Every bucket key of the range in order (epoch seconds or ISO dates), from ``first`` when
    the range is "all"."""
    grain, tz = query.grain, query.tz
    start = query.start
    if query.all_time:
        if first is None:
            return []
        start = (
            datetime.fromtimestamp(int(first), UTC)
            if grain in ("minute", "hour")
            else datetime.combine(date.fromisoformat(first), datetime.min.time(), tzinfo=tz)
        )
    if grain in ("minute", "hour"):
        step = 60 if grain == "minute" else 3600
        local = start.astimezone(tz).replace(second=0, microsecond=0)
        floor = local.replace(minute=0) if grain == "hour" else local
        return list(range(int(floor.timestamp()), int(query.end.timestamp()), step))
    day = start.astimezone(tz).date()
    last = (query.end - timedelta(microseconds=1)).astimezone(tz).date()
    if grain == "week":
        day -= timedelta(days=day.weekday())
    elif grain == "month":
        day = day.replace(day=1)
    keys = []
    while day <= last:
        keys.append(day.isoformat())
        if grain == "day":
            day += timedelta(days=1)
        elif grain == "week":
            day += timedelta(days=7)
        else:
            day = (day + timedelta(days=32)).replace(day=1)
    return keys


def _series(query: Query, rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """A time series with every bucket of the range, zeros where there were no clicks, sorted,
    offset and limited as asked."""
    found = {row[0]: [int(value) for value in row[1:]] for row in rows}
    keys = _series_keys(query, min(found) if found else None)
    zeros = [0] * len(query.metrics)
    filled = [[key, *found.get(key, zeros)] for key in keys]
    names = [*query.dimensions, *query.metrics]
    for name, direction in reversed(query.order_by):
        filled.sort(key=lambda row: row[names.index(name)], reverse=direction == "desc")
    return filled


def shape(query: Query, statement: Statement, found: list[Sequence[Any]]) -> dict[str, Any]:
    """The API's answer: results and meta."""
    count = len(query.dimensions)
    rows: Sequence[Sequence[Any]] = found
    if query.is_series:
        rows = _series(query, rows)
        total = len(rows)
        rows = rows[query.offset : query.offset + query.limit]
    else:
        total = int(rows[0][-1]) if rows and count else len(rows)
        rows = [row[:-1] for row in rows] if count else rows
    grain = query.grain
    results = []
    for row in rows:
        dimensions = [
            _format_bucket(grain, value, query) if name.startswith("time:") else value
            for name, value in zip(query.dimensions, row[:count], strict=True)
        ]
        results.append({"dimensions": dimensions, "metrics": [int(v) for v in row[count:]]})
    tz = query.tz
    return {
        "results": results,
        "meta": {
            "metrics": list(query.metrics),
            "dimensions": list(query.dimensions),
            "date_range": [
                moment.astimezone(tz).isoformat() for moment in (query.start, query.end)
            ],
            "timezone": query.timezone,
            "total_rows": total,
            "source": statement.source.table,
        },
    }


def run(client: Any, query: Query, scope: Scope, *, timeout_s: float) -> dict[str, Any]:
    """Run ``query`` on a clickhouse-connect ``client`` (blocking: call it in a thread)."""
    statement = build(query, scope)
    result = client.query(
        statement.sql,
        parameters=statement.parameters,
        settings={"max_execution_time": max(1, int(timeout_s))},
    )
    return shape(query, statement, list(result.result_rows))


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def to_csv(answer: dict[str, Any]) -> str:
    """The answer as CSV: a header of dimension and metric names, a line per result. A text cell
    that a spreadsheet would run as a formula gets a leading ``'``."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    meta = answer["meta"]
    writer.writerow([*meta["dimensions"], *meta["metrics"]])
    for result in answer["results"]:
        cells = [
            f"'{value}" if isinstance(value, str) and value.startswith(_FORMULA_START) else value
            for value in result["dimensions"]
        ]
        writer.writerow([*cells, *result["metrics"]])
    return out.getvalue()
