"""The OpenAPI 3.1 description of ``/api/v1``, written by hand next to the routes it describes.

``tests/test_api_openapi.py`` checks that every route of the mount appears here with its methods.
"""

from __future__ import annotations

from typing import Any

from edge.api.inputs import MAX_BULK_ITEMS
from edge.api.links import DEFAULT_PAGE, DEFAULT_STATS_DAYS, MAX_PAGE, MAX_STATS_DAYS
from edge.api.validation import MAX_TAG_LENGTH, MAX_TAGS, MAX_URL_LENGTH
from linkedge import __version__


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
