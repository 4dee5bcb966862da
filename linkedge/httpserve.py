"""The HTTP port of the aggregator and of analytics: a Starlette app served by uvicorn in-process.

``HttpServer`` binds the socket itself (port 0: a free one, reported by ``port``; a port in use
raises ``OSError`` like any bind), then runs uvicorn's server on that socket inside the process's
own event loop. uvicorn's ``serve()`` is not used: it takes over SIGTERM and SIGINT, which belong
to the worker loop (``linkedge.worker``); ``startup``, ``main_loop`` (the once-a-second ``Date``
header refresh) and ``shutdown`` are the same steps without that.

Errors are RFC 9457 problem documents (``problem``), Starlette's own 404 and 405 included
(``probe_app``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import orjson
import uvicorn
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Receive, Scope, Send

PROBLEM = "application/problem+json"
SHUTDOWN_TIMEOUT_S = 5
_TITLES = {
    400: "Bad Request",
    401: "Unauthorized",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    503: "Service Unavailable",
}


def problem(
    status: int, detail: str, *, headers: dict[str, str] | None = None, **extra: Any
) -> Response:
    """An RFC 9457 problem+json answer; ``extra`` adds members (``errors`` on a 422)."""
    body = {
        "type": "about:blank",
        "title": _TITLES.get(status, "Error"),
        "status": status,
        "detail": detail,
        **extra,
    }
    return Response(orjson.dumps(body), status_code=status, headers=headers, media_type=PROBLEM)


def json_response(data: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(data), status_code=status, media_type="application/json")


async def _http_exception(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if exc.status_code == 404:
        return problem(404, f"no route {request.url.path}")
    headers = dict(exc.headers or {})
    if exc.status_code == 405:
        return problem(405, f"{request.method} is not allowed here", headers=headers)
    return problem(exc.status_code, str(exc.detail), headers=headers)


async def _metrics(request: Request) -> Response:
    return Response(generate_latest(REGISTRY), headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


def probe_app(
    readyz: Callable[[Request], Awaitable[Response]], routes: Sequence[BaseRoute] = ()
) -> Starlette:
    """``/metrics``, ``/healthz``, ``/readyz`` (GET and HEAD) and ``routes``; errors as problems."""
    return Starlette(
        routes=[
            Route("/metrics", _metrics, methods=["GET"]),
            Route("/healthz", _healthz, methods=["GET"]),
            Route("/readyz", readyz, methods=["GET"]),
            *routes,
        ],
        exception_handlers={HTTPException: _http_exception},
    )


class BearerToken:
    """Pure ASGI middleware: 401 unless ``Authorization: Bearer <token>`` carries ``token``.

    An empty ``token`` refuses every request (fail closed). The answer says only what to send,
    never whether a token was close or which routes exist behind it.
    """

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self._authorized(scope):
            refused = problem(
                401,
                "send the shared analytics token as 'Authorization: Bearer <ANALYTICS_TOKEN>'",
                headers={"WWW-Authenticate": 'Bearer realm="linkedge-analytics"'},
            )
            await refused(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _authorized(self, scope: Scope) -> bool:
        if not self.token:
            return False
        for name, value in scope["headers"]:
            if name == b"authorization":
                scheme, _, presented = value.strip().partition(b" ")
                return scheme.lower() == b"bearer" and hmac.compare_digest(
                    presented.strip(), self.token
                )
        return False


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.create_server((host, port), family=family, backlog=128)
    sock.setblocking(False)
    return sock


class HttpServer:
    """uvicorn serving ``app`` on ``host:port`` inside the running event loop."""

    def __init__(self, app: Any, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._config = uvicorn.Config(
            app,
            host=host,
            port=port,
            loop="none",
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=SHUTDOWN_TIMEOUT_S,
        )
        self._server: uvicorn.Server | None = None
        self._sockets: list[socket.socket] = []
        self._ticker: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Bind and serve; the bound port."""
        sock = _bind(self.host, self.port)
        self.port = int(sock.getsockname()[1])
        self._config.load()
        server = uvicorn.Server(self._config)
        server.lifespan = self._config.lifespan_class(self._config)
        await server.startup(sockets=[sock])
        self._server, self._sockets = server, [sock]
        self._ticker = asyncio.create_task(server.main_loop())
        return self.port

    async def close(self) -> None:
        """Stop accepting, let requests in progress finish (up to ``SHUTDOWN_TIMEOUT_S``)."""
        server, self._server = self._server, None
        if server is None:
            return
        server.should_exit = True
        if self._ticker is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
        await server.shutdown(sockets=self._sockets)
