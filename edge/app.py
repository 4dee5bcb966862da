"""The edge ASGI app: a two-way dispatch with no middleware in front of the redirect.

A GET or HEAD of a link in the worker's cache is answered first, whole, by one C call
(``RedirectHandler.hot_path``: the handler's own work for that case, in C). Otherwise
``/{code}`` goes straight to the raw-ASGI redirect handler (``edge.redirect``); every other path
(``/api/v1/...``, ``/healthz``, ``/readyz``, ``/metrics``) goes to the Starlette app of
``edge.api``. Resources (Redis, the Postgres pool, the caches, the click recorder) are created in
the lifespan, once per worker.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from starlette.types import ASGIApp, Receive, Scope, Send

from edge.api import build_api
from edge.clickencoder import kind_of
from edge.metrics import BUILD_INFO
from edge.redirect import Answer, RedirectHandler, no_answer
from edge.resources import Resources
from linkedge import __version__
from linkedge.settings import Settings

log = logging.getLogger("linkedge.edge")

# First path segments that are never short codes: the API app owns them.
RESERVED = frozenset(
    {
        "api",
        "healthz",
        "readyz",
        "metrics",
        "favicon.ico",
        "robots.txt",
        "static",
        "docs",
        "dashboard",
    }
)


async def starting(scope: Scope, receive: Receive, send: Send) -> None:
    """What answers a request that comes before the lifespan has built the app: a 503."""
    await send({"type": "http.response.start", "status": 503, "headers": [(b"retry-after", b"1")]})
    await send({"type": "http.response.body", "body": b""})


class EdgeApp:
    """The composition root: the lifespan builds the worker's resources, then the redirect
    handler, its C hot path and the API app from them, each given what it needs (typed by
    ``edge.redirect.RedirectDeps`` and ``edge.api.deps.ApiResources``)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.resources: Resources | None = None
        self.redirect: ASGIApp = starting
        self.api: ASGIApp = starting
        self.answer: Callable[[Scope], Answer | None] = no_answer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            # A cached link's redirect, whole, in one C call (RedirectHandler.hot_path); None
            # for anything else, which takes the path below.
            answer = self.answer(scope)
            if answer is not None:
                await send(answer[0])
                await send(answer[1])
                return
            path: str = scope["path"]
            # One segment that is not reserved: a short code. Everything else: the API app.
            if path.count("/") == 1 and path[1:] not in RESERVED:
                await self.redirect(scope, receive, send)
            else:
                await self.api(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    self.resources = await Resources.open(self.settings)
                    redirect = RedirectHandler(self.resources)
                    self.answer = redirect.hot_path(RESERVED)
                    self.redirect = redirect
                    self.api = build_api(self.resources, reserved=RESERVED)
                    announce(self.resources, hot="python" if self.answer is no_answer else "c")
                except Exception as exc:  # report to the server, which exits
                    await send({"type": "lifespan.startup.failed", "message": repr(exc)})
                    raise
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.answer = no_answer
                if self.resources is not None:
                    await self.resources.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def announce(resources: Resources, hot: str) -> None:
    """Say which click encoder and redirect path this worker runs: in its start-up log line and
    as labels of ``linkedge_build_info``."""
    encoder = kind_of(resources.clicks.encoder)
    BUILD_INFO.labels(version=__version__, encoder=encoder, hot_path=hot).set(1)
    log.info("edge worker started", extra={"pid": os.getpid(), "encoder": encoder, "hot_path": hot})


def create_app() -> EdgeApp:
    """Granian factory (``--factory edge.app:create_app``): settings from the environment."""
    return EdgeApp(Settings.from_env())
