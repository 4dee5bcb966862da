"""The analytics port: ``/internal/*`` only with the shared token, the probes open to all."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from conftest import ANALYTICS_TOKEN
from test_analytics import Analytics, start_analytics  # noqa: F401 - fixture used by name

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
