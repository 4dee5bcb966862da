"""Pure ASGI middleware of the ``/api/v1`` mount: request context and the body cap.

``RequestContextMiddleware`` (outermost) gives every API request an id (``X-Request-ID`` echoed
when it looks sane, generated otherwise), counts it by route template, times it, writes one JSON
log line at INFO, and turns anything unexpected into a problem response (503 for an unreachable
store, 500 otherwise) so that a client never sees a bare traceback.

``BodyLimitMiddleware`` refuses a body above ``MAX_BODY_BYTES``: early from ``Content-Length``,
and while reading the stream for chunked bodies, so an oversized body is never buffered whole.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence

from starlette.requests import ClientDisconnect
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from edge.api.auth import SCOPE_KEY
from edge.api.problems import STORE_ERRORS, Problem
from edge.metrics import API_LATENCY, API_REQUESTS

log = logging.getLogger("linkedge.api")

REQUEST_ID_KEY = "linkedge.request_id"
_SANE_REQUEST_ID = re.compile(rb"[A-Za-z0-9._:-]{1,128}")
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name == b"x-request-id" and _SANE_REQUEST_ID.fullmatch(value):
            return bytes(value).decode()
    return uuid.uuid4().hex


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, prefix: str, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.prefix = prefix
        self.routes = routes

    def _route_label(self, scope: Scope) -> str:
        for route in self.routes:
            match, _ = route.matches(scope)
            if match is not Match.NONE:
                return self.prefix + getattr(route, "path", "")
        return "unmatched"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        scope[REQUEST_ID_KEY] = request_id
        id_header = (b"x-request-id", request_id.encode())
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), id_header]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except ClientDisconnect:
            status = 499  # the client went away mid-request; nothing to answer
        except Exception as exc:
            if isinstance(exc, STORE_ERRORS):
                log.warning("store unavailable: %r", exc, extra={"request_id": request_id})
                problem = Problem(
                    503,
                    "a backing store is unavailable; retry shortly",
                    headers={"Retry-After": "1"},
                )
            else:
                log.exception("unexpected error", extra={"request_id": request_id})
                problem = Problem(
                    500, f"unexpected error; quote request id {request_id} when reporting it"
                )
            if not response_started:
                await problem.response(scope["path"])(scope, receive, send_with_id)
        finally:
            elapsed = time.perf_counter() - started
            route = self._route_label(scope)
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            API_REQUESTS.labels(route=route, method=method, status=str(status)).inc()
            API_LATENCY.labels(route=route).observe(elapsed)
            key = scope.get(SCOPE_KEY)
            log.info(
                "%s %s %d",
                method,
                route,
                status,
                extra={
                    "request_id": request_id,
                    "method": method,
                    "route": route,
                    "status": status,
                    "duration_ms": round(elapsed * 1000, 2),
                    "key_id": key.id if key else None,
                },
            )


class BodyTooLarge(Exception):
    """The request body passed the cap while it was being read."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _too_large(self) -> Problem:
        return Problem(
            413,
            f"the request body is larger than {self.max_bytes} bytes; send less "
            "(bulk: at most 1000 links per request)",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length":
                if not value.isdigit():
                    problem = Problem(400, "Content-Length must be a number of bytes")
                    await problem.response(scope["path"])(scope, receive, send)
                    return
                if int(value) > self.max_bytes:
                    await self._too_large().response(scope["path"])(scope, receive, send)
                    return
        received = 0
        response_started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise BodyTooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except BodyTooLarge:
            if response_started:
                raise
            await self._too_large().response(scope["path"])(scope, receive, send)
