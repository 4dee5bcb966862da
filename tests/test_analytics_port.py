"""The analytics port: ``/internal/*`` only with the shared token, the probes open to all; and the
server every port of the aggregator and analytics runs on (``linkedge.httpserve``)."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from conftest import ANALYTICS_TOKEN, run
from starlette.requests import Request
from starlette.responses import Response
from test_analytics import Analytics, start_analytics  # noqa: F401 - fixture used by name

from linkedge.httpserve import HttpServer, probe_app, problem

DATA_ROUTES = [
    ("/internal/daily-counts", {"since": "2020-01-01"}),
    ("/internal/link-counts", {"link_id": "1"}),
    ("/internal/hourly", {"link_id": "1", "since": "2020-01-01"}),
    ("/internal/no-such-route", {}),
]


def _get(analytics: Analytics, path: str, params: dict[str, str], **headers: str) -> httpx.Response:
    return httpx.get(f"{analytics.url}{path}", params=params, headers=headers, timeout=30)


def _assert_refused(response: httpx.Response) -> None:
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"].startswith("Bearer ")
    assert set(response.json()) == {"type", "title", "status", "detail"}


def test_data_routes_need_the_token_probes_do_not(
    start_analytics: Callable[..., Analytics],  # noqa: F811
) -> None:
    analytics = start_analytics()
    for path, params in DATA_ROUTES:
        _assert_refused(_get(analytics, path, params))
        _assert_refused(_get(analytics, path, params, Authorization="Bearer wrong-token"))
        _assert_refused(_get(analytics, path, params, Authorization=f"Basic {ANALYTICS_TOKEN}"))
        _assert_refused(_get(analytics, path, params, Authorization=f"Bearer {ANALYTICS_TOKEN}x"))
    assert analytics.get("/internal/daily-counts", since="2020-01-01").json()["rows"] == []
    assert analytics.get("/internal/no-such-route").status_code == 404
    for probe in ("/metrics", "/healthz", "/readyz"):
        assert _get(analytics, probe, {}).status_code == 200, probe


@pytest.mark.parametrize("presented", ["Bearer", "Bearer anything"])
def test_an_empty_token_refuses_every_data_request(
    start_analytics: Callable[..., Analytics],  # noqa: F811
    presented: str,
) -> None:
    analytics = start_analytics(ANALYTICS_TOKEN="")
    for path, params in DATA_ROUTES:
        _assert_refused(_get(analytics, path, params, Authorization=presented))
    assert _get(analytics, "/healthz", {}).status_code == 200


def test_http_server_reports_a_free_port_refuses_a_taken_one_and_frees_it() -> None:
    """``linkedge.httpserve``: port 0 binds a free port; a taken port is an OSError at start."""

    async def go() -> tuple[int, int, str, int]:
        async def ready(request: Request) -> Response:
            return problem(503, "not yet")

        first = HttpServer(probe_app(ready), "127.0.0.1", 0)
        port = await first.start()
        try:
            with pytest.raises(OSError):
                await HttpServer(probe_app(ready), "127.0.0.1", port).start()
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                head = await client.head("/healthz")
                missing = await client.get("/nope")
                readyz = await client.get("/readyz")
        finally:
            await first.close()
        again = HttpServer(probe_app(ready), "127.0.0.1", port)
        assert await again.start() == port  # closed: the port is free again
        await again.close()
        return (
            head.status_code,
            missing.status_code,
            missing.headers["content-type"],
            readyz.status_code,
        )

    assert run(go()) == (200, 404, "application/problem+json", 503)
