"""Per-key GCRA rate limits in Redis, on a real edge started with a low limit."""

from __future__ import annotations

import re
from collections.abc import Callable

from linkedge.embedded import free_port
from tests.conftest import Account, Db, Edge
from tests.test_api_errors import assert_problem, links_of

API = "/api/v1"


def test_burst_then_429_with_headers_per_key(
    start_edge: Callable[..., Edge], account: Callable[..., Account], db: Db
) -> None:
    edge = start_edge(RATE_LIMIT_PER_MINUTE="6", RATE_LIMIT_BURST="3")
    busy, quiet = account(), account()
    with edge.client() as client:
        for expected_remaining in (2, 1, 0):
            ok = client.get(f"{API}/links", headers=busy.headers)
            assert ok.status_code == 200
            assert ok.headers["ratelimit-policy"] == '"per-key";q=3;w=30'
            remaining = re.fullmatch(r'"per-key";r=(\d+);t=(\d+)', ok.headers["ratelimit"])
            assert remaining and int(remaining.group(1)) == expected_remaining
        limited = client.post(
            f"{API}/links", json={"url": "https://example.com/"}, headers=busy.headers
        )
        body = assert_problem(limited, 429)
        assert "retry in" in body["detail"]
        assert int(limited.headers["retry-after"]) >= 1
        assert limited.headers["ratelimit-policy"] == '"per-key";q=3;w=30'
        assert limited.headers["ratelimit"].startswith('"per-key";r=0;t=')
        assert links_of(db, busy) == 0
        # Another key has its own bucket.
        assert client.get(f"{API}/links", headers=quiet.headers).status_code == 200
        metrics = client.get("/metrics").text
    limited_total = re.search(
        r"^linkedge_rate_limited_total(\{[^}]*\})? (\S+)$", metrics, re.MULTILINE
    )
    assert limited_total and float(limited_total.group(2)) == 1.0, metrics


def test_redis_down_fails_open_and_readyz_names_it(
    start_edge: Callable[..., Edge], account: Callable[..., Account]
) -> None:
    edge = start_edge(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", RATE_LIMIT_BURST="1")
    who = account()
    with edge.client() as client:
        ready = client.get("/readyz")
        assert "redis" in assert_problem(ready, 503)["detail"]
        assert "postgres" not in ready.json()["detail"]
        for _ in range(3):  # above the burst of 1: served anyway, the limiter fails open
            assert client.get(f"{API}/links", headers=who.headers).status_code == 200
        assert "ratelimit" not in client.get(f"{API}/links", headers=who.headers).headers
        metrics = client.get("/metrics").text
    errors = re.search(
        r"^linkedge_rate_limit_errors_total(\{[^}]*\})? (\S+)$", metrics, re.MULTILINE
    )
    assert errors and float(errors.group(2)) >= 3, metrics
