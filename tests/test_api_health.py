"""Probes, metrics, request ids and the API's log line."""

from __future__ import annotations

import re
from collections.abc import Callable
from types import SimpleNamespace

import asyncpg
import httpx
import orjson
import pytest
import redis.asyncio as aioredis

from edge.api import build_api
from linkedge.settings import ConfigError, Settings
from tests.conftest import Account, Edge, Stores, run

API = "/api/v1"


def test_probes(edge: httpx.Client) -> None:
    health = edge.get("/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    assert edge.get("/readyz").status_code == 200


def test_metrics_label_by_route_template(
    edge: httpx.Client, account: Callable[..., Account]
) -> None:
    who = account()
    code = edge.post(
        f"{API}/links", json={"url": "https://example.com/"}, headers=who.headers
    ).json()["code"]
    assert edge.get(f"{API}/links/{code}", headers=who.headers).status_code == 200
    response = edge.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    samples = [
        line for line in text.splitlines() if line.startswith("linkedge_api_requests_total{")
    ]
    assert any('route="/api/v1/links/{code}"' in line for line in samples), text
    assert "linkedge_api_request_duration_seconds_bucket" in text
    assert code not in text


def test_request_id_is_echoed_or_generated(edge: httpx.Client) -> None:
    echoed = edge.get(f"{API}/links", headers={"X-Request-ID": "abc-123.x"})
    assert echoed.headers["x-request-id"] == "abc-123.x"
    replaced = edge.get(f"{API}/links", headers={"X-Request-ID": "<script>"})
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])


def test_one_json_log_line_per_api_request(
    start_edge: Callable[..., Edge], account: Callable[..., Account]
) -> None:
    edge = start_edge(workers=1, LOG_LEVEL="INFO")
    who = account()
    with edge.client() as client:
        assert (
            client.get(
                f"{API}/links", headers={**who.headers, "X-Request-ID": "trace-me-1"}
            ).status_code
            == 200
        )
        assert client.get("/nosuchcode").status_code == 404
    lines = [
        orjson.loads(line) for line in edge.process.output().splitlines() if line.startswith("{")
    ]
    mine = [line for line in lines if line.get("request_id") == "trace-me-1"]
    assert len(mine) == 1
    assert (mine[0]["route"], mine[0]["status"], mine[0]["method"]) == ("/api/v1/links", 200, "GET")
    assert mine[0]["key_id"] == who.key_id and mine[0]["level"] == "info"
    assert not [line for line in lines if "nosuchcode" in str(line)], "a redirect was logged"


class NullLinkStore:
    """Stands in for edge.linkstore.LinkStore where no redirect cache exists (in-process app)."""

    async def invalidate(self, code: str) -> None:
        pass

    async def invalidate_many(self, codes: list[str]) -> None:
        pass


def test_postgres_down_is_503_not_500(stores: Stores, account: Callable[..., Account]) -> None:
    """The API app in-process, over a Postgres pool that is closed: problems say 503."""
    who = account()

    async def go() -> list[httpx.Response]:
        pool = await asyncpg.create_pool(stores.database_url, min_size=1, max_size=1)
        await pool.close()
        redis = aioredis.Redis.from_url(stores.redis_url)
        resources = SimpleNamespace(
            settings=Settings(), pg=pool, redis=redis, links=NullLinkStore()
        )
        app = build_api(resources, frozenset({"api"}))
        try:
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://api"
            ) as client:
                return [
                    await client.get(f"{API}/links", headers=who.headers),
                    await client.get("/readyz"),
                ]
        finally:
            await redis.aclose()

    listed, ready = run(go())
    assert listed.status_code == 503, listed.text
    assert listed.headers["content-type"] == "application/problem+json"
    assert "retry" in listed.json()["detail"]
    assert ready.status_code == 503 and "postgres" in ready.json()["detail"]
    assert "redis" not in ready.json()["detail"]


def test_metrics_only_to_allowed_peers_not_through_a_proxy(stores: Stores) -> None:
    """The API app in-process, asked from several peer addresses."""

    async def scrape(settings: Settings, peer: str, **headers: str) -> httpx.Response:
        redis = aioredis.Redis.from_url(stores.redis_url)
        resources = SimpleNamespace(settings=settings, pg=None, redis=redis, links=NullLinkStore())
        app = build_api(resources, frozenset({"api"}))
        transport = httpx.ASGITransport(app=app, client=(peer, 40000))
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
                return await client.get("/metrics", headers=headers)
        finally:
            await redis.aclose()

    default = Settings()
    for peer in ("127.0.0.1", "::1", "10.1.2.3", "172.20.0.9", "192.168.1.1", "fd12::1"):
        assert run(scrape(default, peer)).status_code == 200, peer
    for peer in ("203.0.113.7", "8.8.8.8", "2001:db8::1", "172.32.0.1"):
        refused = run(scrape(default, peer))
        assert refused.status_code == 403, peer
        assert refused.headers["content-type"] == "application/problem+json"
        assert "linkedge_" not in refused.text and "METRICS_ALLOW" in refused.json()["detail"]
    for header in ("X-Forwarded-For", "Forwarded", "X-Real-IP"):  # a proxy's own address is private
        assert run(scrape(default, "10.0.0.5", **{header: "203.0.113.7"})).status_code == 403
    only = Settings.from_env({"METRICS_ALLOW": "203.0.113.0/24"})
    assert run(scrape(only, "203.0.113.7")).status_code == 200
    assert run(scrape(only, "127.0.0.1")).status_code == 403
    with pytest.raises(ConfigError, match="METRICS_ALLOW"):
        run(scrape(Settings.from_env({"METRICS_ALLOW": "10.0.0.0/8,not-a-network"}), "10.0.0.1"))


def test_a_request_before_the_lifespan_gets_a_503() -> None:
    """The app's parts exist only once its lifespan built them: before that, 503, not a crash."""
    from edge.app import EdgeApp

    async def go() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=EdgeApp(Settings()))
        async with httpx.AsyncClient(transport=transport, base_url="http://edge") as client:
            return [await client.get(path) for path in ("/abc", "/api/v1/links", "/healthz")]

    for response in run(go()):
        assert response.status_code == 503 and response.headers["retry-after"] == "1"
