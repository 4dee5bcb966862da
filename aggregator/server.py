"""The aggregator's HTTP port: ``/metrics``, ``/healthz``, ``/readyz`` (``linkedge.httpserve``)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from linkedge.httpserve import HttpServer, json_response, probe_app, problem

ReadinessCheck = Callable[[], Awaitable[str | None]]  # None when ready, else the reason it is not


class ProbeServer(HttpServer):
    """The three endpoints on ``host:port`` (0: a free port, reported by ``port``)."""

    def __init__(self, host: str, port: int, ready: ReadinessCheck) -> None:
        self.ready = ready
        super().__init__(probe_app(self._readyz), host, port)

    async def _readyz(self, request: Request) -> Response:
        reason = await self.ready()
        if reason is not None:
            return problem(503, reason)
        return json_response({"status": "ready"})
