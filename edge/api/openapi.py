"""The OpenAPI 3.1 description of ``/api/v1``, written by hand next to the routes it describes.

It is the contract: every rule the validation enforces that JSON Schema can state is a keyword here
(lengths, patterns, ranges, enums), built from the constants the validation itself uses; the rules
it cannot state (the target policy of ``edge.api.hosts``, real calendar dates, a cursor this API
returned, the analytics query's rules across fields) are in the descriptions. Patterns are anchored
with ``$(?!\\n)``: Python's ``$`` also matches before a final line break, which the API refuses.

``tests/test_api_openapi.py`` checks that every route of the mount appears here with its methods;
``tests/test_schemathesis.py`` runs schemathesis against a live edge from this document.
"""

from __future__ import annotations

import functools
from typing import Any

from edge.api import problems, validation
from edge.api.inputs import MAX_BULK_ITEMS
from edge.api.links import DEFAULT_PAGE, DEFAULT_STATS_DAYS, MAX_PAGE, MAX_STATS_DAYS
from linkedge import __version__, analyticsquery

_END = "$(?!\\n)"
# Planes 0, 1 and 14 hold every character of the refused categories (tests/test_api_openapi.py).
_PLANES = (range(0x20000), range(0xE0000, 0xF0000))


# Left out of the classes: a JSON text cannot carry them (the API refuses a body holding one as
# malformed JSON), and regex engines that work on code points cannot name them.
_SURROGATES = (0xD800, 0xDFFF)


def _escape(code: int) -> str:
    return f"\\u{code:04x}" if code <= 0xFFFF else chr(code)


@functools.cache
def _refused_ranges() -> tuple[tuple[int, int], ...]:
    """The ranges of code points ``validation.has_refused_char`` refuses, surrogates left out."""
    ranges: list[list[int]] = []
    for plane in _PLANES:
        for code in plane:
            if validation.has_refused_char(chr(code)) and not (
                _SURROGATES[0] <= code <= _SURROGATES[1]
            ):
                if ranges and ranges[-1][1] == code - 1:
                    ranges[-1][1] = code
                else:
                    ranges.append([code, code])
    return tuple((low, high) for low, high in ranges)


def _allowed_class(*, ascii_too: bool = True, space: bool = False) -> str:
    """A regex class of the characters a target may hold (``space``: a tag, which may also hold
    the ASCII space; ``ascii_too=False``: the non-ASCII ones only), as a negated class."""
    ranges = [list(pair) for pair in _refused_ranges()]
    if space:  # 0x20 ends the first range, the ASCII controls and the space
        assert ranges[0] == [0x00, 0x20]
        ranges[0] = [0x00, 0x1F]
    if not ascii_too:
        ranges.insert(0, [0x00, 0x7F])
        while len(ranges) > 1 and ranges[1][0] <= ranges[0][1] + 1:
            ranges[0][1] = max(ranges[0][1], ranges.pop(1)[1])
    parts = (
        _escape(low) if low == high else f"{_escape(low)}-{_escape(high)}" for low, high in ranges
    )
    return f"[^{''.join(parts)}]"


@functools.cache
def target_pattern() -> str:
    """What ``validation.target_url`` requires of a target's form: http(s), ``//``, a host (an
    ASCII name of 1-63 character labels and at most 253 characters, a name with non-ASCII
    letters, which IDNA then checks, or a bracketed IPv6 literal), an optional port, then no
    whitespace or control characters."""
    label = "[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
    ascii_name = f"(?=[A-Za-z0-9_.-]{{1,253}}(?:[:/?#]|{_END})){label}(?:\\.{label})*\\.?"
    non_ascii = _allowed_class(ascii_too=False)
    letter = f"(?:[A-Za-z0-9_-]|{non_ascii})"
    idn_name = f"(?=[^:/?#]*{non_ascii}){letter}+(?:\\.{letter}+)*\\.?"
    host = f"(?:\\[[0-9A-Fa-f:.]+\\]|{ascii_name}|{idn_name})"
    rest = f"(?:[/?#]{_allowed_class()}*)?"
    return f"^[Hh][Tt][Tt][Pp][Ss]?://{host}(?::[0-9]*)?{rest}{_END}"


@functools.cache
def tag_pattern() -> str:
    """Tag text: no control, format or line-break character, no space but the ASCII one."""
    return f"^{_allowed_class(space=True)}+{_END}"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


_HEADER_REFS = {
    name: {"$ref": f"#/components/headers/{name}"}
    for name in ("X-Request-ID", "RateLimit", "RateLimit-Policy")
}
HEADERS: dict[str, Any] = {
    "X-Request-ID": {
        "description": "The request's id: the client's X-Request-ID when it is 1-128 of "
        "[A-Za-z0-9._:-], else a new one; quoted in the server's log line",
        "required": True,
        "schema": {"type": "string", "pattern": f"^[A-Za-z0-9._:-]{{1,128}}{_END}"},
    },
    "RateLimit": {
        "description": 'The key\'s bucket now: "per-key";r=<requests left>;t=<seconds until '
        "full>. On every answer to a known key, unless Redis is unreachable (then unlimited)",
        "schema": {"type": "string", "pattern": '^"per-key";r=[0-9]+;t=[0-9]+$'},
        "example": '"per-key";r=59;t=1',
    },
    "RateLimit-Policy": {
        "description": 'The key\'s policy: "per-key";q=<RATE_LIMIT_BURST + 1>;w=<seconds to '
        "refill>. Sent with RateLimit",
        "schema": {"type": "string", "pattern": '^"per-key";q=[0-9]+;w=[0-9]+$'},
        "example": '"per-key";q=61;w=6',
    },
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "required": True,
        "schema": {"type": "string", "pattern": "^[0-9]+$"},
        "example": "1",
    },
    "Location": {
        "description": "The created link's path in this API",
        "required": True,
        "schema": {"type": "string", "pattern": "^/.*/links/[A-Za-z0-9_-]{3,64}$"},
        "example": "/api/v1/links/spring-sale",
    },
    "WWW-Authenticate": {
        "description": "The Bearer challenge",
        "required": True,
        "schema": {"type": "string", "pattern": "^Bearer"},
    },
}
_LIMITED = {**_HEADER_REFS}  # an answer to a request whose key was known
_UNLIMITED = {"X-Request-ID": _HEADER_REFS["X-Request-ID"]}
_RETRY = {"Retry-After": {"$ref": "#/components/headers/Retry-After"}}


def _json(
    schema: dict[str, Any], description: str, example: Any = None, **headers: Any
) -> dict[str, Any]:
    media: dict[str, Any] = {"schema": schema}
    if example is not None:
        media["example"] = example
    return {
        "description": description,
        "headers": {**_LIMITED, **headers},
        "content": {"application/json": media},
    }


def _problem(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "headers": _LIMITED if headers is None else headers,
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    }


_COMMON = {
    "401": _problem(
        "Missing, invalid or revoked API key",
        {
            **_UNLIMITED,
            "WWW-Authenticate": {"$ref": "#/components/headers/WWW-Authenticate"},
        },
    ),
    "403": _problem("The key lacks the scope this operation needs"),
    "414": {"description": "The request target is longer than the HTTP server reads"},
    "429": _problem(
        "Rate limited: this key (with RateLimit at r=0), or too many lookups of unknown keys "
        "from this address",
        {**_UNLIMITED, **_RETRY},
    ),
    "503": _problem("A backing store is unavailable; retry", {**_UNLIMITED, **_RETRY}),
}
_BODY_ERRORS = {
    "413": _problem("Body larger than MAX_BODY_BYTES", _UNLIMITED),
    "415": _problem("Body not sent as application/json (or another +json type)"),
    "422": _problem(
        "Malformed JSON, unknown fields, wrong types or bad values: `errors` names each field "
        "at fault, bad values first, at most 20, and `errors_omitted` counts the rest"
    ),
}
_CODE = {"type": "string", "pattern": f"^[A-Za-z0-9_-]{{3,64}}{_END}"}
_CODE_PARAM = {
    "name": "code",
    "in": "path",
    "required": True,
    "schema": _CODE,
    "description": "a link's code; any other value is a 404",
    "example": "spring-sale",
}


def _operation(
    operation_id: str, summary: str, scope: str, responses: dict[str, Any], **extra: Any
) -> dict[str, Any]:
    return {
        "operationId": operation_id,
        "summary": summary,
        "description": f"Needs scope `{scope}`.",
        "security": [{"bearer": [scope]}],
        "responses": {**responses, **_COMMON},
        **extra,
    }


def _body(name: str, example: Any) -> dict[str, Any]:
    return {
        "required": True,
        "content": {"application/json": {"schema": _ref(name), "example": example}},
    }


_TARGET_POLICY = (
    " The host must be one the target policy allows (a 422 naming the field otherwise): by "
    "default no loopback, private, link-local or other non-public address (IPv4, IPv6, IPv4 "
    "inside IPv6), no localhost, *.localhost, *.local, *.internal, *.home.arpa, *.localdomain "
    "or single-label name (ALLOW_PRIVATE_TARGETS allows these); whatever the setting, no "
    "numeric host other than a dotted quad (0x7f.1, 2130706433, 127.1) and no label mixing "
    "scripts (Unicode UTS 39, highly restrictive). Non-ASCII hosts must be valid IDNA 2008 "
    "(UTS 46 mapping) and are stored as punycode, non-ASCII characters elsewhere are "
    "percent-encoded, and the normalised URL must also fit in 2048 characters."
)


def _target(description: str) -> dict[str, Any]:
    return {
        "type": "string",
        "maxLength": validation.MAX_URL_LENGTH,
        "pattern": target_pattern(),
        "format": "http-url",
        "description": description + _TARGET_POLICY,
    }


_EXPIRES_AT = {
    "type": "string",
    "format": "date-time",
    "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,9})?"
    f"([Zz]|[+-](0[0-9]|1[0-5]):[0-5][0-9]){_END}",
    "description": "RFC 3339 with an offset of at most ±15:59 (T, t or a space between date "
    "and time; fractions past microseconds are cut); a real date and time of day whose UTC "
    "instant falls after 0001-01-01T00:00:00Z and before 9999-12-31T23:59:59.999999Z",
    "example": "2030-01-31T12:00:00Z",
}
_TAG = {
    "type": "string",
    "minLength": 1,
    "maxLength": validation.MAX_TAG_LENGTH,
    "pattern": tag_pattern(),
    "description": "no control, format or line-break characters; spaces allowed",
}
_EDITABLE = {
    "url": _target("Where the link redirects: an http or https URL (or IRI) with a host."),
    "redirect_type": {"type": "integer", "enum": list(validation.REDIRECT_TYPES), "default": 302},
    "expires_at": {"anyOf": [_EXPIRES_AT, {"type": "null"}]},
    "expired_url": {
        "anyOf": [
            _target("Where to send clicks after expires_at (without: 410 Gone)."),
            {"type": "null"},
        ]
    },
    "forward_query": {"type": "boolean", "default": False},
    "tags": {
        "type": "array",
        "maxItems": validation.MAX_TAGS,
        "items": _TAG,
        "description": "repeated tags are kept once",
    },
    "disabled": {"type": "boolean", "default": False},
}
_STORED_TARGET = {
    "type": "string",
    "maxLength": validation.MAX_URL_LENGTH,
    "pattern": f"^https?://[!-~]+{_END}",
    "description": "normalised: lower-case scheme and host, punycode, percent-encoded non-ASCII",
}
_TIMESTAMP = {"type": "string", "format": "date-time"}
_LINK_EXAMPLE = {
    "code": "spring-sale",
    "short_url": "https://sho.rt/spring-sale",
    "url": "https://example.com/spring?utm_source=mail",
    "redirect_type": 302,
    "expires_at": None,
    "expired_url": None,
    "forward_query": False,
    "tags": ["spring"],
    "disabled": False,
    "clicks": 0,
    "human_clicks": 0,
    "created_at": "2026-03-01T09:00:00.000000Z",
    "updated_at": "2026-03-01T09:00:00.000000Z",
}
_FIELD_ERROR = {
    "type": "object",
    "additionalProperties": False,
    "required": ["field", "message"],
    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
}

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details",
        "additionalProperties": False,
        "required": ["type", "title", "status", "detail", "instance"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer", "minimum": 400, "maximum": 599},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "errors": {
                "type": "array",
                "minItems": 1,
                "maxItems": problems.MAX_FIELD_ERRORS,
                "items": _FIELD_ERROR,
                "description": "on a 422: the fields at fault, bad values first, then unknown "
                f"field names; at most {problems.MAX_FIELD_ERRORS}",
            },
            "errors_omitted": {
                "type": "integer",
                "minimum": 1,
                "description": "how many more fields are at fault than `errors` lists",
            },
        },
        "example": {
            "type": "https://linkedge.dev/problems/invalid-input",
            "title": "Invalid input",
            "status": 422,
            "detail": "url: scheme must be http or https (got 'ftp')",
            "instance": "/api/v1/links",
            "errors": [{"field": "url", "message": "scheme must be http or https (got 'ftp')"}],
        },
    },
    "LinkCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "code": {
                **_CODE,
                "description": "custom code, not a word the service reserves (api, healthz, "
                "...: a 422); omitted: 7 random characters of [A-Za-z0-9]",
            },
            **_EDITABLE,
        },
    },
    "LinkPatch": {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": {
            **_EDITABLE,
            "url": {**_EDITABLE["url"], "description": "the new target" + _TARGET_POLICY},
        },
        "description": "the fields to change; null clears expires_at and expired_url",
    },
    "Link": {
        "type": "object",
        "additionalProperties": False,
        "required": [*_LINK_EXAMPLE],
        "properties": {
            "code": _CODE,
            "short_url": {"type": "string", "format": "uri"},
            "url": _STORED_TARGET,
            "redirect_type": _EDITABLE["redirect_type"],
            "expires_at": {"anyOf": [_TIMESTAMP, {"type": "null"}]},
            "expired_url": {"anyOf": [_STORED_TARGET, {"type": "null"}]},
            "forward_query": {"type": "boolean"},
            "tags": {"type": "array", "maxItems": validation.MAX_TAGS, "items": _TAG},
            "disabled": {"type": "boolean"},
            "clicks": {
                "type": "integer",
                "minimum": 0,
                "description": "every recorded click, bots included",
            },
            "human_clicks": {"type": "integer", "minimum": 0},
            "created_at": _TIMESTAMP,
            "updated_at": _TIMESTAMP,
        },
        "example": _LINK_EXAMPLE,
    },
    "LinkPage": {
        "type": "object",
        "additionalProperties": False,
        "required": ["items", "next_cursor"],
        "properties": {
            "items": {"type": "array", "maxItems": MAX_PAGE, "items": _ref("Link")},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "pass as cursor for the next page; null on the last one",
            },
        },
    },
    "BulkCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["links"],
        "properties": {
            "links": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BULK_ITEMS,
                "items": {
                    "anyOf": [_ref("LinkCreate"), {}],
                    "description": "each item is checked as a LinkCreate on its own: any other "
                    "value is that item's 422 in the results, not the request's",
                },
            }
        },
    },
    "BulkResult": {
        "type": "object",
        "additionalProperties": False,
        "required": ["created", "failed", "results"],
        "properties": {
            "created": {"type": "integer", "minimum": 0, "maximum": MAX_BULK_ITEMS},
            "failed": {"type": "integer", "minimum": 0, "maximum": MAX_BULK_ITEMS},
            "results": {
                "type": "array",
                "minItems": 1,
                "maxItems": MAX_BULK_ITEMS,
                "description": "one per item, in order",
                "items": {
                    "oneOf": [
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["index", "status", "link"],
                            "properties": {
                                "index": {"type": "integer", "minimum": 0},
                                "status": {"const": 201},
                                "link": _ref("Link"),
                            },
                        },
                        {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["index", "status", "problem"],
                            "properties": {
                                "index": {"type": "integer", "minimum": 0},
                                "status": {
                                    "enum": [409, 422, 503],
                                    "description": "409: the code is taken or repeated in "
                                    "the request; 422: the item is invalid (the problem's "
                                    "errors name its fields); 503: no free code was found",
                                },
                                "problem": _ref("Problem"),
                            },
                        },
                    ]
                },
            },
        },
        "example": {
            "created": 1,
            "failed": 1,
            "results": [
                {"index": 0, "status": 201, "link": _LINK_EXAMPLE},
                {
                    "index": 1,
                    "status": 422,
                    "problem": {
                        "type": "https://linkedge.dev/problems/invalid-input",
                        "title": "Invalid input",
                        "status": 422,
                        "detail": "url: is required",
                        "instance": "/api/v1/links/bulk#/links/1",
                        "errors": [{"field": "url", "message": "is required"}],
                    },
                },
            ],
        },
    },
    "LinkStats": {
        "type": "object",
        "additionalProperties": False,
        "required": ["code", "clicks", "human_clicks", "from", "to", "daily"],
        "properties": {
            "code": _CODE,
            "clicks": {"type": "integer", "minimum": 0},
            "human_clicks": {"type": "integer", "minimum": 0},
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            "daily": {
                "type": "array",
                "maxItems": MAX_STATS_DAYS,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": ["day", "clicks", "human_clicks"],
                    "properties": {
                        "day": {"type": "string", "format": "date"},
                        "clicks": {"type": "integer", "minimum": 0},
                        "human_clicks": {"type": "integer", "minimum": 0},
                    },
                },
            },
        },
    },
}

_NOT_FOUND = {
    "404": _problem(
        "No such link in this account (another account's links included)",
        {
            **_LIMITED,
            "X-Request-ID": {
                **HEADERS["X-Request-ID"],
                "required": False,
                "description": "as on every answer, except to a path the API does not route "
                "(a code holding a line break), which the app around it answers",
            },
        },
    )
}

_DIMENSION_NAMES = [*analyticsquery.TIME_DIMENSIONS, *analyticsquery.DIMENSIONS]
_MAX_ROWS = max(analyticsquery.MAX_LIMIT, analyticsquery.MAX_BUCKETS)
_DATE = f"^[0-9]{{4}}-[0-9]{{2}}-[0-9]{{2}}{_END}"
_DATETIME = (
    "^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{1,6})?"
    f"(Z|[+-][0-9]{{2}}:[0-9]{{2}}){_END}"
)
_ORDER_BY = {
    "type": "array",
    "maxItems": len(analyticsquery.METRICS) + analyticsquery.MAX_DIMENSIONS,
    "items": {
        "type": "array",
        "prefixItems": [
            {"enum": [*analyticsquery.METRICS, *_DIMENSION_NAMES]},
            {"enum": ["asc", "desc"]},
        ],
        "minItems": 2,
        "maxItems": 2,
    },
    "description": "[[name, asc|desc], ...], each name one of the query's own metrics and "
    "dimensions, at most one entry per name; default: time ascending, else the first metric "
    "descending",
}
_FILTERS = {
    "type": "array",
    "maxItems": analyticsquery.MAX_FILTERS,
    "items": {
        "type": "array",
        "prefixItems": [
            {"enum": list(analyticsquery.FILTER_OPS)},
            {"enum": list(analyticsquery.DIMENSIONS)},
            {
                "type": "array",
                "minItems": 1,
                "maxItems": analyticsquery.MAX_FILTER_VALUES,
                "items": {"type": "string", "maxLength": analyticsquery.MAX_VALUE_LENGTH},
            },
        ],
        "minItems": 3,
        "maxItems": 3,
    },
    "description": "[op, dimension, [values]], all ANDed; values of one filter are ORed; "
    "contains is a case-insensitive substring match",
}
_SPAN_RULES = (
    "A range of dates or datetimes starts in 1970 or later and before it ends; time:minute "
    f"covers at most 7 days, and no time dimension more than {analyticsquery.MAX_BUCKETS:,} "
    "buckets."
)
SCHEMAS["AnalyticsQuery"] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["metrics"],
    "description": "Checked by linkedge.analyticsquery; the rules across fields are: "
    + _SPAN_RULES
    + " order_by names only the query's metrics and dimensions; limit is at most "
    f"{analyticsquery.MAX_LIMIT:,}, or {analyticsquery.MAX_BUCKETS:,} for a time dimension alone.",
    "properties": {
        "metrics": {
            "type": "array",
            "minItems": 1,
            "maxItems": len(analyticsquery.METRICS),
            "uniqueItems": True,
            "items": {"enum": list(analyticsquery.METRICS)},
        },
        "dimensions": {
            "type": "array",
            "maxItems": analyticsquery.MAX_DIMENSIONS,
            "uniqueItems": True,
            "items": {"enum": _DIMENSION_NAMES},
            "contains": {"enum": list(analyticsquery.TIME_DIMENSIONS)},
            "minContains": 0,
            "maxContains": 1,
            "description": "at most one time:* dimension",
        },
        "filters": _FILTERS,
        "date_range": {
            "anyOf": [
                {"enum": list(analyticsquery.NAMED_RANGES)},
                {
                    "type": "array",
                    "items": {"type": "string", "pattern": _DATE, "format": "date"},
                    "minItems": 2,
                    "maxItems": 2,
                    "description": "[YYYY-MM-DD, YYYY-MM-DD], inclusive",
                },
                {
                    "type": "array",
                    "items": {"type": "string", "pattern": _DATETIME, "format": "date-time"},
                    "minItems": 2,
                    "maxItems": 2,
                    "description": "two RFC 3339 datetimes with offsets: [from, to)",
                },
            ],
            "default": "30d",
        },
        "timezone": {
            "type": "string",
            "default": "UTC",
            "description": "an IANA time zone name this server knows (zoneinfo)",
        },
        "order_by": _ORDER_BY,
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": _MAX_ROWS,
            "description": f"default {analyticsquery.DEFAULT_LIMIT}, at most "
            f"{analyticsquery.MAX_LIMIT:,}; a time dimension alone: the whole series, at most "
            f"{analyticsquery.MAX_BUCKETS:,}",
        },
        "offset": {"type": "integer", "minimum": 0, "maximum": analyticsquery.MAX_OFFSET},
    },
}
SCHEMAS["AnalyticsAnswer"] = {
    "type": "object",
    "properties": {
        "results": {
            "type": "array",
            "maxItems": _MAX_ROWS,
            "items": {
                "type": "object",
                "properties": {
                    "dimensions": {"type": "array", "items": {"type": "string"}},
                    "metrics": {"type": "array", "items": {"type": "integer"}},
                },
            },
        },
        "meta": {
            "type": "object",
            "properties": {
                "metrics": {"type": "array", "items": {"type": "string"}},
                "dimensions": {"type": "array", "items": {"type": "string"}},
                "date_range": {
                    "type": "array",
                    "items": {"type": "string", "format": "date-time"},
                    "description": "[from, to), in the query's time zone",
                },
                "timezone": {"type": "string"},
                "total_rows": {"type": "integer", "minimum": 0},
                "source": {"type": "string", "description": "the table or rollup that answered"},
            },
        },
    },
}
_ANALYTICS_ANSWER = {
    "description": "Results and meta; CSV (a header, a line per result) with Accept: text/csv "
    "or format=csv",
    "headers": _LIMITED,
    "content": {
        "application/json": {"schema": _ref("AnalyticsAnswer")},
        "text/csv": {"schema": {"type": "string"}},
    },
}
_FORMAT_PARAM = {
    "name": "format",
    "in": "query",
    "schema": {"enum": ["json", "csv"]},
    "description": "overrides Accept",
}


def _query_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": schema, "description": description}


def _json_param(name: str, description: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {
        "name": name,
        "in": "query",
        "content": {"application/json": {"schema": schema}},
        "description": description,
    }


_LIST_TEXT = {"type": "string", "minLength": 1}
_LINK_ANALYTICS_PARAMS = [
    _query_param("metrics", "comma-separated, e.g. clicks,visitors (required)", _LIST_TEXT),
    _query_param("dimensions", "comma-separated, e.g. time:day or country", {"type": "string"}),
    _query_param(
        "date_range", "a name (7d, 30d, ...) or FROM,TO as in AnalyticsQuery", {"type": "string"}
    ),
    _query_param("timezone", "IANA name, default UTC", {"type": "string"}),
    _json_param("filters", "JSON, as in AnalyticsQuery", _FILTERS),
    _json_param("order_by", "JSON, as in AnalyticsQuery", _ORDER_BY),
    _query_param(
        "limit", "as in AnalyticsQuery", {"type": "integer", "minimum": 1, "maximum": _MAX_ROWS}
    ),
    _query_param(
        "offset",
        "as in AnalyticsQuery",
        {"type": "integer", "minimum": 0, "maximum": analyticsquery.MAX_OFFSET},
    ),
    _FORMAT_PARAM,
]
_LINKS_TO_CREATED = {
    name: {"operationId": target, "parameters": {"code": "$response.body#/code"}}
    for name, target in (
        ("GetLink", "getLink"),
        ("UpdateLink", "updateLink"),
        ("DeleteLink", "deleteLink"),
        ("GetLinkStats", "getLinkStats"),
        ("GetLinkAnalytics", "getLinkAnalytics"),
    )
}
_CREATED = _json(
    _ref("Link"),
    "Created; Location names the link",
    Location={"$ref": "#/components/headers/Location"},
)

PATHS: dict[str, Any] = {
    "/links": {
        "post": _operation(
            "createLink",
            "Create a link",
            "links:write",
            {
                "201": {**_CREATED, "links": _LINKS_TO_CREATED},
                "409": _problem("The custom code is taken (codes are never reused)"),
                **_BODY_ERRORS,
            },
            requestBody=_body(
                "LinkCreate",
                {"url": "https://example.com/spring?utm_source=mail", "tags": ["spring"]},
            ),
        ),
        "get": _operation(
            "listLinks",
            "List links, newest first (keyset pagination)",
            "links:read",
            {
                "200": _json(
                    _ref("LinkPage"),
                    "A page of links",
                    {"items": [_LINK_EXAMPLE], "next_cursor": None},
                ),
                "422": _problem("Bad limit, cursor or tag"),
            },
            parameters=[
                _query_param(
                    "limit",
                    "links per page",
                    {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": DEFAULT_PAGE},
                ),
                _query_param(
                    "cursor",
                    "next_cursor of the previous page (opaque); any other value is a 422, an "
                    "empty one is none",
                    {"type": "string", "format": "cursor"},
                ),
                _query_param("tag", "only links with this tag", _TAG),
            ],
        ),
    },
    "/links/bulk": {
        "post": _operation(
            "bulkCreateLinks",
            f"Create 1 to {MAX_BULK_ITEMS} links; one result per item, items independent",
            "links:write",
            {
                "200": _json(
                    _ref("BulkResult"),
                    "Per-item results, in order: status 201 with the link, or the item's "
                    "problem (409, 422 or 503); a bad item stores nothing and stops no other",
                ),
                **_BODY_ERRORS,
            },
            requestBody=_body(
                "BulkCreate",
                {"links": [{"url": "https://example.com/a"}, {"url": "https://example.com/b"}]},
            ),
        ),
    },
    "/links/{code}": {
        "parameters": [_CODE_PARAM],
        "get": _operation(
            "getLink",
            "Get a link",
            "links:read",
            {"200": _json(_ref("Link"), "The link"), **_NOT_FOUND},
        ),
        "patch": _operation(
            "updateLink",
            "Change a link; null clears expires_at and expired_url",
            "links:write",
            {"200": _json(_ref("Link"), "The changed link"), **_NOT_FOUND, **_BODY_ERRORS},
            requestBody=_body("LinkPatch", {"disabled": True}),
        ),
        "delete": _operation(
            "deleteLink",
            "Delete a link (its code is never reused)",
            "links:write",
            {"204": {"description": "Deleted", "headers": _LIMITED}, **_NOT_FOUND},
        ),
    },
    "/links/{code}/stats": {
        "parameters": [_CODE_PARAM],
        "get": _operation(
            "getLinkStats",
            "Daily click counts from Postgres",
            "stats:read",
            {
                "200": _json(_ref("LinkStats"), "Totals and one entry per day, oldest first"),
                "422": _problem("Bad days"),
                **_NOT_FOUND,
            },
            parameters=[
                _query_param(
                    "days",
                    "how many days, today included",
                    {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_STATS_DAYS,
                        "default": DEFAULT_STATS_DAYS,
                    },
                )
            ],
        ),
    },
    "/analytics/query": {
        "post": _operation(
            "queryAnalytics",
            "Query the account's clicks: metrics by up to three dimensions",
            "stats:read",
            {
                "200": _ANALYTICS_ANSWER,
                **_BODY_ERRORS,
                "422": _problem("Unknown metric or dimension, bad filter, range, time zone, ..."),
            },
            requestBody=_body(
                "AnalyticsQuery",
                {"metrics": ["clicks", "visitors"], "dimensions": ["time:day"], "date_range": "7d"},
            ),
            parameters=[_FORMAT_PARAM],
        ),
    },
    "/links/{code}/analytics": {
        "parameters": [_CODE_PARAM],
        "get": _operation(
            "getLinkAnalytics",
            "Query one link's clicks (the fields of AnalyticsQuery as query parameters)",
            "stats:read",
            {
                "200": _ANALYTICS_ANSWER,
                "422": _problem("Bad query parameter (see errors)"),
                **_NOT_FOUND,
            },
            parameters=_LINK_ANALYTICS_PARAMS,
        ),
    },
    "/openapi.json": {
        "get": {
            "operationId": "getOpenApi",
            "summary": "This document (no key needed)",
            "security": [],
            "responses": {
                "200": {
                    "description": "OpenAPI 3.1",
                    "headers": _UNLIMITED,
                    "content": {"application/json": {"schema": {"type": "object"}}},
                }
            },
        },
    },
}


def spec(prefix: str) -> dict[str, Any]:
    """The document, with server URL ``prefix`` (the mount path)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "linkedge link API", "version": __version__},
        "servers": [{"url": prefix}],
        "paths": PATHS,
        "components": {
            "schemas": SCHEMAS,
            "headers": HEADERS,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API key, lk_..."}
            },
        },
    }
