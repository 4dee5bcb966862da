"""The redirect hot path on a real Granian edge: statuses, headers, query forwarding, lookup tiers.

Links are inserted straight into Postgres, so these tests exercise only the redirect side. Every
test uses fresh codes: the shared edge keeps its cache between tests.
"""

from __future__ import annotations

import asyncio
import secrets
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
import redis
from prometheus_client import REGISTRY

from edge.linkstore import StoreUnavailable
from edge.resources import Resources
from linkedge import keys
from linkedge.embedded import EmbeddedRedis
from linkedge.settings import Settings
from tests.conftest import Db, Edge

NO_STORE = "private, no-store"


def new_code() -> str:
    return "t" + secrets.token_hex(6)


def get(edge: httpx.Client, path: str, method: str = "GET") -> httpx.Response:
    return edge.request(method, path)


@pytest.mark.parametrize("redirect_type", [301, 302, 307, 308])
def test_each_redirect_type_answers_with_its_status_and_cache_policy(
    edge: httpx.Client, make_link: Callable[..., str], redirect_type: int
) -> None:
    code = make_link("https://example.org/a?x=1", redirect_type=redirect_type)
    response = get(edge, f"/{code}")
    assert response.status_code == redirect_type
    assert response.headers["location"] == "https://example.org/a?x=1"
    assert response.content == b""
    if redirect_type in (301, 308):
        assert response.headers["cache-control"] == "public, max-age=3600"
    else:
        assert response.headers["cache-control"] == NO_STORE


def test_default_is_302_and_head_answers_like_get(
    edge: httpx.Client, make_link: Callable[..., str]
) -> None:
    code = make_link("https://example.org/head")
    head = get(edge, f"/{code}", "HEAD")
    assert head.status_code == 302
    assert head.headers["location"] == "https://example.org/head"
    assert head.content == b""
    assert get(edge, f"/{code}").status_code == 302


def test_unknown_code_is_404_problem_json(edge: httpx.Client) -> None:
    response = get(edge, f"/{new_code()}")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 404
    assert "location" not in response.headers
    head = get(edge, f"/{new_code()}", "HEAD")
    assert head.status_code == 404 and head.content == b""


def test_deleted_and_disabled_links_are_404(
    edge: httpx.Client, make_link: Callable[..., str], db: Db
) -> None:
    deleted = make_link(deleted_at=_ts(-60))
    disabled = make_link(disabled=True)
    for code in (deleted, disabled):
        response = get(edge, f"/{code}")
        assert response.status_code == 404, code
        assert "location" not in response.headers


def _ts(offset_s: float) -> Any:
    import datetime

    return datetime.datetime.now(datetime.UTC) + datetime.timedelta(seconds=offset_s)


def test_expired_link_is_410_or_redirects_to_expired_url(
    edge: httpx.Client, make_link: Callable[..., str]
) -> None:
    gone = make_link(expires_at=_ts(-1))
    response = get(edge, f"/{gone}")
    assert response.status_code == 410
    assert response.headers["content-type"] == "application/problem+json"

    elsewhere = make_link(
        redirect_type=301, expires_at=_ts(-1), expired_url="https://example.org/expired"
    )
    response = get(edge, f"/{elsewhere}")
    assert response.status_code == 302
    assert response.headers["location"] == "https://example.org/expired"
    assert response.headers["cache-control"] == NO_STORE

    live = make_link(
        "https://example.org/live", expires_at=_ts(3600), expired_url="https://example.org/expired"
    )
    assert get(edge, f"/{live}").headers["location"] == "https://example.org/live"


def test_link_expiring_while_cached_turns_410(
    edge: httpx.Client, make_link: Callable[..., str]
) -> None:
    code = make_link(expires_at=_ts(1.5))
    assert get(edge, f"/{code}").status_code == 302
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and get(edge, f"/{code}").status_code != 410:
        time.sleep(0.1)
    assert get(edge, f"/{code}").status_code == 410


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_other_methods_are_405_with_allow(
    edge: httpx.Client, make_link: Callable[..., str], method: str
) -> None:
    code = make_link()
    response = edge.request(
        method, f"/{code}", content=b"x" if method in ("POST", "PUT", "PATCH") else None
    )
    assert response.status_code == 405
    assert response.headers["allow"] == "GET, HEAD"
    assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/" + "a" * 65,
        "/a.b",
        "/a%20b",
        "/a%0d%0aSet-Cookie:x",
        "/%C3%A9t%C3%A9",
        "/a~b",
        "/a%2Fb",
    ],
)
def test_bad_codes_are_404_without_a_lookup(
    edge: httpx.Client, redis_client: redis.Redis, path: str
) -> None:
    response = get(edge, path)
    assert response.status_code == 404
    assert "location" not in response.headers
    # A lookup leaves a miss marker in Redis; once a good unknown code's marker is there, the bad
    # code's would be too, had it been looked up.
    control = new_code()
    assert get(edge, f"/{control}").status_code == 404
    _wait_for(lambda: redis_client.exists(keys.link(control)) == 1)
    assert redis_client.exists(keys.link(unquote(path[1:]))) == 0


def test_code_of_64_characters_is_looked_up(
    edge: httpx.Client, make_link: Callable[..., str]
) -> None:
    code = make_link(code="A-_9" * 16)
    assert get(edge, f"/{code}").status_code == 302


def test_forward_query_appends_the_request_parameters(
    edge: httpx.Client, make_link: Callable[..., str]
) -> None:
    code = make_link("https://example.org/p?a=1&utm_source=site#top", forward_query=True)
    response = get(edge, f"/{code}?b=2&a=9&utm_source=x&c=%20d")
    # The target's own parameters win; the others are appended before the fragment.
    assert (
        response.headers["location"] == "https://example.org/p?a=1&utm_source=site&b=2&c=%20d#top"
    )
    assert (
        get(edge, f"/{code}").headers["location"] == "https://example.org/p?a=1&utm_source=site#top"
    )

    bare = make_link("https://example.org/bare", forward_query=True, redirect_type=308)
    response = get(edge, f"/{bare}?q=1")
    assert response.status_code == 308
    assert response.headers["location"] == "https://example.org/bare?q=1"
    assert response.headers["cache-control"] == "public, max-age=3600"

    plain = make_link("https://example.org/plain")
    assert get(edge, f"/{plain}?q=1").headers["location"] == "https://example.org/plain"


def test_forwarded_query_cannot_inject_header_bytes(
    edge: httpx.Client, make_link: Callable[..., str]
) -> None:
    code = make_link("https://example.org/p", forward_query=True)
    with httpx.Client(base_url=edge.base_url, timeout=10) as client:
        response = client.get(f"/{code}?x=%0d%0aSet-Cookie:%20a=b&y=\u00e9")
    assert response.status_code == 302
    assert "set-cookie" not in response.headers
    location = response.headers["location"]
    assert "\r" not in location and "\n" not in location and location.isascii()
    assert location.startswith("https://example.org/p?x=%0d%0aSet-Cookie:%20a=b&y=")


def test_stored_target_with_control_characters_is_refused(
    edge: httpx.Client, make_link: Callable[..., str]
) -> None:
    code = make_link("https://example.org/\r\nSet-Cookie: a=b")
    response = get(edge, f"/{code}")
    assert response.status_code == 404
    assert "set-cookie" not in response.headers and "location" not in response.headers


def test_non_ascii_target_is_percent_encoded(
    edge: httpx.Client, make_link: Callable[..., str]
) -> None:
    code = make_link("https://xn--bcher-kva.example/caf\u00e9")
    assert get(edge, f"/{code}").headers["location"] == "https://xn--bcher-kva.example/caf%C3%A9"


def test_cache_hit_does_not_read_postgres(
    shared_edge: Edge, make_link: Callable[..., str], db: Db, redis_client: redis.Redis
) -> None:
    code = make_link("https://example.org/old")
    with shared_edge.client() as client:
        assert client.get(f"/{code}").headers["location"] == "https://example.org/old"
    _wait_for(lambda: redis_client.get(keys.link(code)) is not None)
    # Changed behind the edge's back (no invalidation): only a Postgres read could see it.
    db.execute("UPDATE links SET url = 'https://example.org/new' WHERE code = $1", code)
    for _ in range(20):
        with shared_edge.client() as client:  # new connections: both workers answer
            assert client.get(f"/{code}").headers["location"] == "https://example.org/old"


def test_unknown_codes_are_remembered_as_misses(
    edge: httpx.Client, redis_client: redis.Redis, make_link: Callable[..., str], db: Db
) -> None:
    code = new_code()
    assert get(edge, f"/{code}").status_code == 404
    _wait_for(lambda: redis_client.get(keys.link(code)) == b"-")
    assert 0 < redis_client.pttl(keys.link(code)) <= 5000
    # Created behind the edge's back: the remembered miss still answers until it expires.
    make_link(code=code)
    assert get(edge, f"/{code}").status_code == 404


def test_link_record_is_written_back_to_redis(
    edge: httpx.Client, redis_client: redis.Redis, make_link: Callable[..., str]
) -> None:
    code = make_link("https://example.org/wb", redirect_type=307)
    assert get(edge, f"/{code}").status_code == 307
    _wait_for(lambda: redis_client.get(keys.link(code)) is not None)
    assert b'"https://example.org/wb"' in redis_client.get(keys.link(code))  # type: ignore[operator]
    assert redis_client.ttl(keys.link(code)) > 3600


def test_redis_down_still_redirects_from_postgres(
    start_edge: Callable[..., Edge], make_link: Callable[..., str], tmp_path: Path
) -> None:
    own_redis = EmbeddedRedis(tmp_path / "redis", persist=False).start()
    try:
        edge = start_edge(workers=1, REDIS_URL=own_redis.url)
        warm = make_link("https://example.org/warm")
        with edge.client() as client:
            assert client.get(f"/{warm}").status_code == 302
        own_redis.stop()
        cold = make_link("https://example.org/cold", redirect_type=301)
        with edge.client() as client:
            assert client.get(f"/{warm}").headers["location"] == "https://example.org/warm"
            for _ in range(3):
                response = client.get(f"/{cold}")
                assert response.status_code == 301
                assert response.headers["location"] == "https://example.org/cold"
            assert client.get(f"/{new_code()}").status_code == 404
    finally:
        own_redis.stop()


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def _lookups(tier: str) -> float:
    return REGISTRY.get_sample_value("linkedge_link_lookups_total", {"tier": tier}) or 0.0


def test_concurrent_lookups_share_fetches_and_round_trips(
    settings: Settings, make_link: Callable[..., str], redis_client: redis.Redis
) -> None:
    hot = make_link("https://example.org/hot")
    many = [make_link(f"https://example.org/{i}") for i in range(30)]

    async def go() -> None:
        first = await Resources.open(settings)
        try:
            before = _lookups("postgres")
            records = await asyncio.gather(*(first.links.lookup(hot) for _ in range(50)))
            assert {r.url for r in records if r is not None} == {"https://example.org/hot"}
            first.links.fold()
            assert _lookups("postgres") - before == 1  # one fetch for 50 concurrent requests
            selects = first.links.selects
            records = await asyncio.gather(*(first.links.lookup(code) for code in many))
            assert [r.url for r in records if r is not None] == [
                f"https://example.org/{i}" for i in range(30)
            ]
            assert first.links.selects - selects == 1  # 30 cold lookups, one Postgres query
            await asyncio.sleep(0.2)  # write-backs to Redis
        finally:
            await first.close()
        second = await Resources.open(settings)  # an empty local cache, as in a new worker
        try:
            mgets = _commandstat(redis_client, "mget")
            before = _lookups("redis")
            records = await asyncio.gather(*(second.links.lookup(code) for code in many))
            assert [r.url for r in records if r is not None] == [
                f"https://example.org/{i}" for i in range(30)
            ]
            second.links.fold()
            assert _lookups("redis") - before == 30
            assert _commandstat(redis_client, "mget") - mgets == 1  # one MGET for the whole tick
        finally:
            await second.close()

    asyncio.run(go())


def _commandstat(client: redis.Redis, command: str) -> int:
    stats = client.info("commandstats").get(f"cmdstat_{command}", {})
    return int(stats.get("calls", 0)) if isinstance(stats, dict) else 0


def test_postgres_gone_makes_a_cold_lookup_store_unavailable(settings: Settings) -> None:
    """A closed pool or a dropped connection (asyncpg's InterfaceError, not a PostgresError) is
    the store being unavailable: the redirect answers 503, never 500."""

    async def go() -> None:
        resources = await Resources.open(settings)
        try:
            await resources.pg.close()
            with pytest.raises(StoreUnavailable):
                await resources.links.lookup(f"gone{uuid.uuid4().hex[:8]}")
        finally:
            await resources.close()

    asyncio.run(go())


def test_a_click_that_cannot_be_encoded_is_counted_and_the_redirect_still_answers(
    settings: Settings, make_link: Callable[..., str]
) -> None:
    """The handler calls the encoder itself (no Python frame around it): when that raises, the
    redirect is still sent and the click is counted as dropped ("invalid"), not lost silently."""
    from edge.redirect import RedirectHandler

    code = make_link("https://example.org/odd-headers")

    def broken_headers() -> Any:  # a scope the C encoder hands to the Python one, which fails
        yield (b"user-agent", b"x")
        raise ValueError("torn header list")

    async def go() -> list[dict[str, Any]]:
        resources = await Resources.open(settings)
        try:
            handler = RedirectHandler(resources)
            sent: list[dict[str, Any]] = []

            async def send(message: dict[str, Any]) -> None:
                sent.append(message)

            scope = {"type": "http", "method": "GET", "path": f"/{code}", "query_string": b"",
                     "headers": broken_headers(), "client": ("192.0.2.1", 1)}  # fmt: skip
            await handler(scope, None, send)  # type: ignore[arg-type]
            assert resources.clicks._encoder.pending == 0
            return sent
        finally:
            await resources.close()

    before = REGISTRY.get_sample_value("linkedge_clicks_dropped_total", {"reason": "invalid"}) or 0
    sent = asyncio.run(go())
    assert sent[0]["status"] == 302
    assert dict(sent[0]["headers"])[b"location"] == b"https://example.org/odd-headers"
    after = REGISTRY.get_sample_value("linkedge_clicks_dropped_total", {"reason": "invalid"}) or 0
    assert after - before == 1
