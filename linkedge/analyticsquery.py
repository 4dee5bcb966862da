"""An analytics query, checked: what ``POST /api/v1/analytics/query`` accepts, as a ``Query``.

``parse`` turns a JSON body into a frozen ``Query`` or raises ``QueryError`` listing every field at
fault (``[{"field", "message"}]``, the shape of the API's 422). Names are checked against the fixed
lists below; nothing a client sends ever becomes SQL text (``linkedge.analyticssql`` maps names to
columns and passes values as bound parameters).

Time: ``date_range`` resolves to a half-open interval ``[start, end)`` of aware datetimes. Named
ranges and dates are whole days (``24h``: whole hours) in ``timezone``, so ``today`` is midnight to
midnight there; two RFC 3339 datetimes are taken as they are. ``Query.canonical()`` is the checked
query with its range resolved, which ``parse`` reads back to the same ``Query``: that is what the
edge sends to analytics.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import zoneinfo
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

METRICS = ("clicks", "human_clicks", "bot_clicks", "visitors")
TIME_GRAINS = ("minute", "hour", "day", "week", "month")
DIMENSIONS = (
    "link", "tag", "country", "device", "os", "browser", "referrer_host", "referrer",
    "utm_source", "utm_medium", "utm_campaign", "utm_term", "utm_content", "bot_reason", "host",
)  # fmt: skip
TIME_DIMENSIONS = tuple(f"time:{grain}" for grain in TIME_GRAINS)
FILTER_OPS = ("is", "is_not", "contains")
NAMED_RANGES = ("today", "24h", "7d", "30d", "month", "12mo", "all")
FIELDS = (
    "metrics",
    "dimensions",
    "filters",
    "date_range",
    "timezone",
    "order_by",
    "limit",
    "offset",
)

MAX_DIMENSIONS = 3
MAX_FILTERS = 20
MAX_FILTER_VALUES = 100
MAX_VALUE_LENGTH = 2048
DEFAULT_LIMIT = 100
MAX_LIMIT = 10_000
MAX_OFFSET = 1_000_000
MAX_MINUTE_SPAN = timedelta(days=7)
MAX_BUCKETS = 7 * 24 * 60  # of a time series (7 days of minutes), all answered by default
ALL_TIME_START = datetime(1970, 1, 1, tzinfo=UTC)

_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_DATETIME = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?(Z|[+-][0-9]{2}:[0-9]{2})"
)


class QueryError(ValueError):
    """The query is refused; ``errors`` names each field at fault and why."""

    def __init__(self, errors: list[dict[str, str]]) -> None:
        super().__init__("; ".join(f"{e['field']}: {e['message']}" for e in errors[:5]))
        self.errors = errors


class _Invalid(Exception):
    def __init__(self, field: str, message: str) -> None:
        self.field = field
        self.message = message


@dataclasses.dataclass(frozen=True, slots=True)
class Filter:
    op: str
    dimension: str
    values: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class Query:
    metrics: tuple[str, ...]
    dimensions: tuple[str, ...]
    filters: tuple[Filter, ...]
    start: datetime  # inclusive, aware
    end: datetime  # exclusive, aware
    timezone: str
    order_by: tuple[tuple[str, str], ...]
    limit: int
    offset: int
    all_time: bool = False  # date_range "all": a time series starts at the first click

    @property
    def grain(self) -> str | None:
        """The time dimension's grain (``day`` for ``time:day``), None without one."""
        for name in self.dimensions:
            if name.startswith("time:"):
                return name[5:]
        return None

    @property
    def tz(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    @property
    def is_series(self) -> bool:
        """A time dimension alone: empty buckets are filled with zeros."""
        return len(self.dimensions) == 1 and self.grain is not None

    def canonical(self) -> dict[str, Any]:
        """The query as JSON with its range resolved; ``parse`` of it gives this query back."""
        return {
            "metrics": list(self.metrics),
            "dimensions": list(self.dimensions),
            "filters": [[f.op, f.dimension, list(f.values)] for f in self.filters],
            "date_range": "all"
            if self.all_time
            else [self.start.isoformat(), self.end.isoformat()],
            "timezone": self.timezone,
            "order_by": [list(pair) for pair in self.order_by],
            "limit": self.limit,
            "offset": self.offset,
        }


@functools.cache
def _zones() -> frozenset[str]:
    return frozenset(zoneinfo.available_timezones())


def _names(value: object, field: str, allowed: tuple[str, ...], low: int, high: int) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise _Invalid(field, "must be a list of strings")
    if not low <= len(value) <= high:
        raise _Invalid(field, f"give {low} to {high}")
    for item in value:
        if item not in allowed:
            raise _Invalid(
                field, f"unknown {field[:-1]} {item[:64]!r}; one of {', '.join(allowed)}"
            )
    if len(set(value)) != len(value):
        raise _Invalid(field, "names a value twice")
    return value


def _dimensions(value: object) -> list[str]:
    names = _names(value, "dimensions", TIME_DIMENSIONS + DIMENSIONS, 0, MAX_DIMENSIONS)
    if sum(name.startswith("time:") for name in names) > 1:
        raise _Invalid("dimensions", "at most one time dimension")
    return names


def _filter(value: object, field: str) -> Filter:
    if not isinstance(value, list) or len(value) != 3:
        raise _Invalid(field, "a filter is [op, dimension, [values...]]")
    op, dimension, values = value
    if op not in FILTER_OPS:
        raise _Invalid(field, f"op must be one of {', '.join(FILTER_OPS)}")
    if dimension not in DIMENSIONS:
        raise _Invalid(field, f"dimension must be one of {', '.join(DIMENSIONS)}")
    if not isinstance(values, list) or not 1 <= len(values) <= MAX_FILTER_VALUES:
        raise _Invalid(field, f"values must be a list of 1 to {MAX_FILTER_VALUES} strings")
    if not all(isinstance(v, str) and len(v) <= MAX_VALUE_LENGTH for v in values):
        raise _Invalid(field, f"each value is a string of at most {MAX_VALUE_LENGTH} characters")
    return Filter(op, dimension, tuple(values))


def _filters(value: object) -> list[Filter]:
    if not isinstance(value, list) or len(value) > MAX_FILTERS:
        raise _Invalid("filters", f"must be a list of at most {MAX_FILTERS} filters")
    return [_filter(item, f"filters[{i}]") for i, item in enumerate(value)]


def _timezone(value: object) -> str:
    if not isinstance(value, str) or value not in _zones():
        raise _Invalid("timezone", "must be an IANA time zone name, e.g. UTC or Europe/Paris")
    return value


def _midnight(day: date, tz: zoneinfo.ZoneInfo) -> datetime:
    return datetime.combine(day, time(0), tzinfo=tz)


def _month_start(day: date, months_back: int = 0) -> date:
    index = day.year * 12 + day.month - 1 - months_back
    return date(index // 12, index % 12 + 1, 1)


def _named_range(name: str, tz: zoneinfo.ZoneInfo, now: datetime) -> tuple[datetime, datetime]:
    today = now.astimezone(tz).date()
    tomorrow = _midnight(today + timedelta(days=1), tz)
    if name == "24h":
        hour = now.astimezone(tz).replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        return hour - timedelta(hours=23), hour + timedelta(hours=1)  # in UTC: 24 real hours
    if name in ("today", "7d", "30d"):
        days = {"today": 1, "7d": 7, "30d": 30}[name]
        return _midnight(today - timedelta(days=days - 1), tz), tomorrow
    next_month = _midnight(_month_start(_month_start(today) + timedelta(days=31)), tz)
    if name == "month":
        return _midnight(_month_start(today), tz), next_month
    if name == "12mo":
        return _midnight(_month_start(today, 11), tz), next_month
    return ALL_TIME_START, tomorrow  # "all"


def _bound(text: str, tz: zoneinfo.ZoneInfo) -> tuple[datetime, bool]:
    """A date (midnight in ``tz``; True) or an RFC 3339 datetime (False)."""
    if _DATE.fullmatch(text):
        return _midnight(date.fromisoformat(text), tz), True
    if _DATETIME.fullmatch(text):
        return datetime.fromisoformat(text), False
    raise ValueError(text)


def _date_range(
    value: object, tz: zoneinfo.ZoneInfo, now: datetime
) -> tuple[datetime, datetime, bool]:
    if isinstance(value, str) and value in NAMED_RANGES:
        start, end = _named_range(value, tz, now)
        return start, end, value == "all"
    message = (
        f"one of {', '.join(NAMED_RANGES)}, two dates [YYYY-MM-DD, YYYY-MM-DD] (inclusive) "
        "or two RFC 3339 datetimes with offsets [from, to)"
    )
    if not (isinstance(value, list) and len(value) == 2 and all(isinstance(v, str) for v in value)):
        raise _Invalid("date_range", message)
    try:
        (start, start_is_date), (end, end_is_date) = (_bound(v, tz) for v in value)
    except ValueError:
        raise _Invalid("date_range", message) from None
    if start_is_date != end_is_date:
        raise _Invalid("date_range", "give two dates or two datetimes, not one of each")
    if end_is_date:
        end = _midnight(end.date() + timedelta(days=1), tz)
    if not ALL_TIME_START <= start < end:
        raise _Invalid("date_range", "the range must start after 1970 and before it ends")
    return start, end, False


def _order_by(value: object, names: list[str]) -> list[tuple[str, str]]:
    if not isinstance(value, list) or len(value) > len(names):
        raise _Invalid("order_by", "must be a list of [name, 'asc' or 'desc'] pairs")
    pairs = []
    for item in value:
        if not (isinstance(item, list) and len(item) == 2 and item[1] in ("asc", "desc")):
            raise _Invalid("order_by", "each entry is [name, 'asc' or 'desc']")
        if item[0] not in names:
            raise _Invalid("order_by", "can sort only by the query's own metrics and dimensions")
        pairs.append((str(item[0]), str(item[1])))
    return pairs


def _integer(value: object, field: str, low: int, high: int) -> int:
    if type(value) is not int or not low <= value <= high:
        raise _Invalid(field, f"must be a whole number from {low} to {high}")
    return value


def _buckets(grain: str, start: datetime, end: datetime) -> int:
    """About how many buckets of ``grain`` cover ``[start, end)`` (an upper bound)."""
    seconds = {"minute": 60, "hour": 3600, "day": 86_400, "week": 7 * 86_400, "month": 28 * 86_400}
    return int((end - start).total_seconds() // seconds[grain]) + 2


def parse(body: object, now: datetime | None = None) -> Query:
    """The checked query of a request body; ``QueryError`` lists every field at fault."""
    if not isinstance(body, dict):
        raise QueryError([{"field": "body", "message": "must be a JSON object"}])
    errors = [
        {"field": str(name)[:64], "message": f"unknown field; allowed: {', '.join(FIELDS)}"}
        for name in body
        if name not in FIELDS
    ]
    values: dict[str, Any] = {}
    checks: dict[str, Any] = {
        "metrics": lambda v: _names(v, "metrics", METRICS, 1, len(METRICS)),
        "dimensions": _dimensions,
        "filters": _filters,
        "timezone": _timezone,
    }
    defaults: dict[str, Any] = {"dimensions": [], "filters": [], "timezone": "UTC"}
    if "metrics" not in body:
        errors.append({"field": "metrics", "message": f"is required: any of {', '.join(METRICS)}"})
    for name, check in checks.items():
        try:
            values[name] = check(body[name]) if name in body else defaults.get(name)
        except _Invalid as exc:
            errors.append({"field": exc.field, "message": exc.message})
    tz = zoneinfo.ZoneInfo(values.get("timezone") or "UTC")
    try:
        values["range"] = _date_range(body.get("date_range", "30d"), tz, now or datetime.now(UTC))
        names = (values.get("metrics") or []) + (values.get("dimensions") or [])
        values["order_by"] = _order_by(body.get("order_by", []), names)
    except _Invalid as exc:
        errors.append({"field": exc.field, "message": exc.message})
    dimensions = values.get("dimensions") or []
    series = len(dimensions) == 1 and dimensions[0].startswith("time:")
    for name, low, high, default in (
        (
            "limit",
            1,
            MAX_BUCKETS if series else MAX_LIMIT,
            MAX_BUCKETS if series else DEFAULT_LIMIT,
        ),
        ("offset", 0, MAX_OFFSET, 0),
    ):
        try:
            values[name] = _integer(body[name], name, low, high) if name in body else default
        except _Invalid as exc:
            errors.append({"field": exc.field, "message": exc.message})
    if not errors:
        start, end, all_time = values["range"]
        _check_span(dimensions, start, end, all_time, errors)
    if errors:
        raise QueryError(errors)
    return Query(
        metrics=tuple(values["metrics"]),
        dimensions=tuple(dimensions),
        filters=tuple(values["filters"]),
        start=start,
        end=end,
        timezone=values["timezone"],
        order_by=tuple(values["order_by"]),
        limit=values["limit"],
        offset=values["offset"],
        all_time=all_time,
    )


def _check_span(
    dimensions: list[str], start: datetime, end: datetime, all_time: bool, errors: list[Any]
) -> None:
    grain = next((name[5:] for name in dimensions if name.startswith("time:")), None)
    if grain == "minute" and end - start > MAX_MINUTE_SPAN:
        message = "a time:minute breakdown covers at most 7 days; use time:hour or a shorter range"
        errors.append({"field": "date_range", "message": message})
    elif grain is not None and not all_time and _buckets(grain, start, end) > MAX_BUCKETS + 2:
        message = f"more than {MAX_BUCKETS:,} time:{grain} buckets; use a coarser time dimension"
        errors.append({"field": "date_range", "message": message})
