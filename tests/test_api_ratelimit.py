"""Per-key GCRA rate limits in Redis, on a real edge started with a low limit."""

from __future__ import annotations

import re
import uuid
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


def test_key_lookups_per_client_ip_then_429_and_nothing_stored(
    start_edge: Callable[..., Edge], account: Callable[..., Account], db: Db
) -> None:
    """Keys a worker has not cached cost a Postgres lookup: AUTH_LOOKUP_BURST of them at once per
    client IP, then 429 with Retry-After. Cached keys are not charged. Behind a trusted proxy the
    client IP comes from X-Forwarded-For (addresses unique to this run: the bucket lives in Redis)."""
    edge = start_edge(
        workers=1,
        AUTH_LOOKUPS_PER_MINUTE="6",
        AUTH_LOOKUP_BURST="3",
        TRUSTED_PROXIES="127.0.0.1/32",
    )
    run = uuid.uuid4().hex[:4]
    here, elsewhere = (
        {"X-Forwarded-For": f"2001:db8::{run}:1"},
        {"X-Forwarded-For": f"2001:db8::{run}:2"},
    )
    who = account()
    random_key = {"Authorization": f"Bearer lk_{'x' * 43}"}
    with edge.client() as client:
        mine = {**who.headers, **here}
        assert client.get(f"{API}/links", headers=mine).status_code == 200  # charged: 1
        for n in range(2):  # unknown keys: charged 2 and 3, then cached as unknown
            unknown = {"Authorization": f"Bearer lk_random{n}{'y' * 36}", **here}
            assert_problem(client.get(f"{API}/links", headers=unknown), 401)
        limited = client.post(
            f"{API}/links", json={"url": "https://example.com/"}, headers={**random_key, **here}
        )
        body = assert_problem(limited, 429)
        assert "API key lookups from this address" in body["detail"]
        assert int(limited.headers["retry-after"]) >= 1
        # Another client address has its own bucket: a plain 401 there.
        assert_problem(client.get(f"{API}/links", headers={**random_key, **elsewhere}), 401)
        # The key in use is cached: not charged, still served.
        for _ in range(3):
            assert client.get(f"{API}/links", headers=mine).status_code == 200
        # A malformed token costs no lookup: a plain 401 even now.
        bad = {"Authorization": "Bearer nope", **here}
        assert_problem(client.get(f"{API}/links", headers=bad), 401)
        metrics = client.get("/metrics").text
    assert links_of(db, who) == 0
    limited_total = re.search(
        r"^linkedge_rate_limited_total(\{[^}]*\})? (\S+)$", metrics, re.MULTILINE
    )
    assert limited_total and float(limited_total.group(2)) == 1.0, metrics


def test_redis_down_fails_open_and_readyz_names_it(
    start_edge: Callable[..., Edge], account: Callable[..., Account]
) -> None:
    edge = start_edge(
        REDIS_URL=f"redis://127.0.0.1:{free_port()}/0", RATE_LIMIT_BURST="1", AUTH_LOOKUP_BURST="1"
    )
    who = account()
    with edge.client() as client:
        ready = client.get("/readyz")
        assert "redis" in assert_problem(ready, 503)["detail"]
        assert "postgres" not in ready.json()["detail"]
        for _ in range(3):  # above the burst of 1: served anyway, the limiter fails open
            assert client.get(f"{API}/links", headers=who.headers).status_code == 200
        assert "ratelimit" not in client.get(f"{API}/links", headers=who.headers).headers
        for n in range(3):  # key lookups above their burst of 1: 401, not 429 (fails open too)
            unknown = {"Authorization": f"Bearer lk_unknown{n}{'z' * 35}"}
            assert_problem(client.get(f"{API}/links", headers=unknown), 401)
        metrics = client.get("/metrics").text
    errors = re.search(
        r"^linkedge_rate_limit_errors_total(\{[^}]*\})? (\S+)$", metrics, re.MULTILINE
    )
    assert errors and float(errors.group(2)) >= 3, metrics
