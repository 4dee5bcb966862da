"""Probes and metrics, outside the authenticated mount.

``/healthz``: the worker answers (no I/O), for liveness. ``/readyz``: Redis PING and Postgres
``SELECT 1`` within ``PROBE_TIMEOUT_S`` each, for readiness; a 503 problem names what is down.
``/metrics``: Prometheus text format, every worker's metrics merged when
``PROMETHEUS_MULTIPROC_DIR`` is set (Granian runs several worker processes), answered only to a
peer in ``METRICS_ALLOW`` that did not come through a proxy; anyone else on the public port gets a
403 problem.
"""

from __future__ import annotations

import asyncio
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge.api.deps import ApiResources
from edge.api.problems import Problem
from edge.clickinfo import in_networks, trusted_networks

PROBE_TIMEOUT_S = 1.0
PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")
_OK = b'{"status":"ok"}'


class HealthRoutes:
    def __init__(self, resources: ApiResources) -> None:
        self.resources = resources
        self.multiproc_dir: str = resources.settings.prometheus_multiproc_dir
        self.metrics_allow = trusted_networks(resources.settings.metrics_allow, "METRICS_ALLOW")

    def routes(self) -> list[Route]:
        return [
            Route("/healthz", self.healthz, methods=["GET", "HEAD"]),
            Route("/readyz", self.readyz, methods=["GET", "HEAD"]),
            Route("/metrics", self.metrics, methods=["GET"]),
        ]

    async def healthz(self, request: Request) -> Response:
        return Response(_OK, media_type="application/json")

    async def _check(self, probe: Any) -> str | None:
        try:
            await asyncio.wait_for(probe, PROBE_TIMEOUT_S)
        except Exception as exc:  # noqa: BLE001 - any failure means "not ready"
            return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        return None

    async def readyz(self, request: Request) -> Response:
        redis_error, pg_error = await asyncio.gather(
            self._check(self.resources.redis.ping()),
            self._check(self.resources.pg.fetchval("SELECT 1")),
        )
        down = {
            name: error for name, error in (("redis", redis_error), ("postgres", pg_error)) if error
        }
        if down:
            detail = "not ready: " + "; ".join(
                f"{name} is down ({error})" for name, error in down.items()
            )
            return Problem(503, detail, headers={"Retry-After": "1"}).response(request.url.path)
        return Response(_OK, media_type="application/json")

    def scraper(self, request: Request) -> bool:
        """Whether ``request`` may read ``/metrics``: its peer is in ``METRICS_ALLOW`` and it did
        not come through a proxy (whose own address may well be private)."""
        if request.client is None or any(name in request.headers for name in PROXY_HEADERS):
            return False
        return in_networks(request.client.host, self.metrics_allow)

    async def metrics(self, request: Request) -> Response:
        if not self.scraper(request):
            detail = "/metrics is answered only to peers in METRICS_ALLOW, not through a proxy"
            return Problem(403, detail).response(request.url.path)
        if self.multiproc_dir:
            registry = CollectorRegistry()
            collector = MultiProcessCollector  # untyped in prometheus-client
            collector(registry, path=self.multiproc_dir)  # type: ignore[no-untyped-call]
            output = generate_latest(registry)
        else:
            output = generate_latest(REGISTRY)
        return Response(output, headers={"Content-Type": CONTENT_TYPE_LATEST})
