"""The OpenAPI 3.1 description of ``/api/v1``, written by hand next to the routes it describes.

``tests/test_api_openapi.py`` checks that every route of the mount appears here with its methods.
"""

from __future__ import annotations

from typing import Any

from edge.api.inputs import MAX_BULK_ITEMS
from edge.api.links import DEFAULT_PAGE, DEFAULT_STATS_DAYS, MAX_PAGE, MAX_STATS_DAYS
from edge.api.validation import MAX_TAG_LENGTH, MAX_TAGS, MAX_URL_LENGTH
from linkedge import __version__, analyticsquery


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": _ref("Problem")}},
    }


_COMMON = {
    "401": _problem("Missing, invalid or revoked API key"),
    "403": _problem("The key lacks the scope this operation needs"),
    "429": _problem("Rate limited; see Retry-After and RateLimit"),
    "503": _problem("A backing store is unavailable; retry"),
}
_BODY_ERRORS = {
    "413": _problem("Body larger than MAX_BODY_BYTES"),
    "415": _problem("Body not sent as application/json"),
    "422": _problem("Malformed JSON, unknown fields, wrong types or bad values (see errors)"),
}
_CODE_PARAM = {"name": "code", "in": "path", "required": True, "schema": {"type": "string"}}


def _operation(summary: str, scope: str, responses: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "summary": summary,
        "description": f"Needs scope `{scope}`.",
        "security": [{"bearer": [scope]}],
        "responses": {**responses, **_COMMON},
        **extra,
    }


def _body(name: str) -> dict[str, Any]:
    return {"required": True, "content": {"application/json": {"schema": _ref(name)}}}


_TARGET = {
    "type": "string",
    "format": "uri",
    "maxLength": MAX_URL_LENGTH,
    "description": "http or https URL with a host; no whitespace, control characters or user info",
}
_EDITABLE = {
    "url": _TARGET,
    "redirect_type": {"type": "integer", "enum": [301, 302, 307, 308], "default": 302},
    "expires_at": {
        "type": ["string", "null"],
        "format": "date-time",
        "description": "RFC 3339 with offset",
    },
    "expired_url": {
        **_TARGET,
        "type": ["string", "null"],
        "description": "where to send clicks after expiry",
    },
    "forward_query": {"type": "boolean", "default": False},
    "tags": {
        "type": "array",
        "maxItems": MAX_TAGS,
        "items": {"type": "string", "minLength": 1, "maxLength": MAX_TAG_LENGTH},
    },
    "disabled": {"type": "boolean", "default": False},
}

SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "description": "RFC 9457 problem details",
        "required": ["type", "title", "status", "detail", "instance"],
        "properties": {
            "type": {"type": "string", "format": "uri"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "instance": {"type": "string"},
            "errors": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["field", "message"],
                    "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
                },
            },
        },
    },
    "LinkCreate": {
        "type": "object",
        "additionalProperties": False,
        "required": ["url"],
        "properties": {
            "code": {
                "type": "string",
                "pattern": "^[A-Za-z0-9_-]{3,64}$",
                "description": "custom code; omitted: 7 random characters of [A-Za-z0-9]",
            },
            **_EDITABLE,
        },
    },
    "LinkPatch": {
        "type": "object",
        "additionalProperties": False,
        "minProperties": 1,
        "properties": _EDITABLE,
    },
    "Link": {
        "type": "object",
        "properties": {
            "code": {"type": "string"},
            "short_url": {"type": "string", "format": "uri"},
            **_EDITABLE,
            "clicks": {"type": "integer", "description": "every recorded click, bots included"},
            "human_clicks": {"type": "integer"},
            "created_at": {"type": "string", "format": "date-time"},
            "updated_at": {"type": "string", "format": "date-time"},
        },
    },
    "LinkPage": {
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": _ref("Link")},
            "next_cursor": {
                "type": ["string", "null"],
                "description": "pass as cursor for the next page",
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
                "items": _ref("LinkCreate"),
            }
        },
    },
    "BulkResult": {
        "type": "object",
        "properties": {
            "created": {"type": "integer"},
            "failed": {"type": "integer"},
            "results": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["index", "status"],
                    "properties": {
                        "index": {"type": "integer"},
                        "status": {"type": "integer"},
                        "link": _ref("Link"),
                        "problem": _ref("Problem"),
                    },
                },
            },
        },
    },
    "LinkStats": {
        "type": "object",
        "properties": {
            "code": {"type": "string"},
            "clicks": {"type": "integer"},
            "human_clicks": {"type": "integer"},
            "from": {"type": "string", "format": "date"},
            "to": {"type": "string", "format": "date"},
            "daily": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "day": {"type": "string", "format": "date"},
                        "clicks": {"type": "integer"},
                        "human_clicks": {"type": "integer"},
                    },
                },
            },
        },
    },
}

_NOT_FOUND = {"404": _problem("No such link in this account (another account's links included)")}

_DIMENSION_NAMES = [*analyticsquery.TIME_DIMENSIONS, *analyticsquery.DIMENSIONS]
_ORDER_BY = {
    "type": "array",
    "items": {
        "type": "array",
        "prefixItems": [{"type": "string"}, {"enum": ["asc", "desc"]}],
        "minItems": 2,
        "maxItems": 2,
    },
    "description": "[[metric or dimension of the query, asc|desc], ...]; default: time "
    "ascending, else the first metric descending",
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
SCHEMAS["AnalyticsQuery"] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["metrics"],
    "properties": {
        "metrics": {
            "type": "array",
            "minItems": 1,
            "uniqueItems": True,
            "items": {"enum": list(analyticsquery.METRICS)},
        },
        "dimensions": {
            "type": "array",
            "maxItems": analyticsquery.MAX_DIMENSIONS,
            "uniqueItems": True,
            "items": {"enum": _DIMENSION_NAMES},
            "description": "at most one time:* dimension; time:minute over at most 7 days",
        },
        "filters": _FILTERS,
        "date_range": {
            "oneOf": [
                {"enum": list(analyticsquery.NAMED_RANGES)},
                {
                    "type": "array",
                    "items": {"type": "string"},
                    "minItems": 2,
                    "maxItems": 2,
                    "description": "[YYYY-MM-DD, YYYY-MM-DD] inclusive, or two RFC 3339 "
                    "datetimes with offsets [from, to)",
                },
            ],
            "default": "30d",
        },
        "timezone": {"type": "string", "default": "UTC", "description": "IANA time zone name"},
        "order_by": _ORDER_BY,
        "limit": {
            "type": "integer",
            "minimum": 1,
            "maximum": analyticsquery.MAX_LIMIT,
            "default": analyticsquery.DEFAULT_LIMIT,
            "description": "default 100; a time series alone: the whole series (at most 10,080)",
        },
        "offset": {"type": "integer", "minimum": 0, "maximum": analyticsquery.MAX_OFFSET},
    },
}
SCHEMAS["AnalyticsAnswer"] = {
    "type": "object",
    "properties": {
        "results": {
            "type": "array",
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
                "total_rows": {"type": "integer"},
                "source": {"type": "string", "description": "the table or rollup that answered"},
            },
        },
    },
}
_ANALYTICS_ANSWER = {
    "description": "Results and meta; CSV (a header, a line per result) with Accept: text/csv "
    "or format=csv",
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


def _query_param(name: str, description: str, schema: dict[str, Any] | None = None) -> Any:
    return {
        "name": name,
        "in": "query",
        "schema": schema or {"type": "string"},
        "description": description,
    }


PATHS: dict[str, Any] = {
    "/links": {
        "post": _operation(
            "Create a link",
            "links:write",
            {
                "201": _json(_ref("Link"), "Created; Location names the link"),
                "409": _problem("The custom code is taken (codes are never reused)"),
                **_BODY_ERRORS,
            },
            requestBody=_body("LinkCreate"),
        ),
        "get": _operation(
            "List links, newest first (keyset pagination)",
            "links:read",
            {
                "200": _json(_ref("LinkPage"), "A page of links"),
                "422": _problem("Bad limit, cursor or tag"),
            },
            parameters=[
                {
                    "name": "limit",
                    "in": "query",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_PAGE,
                        "default": DEFAULT_PAGE,
                    },
                },
                {"name": "cursor", "in": "query", "schema": {"type": "string"}},
                {"name": "tag", "in": "query", "schema": {"type": "string"}},
            ],
        ),
    },
    "/links/bulk": {
        "post": _operation(
            "Create up to 1000 links; one result per item, items independent",
            "links:write",
            {
                "200": _json(
                    _ref("BulkResult"), "Per-item results: status 201 with link, or a problem"
                ),
                **_BODY_ERRORS,
            },
            requestBody=_body("BulkCreate"),
        ),
    },
    "/links/{code}": {
        "parameters": [_CODE_PARAM],
        "get": _operation(
            "Get a link", "links:read", {"200": _json(_ref("Link"), "The link"), **_NOT_FOUND}
        ),
        "patch": _operation(
            "Change a link; null clears expires_at and expired_url",
            "links:write",
            {"200": _json(_ref("Link"), "The changed link"), **_NOT_FOUND, **_BODY_ERRORS},
            requestBody=_body("LinkPatch"),
        ),
        "delete": _operation(
            "Delete a link (its code is never reused)",
            "links:write",
            {"204": {"description": "Deleted"}, **_NOT_FOUND},
        ),
    },
    "/links/{code}/stats": {
        "parameters": [_CODE_PARAM],
        "get": _operation(
            "Daily click counts from Postgres",
            "stats:read",
            {
                "200": _json(_ref("LinkStats"), "Totals and one entry per day, oldest first"),
                "422": _problem("Bad days"),
                **_NOT_FOUND,
            },
            parameters=[
                {
                    "name": "days",
                    "in": "query",
                    "schema": {
                        "type": "integer",
                        "minimum": 1,
                        "maximum": MAX_STATS_DAYS,
                        "default": DEFAULT_STATS_DAYS,
                    },
                }
            ],
        ),
    },
    "/analytics/query": {
        "post": _operation(
            "Query the account's clicks: metrics by up to three dimensions",
            "stats:read",
            {
                "200": _ANALYTICS_ANSWER,
                **_BODY_ERRORS,
                "422": _problem("Unknown metric or dimension, bad filter, range, time zone, ..."),
            },
            requestBody=_body("AnalyticsQuery"),
            parameters=[_FORMAT_PARAM],
        ),
    },
    "/links/{code}/analytics": {
        "parameters": [_CODE_PARAM],
        "get": _operation(
            "Query one link's clicks (the fields of AnalyticsQuery as query parameters)",
            "stats:read",
            {
                "200": _ANALYTICS_ANSWER,
                "422": _problem("Bad query parameter (see errors)"),
                **_NOT_FOUND,
            },
            parameters=[
                _query_param("metrics", "comma-separated, e.g. clicks,visitors"),
                _query_param("dimensions", "comma-separated, e.g. time:day or country"),
                _query_param("date_range", "a name (7d, 30d, ...) or FROM,TO"),
                _query_param("timezone", "IANA name, default UTC"),
                _query_param("filters", "JSON, as in AnalyticsQuery"),
                _query_param("order_by", "JSON, as in AnalyticsQuery"),
                _query_param("limit", "1 to 10000", {"type": "integer"}),
                _query_param("offset", "0 or more", {"type": "integer"}),
                _FORMAT_PARAM,
            ],
        ),
    },
    "/openapi.json": {
        "get": {
            "summary": "This document (no key needed)",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.1")},
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
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "an API key, lk_..."}
            },
        },
    }
