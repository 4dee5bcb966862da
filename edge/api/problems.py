"""RFC 9457 problem details: the one shape every API error takes.

Handlers raise ``Problem``; the exception middleware of the ``/api/v1`` mount turns it (and
Starlette's own 404/405) into ``application/problem+json``. ``type`` is a stable URI per kind of
problem, ``detail`` says what to do about it, ``errors`` lists the fields at fault on a 422.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import asyncpg
import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger("linkedge.api")

MAX_FIELD_ERRORS = 20  # a 422 lists at most this many fields; ``errors_omitted`` counts the rest

TYPE_BASE = "https://linkedge.dev/problems/"
MEDIA_TYPE = "application/problem+json"

TITLES = {
    400: "Bad request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not found",
    405: "Method not allowed",
    409: "Conflict",
    413: "Request body too large",
    415: "Unsupported media type",
    422: "Invalid input",
    429: "Too many requests",
    500: "Internal error",
    503: "Service unavailable",
}

_TYPES = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "body-too-large",
    415: "unsupported-media-type",
    422: "invalid-input",
    429: "rate-limited",
    500: "internal-error",
    503: "unavailable",
}


class Problem(Exception):
    """An API error a client can act on. ``errors`` is ``[{field, message}]`` for a 422: the first
    ``MAX_FIELD_ERRORS`` of them, with ``errors_omitted`` counting the others (plus
    ``errors_omitted`` given: errors the caller counted without building them)."""

    def __init__(
        self,
        status: int,
        detail: str,
        *,
        errors: Sequence[Mapping[str, str]] = (),
        errors_omitted: int = 0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.errors = [dict(error) for error in errors[:MAX_FIELD_ERRORS]]
        self.errors_omitted = errors_omitted + len(errors) - len(self.errors)
        self.headers = dict(headers or {})

    def body(self, instance: str) -> dict[str, Any]:
        """The problem document; ``instance`` is the request path (percent-encoded here)."""
        document: dict[str, Any] = {
            "type": TYPE_BASE + _TYPES.get(self.status, "error"),
            "title": TITLES.get(self.status, "Error"),
            "status": self.status,
            "detail": self.detail,
            "instance": quote(instance, safe="/#"),
        }
        if self.errors:
            document["errors"] = self.errors
        if self.errors_omitted:
            document["errors_omitted"] = self.errors_omitted
        return document

    def response(self, instance: str) -> Response:
        return Response(
            orjson.dumps(self.body(instance)),
            status_code=self.status,
            headers=self.headers,
            media_type=MEDIA_TYPE,
        )


def invalid(field: str, message: str) -> Problem:
    """A 422 about one field."""
    return Problem(422, f"{field}: {message}", errors=[{"field": field, "message": message}])


async def handle_problem(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Problem)
    return exc.response(request.url.path)


async def handle_http_exception(request: Request, exc: Exception) -> Response:
    """Starlette's own 404 (no such route) and 405 (method not allowed), as problems."""
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        detail = f"no API route {request.url.path}; see /api/v1/openapi.json for the routes"
    elif exc.status_code == 405:
        allowed = (exc.headers or {}).get("Allow", "")
        detail = f"{request.method} is not allowed on {request.url.path}; allowed: {allowed}"
    else:
        detail = str(exc.detail)
    return Problem(exc.status_code, detail, headers=exc.headers).response(request.url.path)


async def handle_store_unavailable(request: Request, exc: Exception) -> Response:
    """Postgres unreachable or too slow: a 503 to retry, not a 500."""
    log.warning("store unavailable: %r", exc, extra={"path": request.url.path})
    return Problem(
        503, "the database is unavailable; retry shortly", headers={"Retry-After": "1"}
    ).response(request.url.path)


# Postgres unreachable, restarting or too slow: answered 503, never 500.
STORE_ERRORS: tuple[type[Exception], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError,
)
