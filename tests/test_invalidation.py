"""Edits reach every worker: ``LinkStore.invalidate`` (what the API calls after a commit) over Redis.

The edges here keep cache entries for 10 minutes, so a test that sees the new target within a few
seconds saw the invalidation, not an expiry.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis

from edge.edits import EditLog
from edge.resources import Resources
from linkedge.embedded import EmbeddedRedis
from linkedge.settings import Secret, Settings
from tests.conftest import Db, Edge

LONG_TTL = {"CACHE_TTL_S": "600"}
FRESH_REQUESTS = 60


def locations(edge: Edge, code: str, count: int = FRESH_REQUESTS) -> set[str | None]:
    """The Location each of ``count`` requests got, each on a new connection (so every worker answers)."""
    seen: set[str | None] = set()
    for _ in range(count):
        with edge.client() as client:
            response = client.get(f"/{code}")
            seen.add(
                response.headers.get("location")
                if response.status_code < 400
                else str(response.status_code)
            )
    return seen


def invalidate(settings: Settings, *codes: str) -> None:
    async def go() -> None:
        resources = await Resources.open(settings)
        try:
            if len(codes) == 1:
                await resources.links.invalidate(codes[0])
            else:
                await resources.links.invalidate_many(list(codes))
        finally:
            await resources.close()

    asyncio.run(go())


def eventually(edge: Edge, code: str, expected: set[str | None], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while locations(edge, code, 10) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert locations(edge, code) == expected


@pytest.fixture
def edge3(start_edge: Callable[..., Edge]) -> Edge:
    return start_edge(workers=3, **LONG_TTL)


def test_edit_and_delete_reach_every_worker(
    edge3: Edge, make_link: Callable[..., str], db: Db, settings: Settings
) -> None:
    code = make_link("https://example.org/v1")
    assert locations(edge3, code, 90) == {"https://example.org/v1"}  # warm every worker

    db.execute("UPDATE links SET url = 'https://example.org/v2' WHERE code = $1", code)
    assert locations(edge3, code) == {"https://example.org/v1"}  # cached: Postgres not read
    invalidate(settings, code)
    eventually(edge3, code, {"https://example.org/v2"})

    db.execute("UPDATE links SET deleted_at = now() WHERE code = $1", code)
    invalidate(settings, code)
    eventually(edge3, code, {"404"})


def test_invalidate_many_and_a_created_code_replaces_a_cached_miss(
    edge3: Edge, make_link: Callable[..., str], db: Db, settings: Settings
) -> None:
    first = make_link("https://example.org/one")
    second = make_link("https://example.org/two", disabled=True)
    assert locations(edge3, first, 30) == {"https://example.org/one"}
    assert locations(edge3, second, 30) == {"404"}
    late = "late" + first[1:]
    assert locations(edge3, late, 30) == {"404"}  # remembered as a miss, locally and in Redis

    db.execute("UPDATE links SET url = 'https://example.org/uno' WHERE code = $1", first)
    db.execute("UPDATE links SET disabled = false WHERE code = $1", second)
    make_link("https://example.org/late", code=late)
    invalidate(settings, first, second, late)
    eventually(edge3, first, {"https://example.org/uno"})
    eventually(edge3, second, {"https://example.org/two"})
    eventually(edge3, late, {"https://example.org/late"})


def test_listener_clears_the_cache_after_redis_comes_back(
    start_edge: Callable[..., Edge], make_link: Callable[..., str], db: Db, tmp_path: Path
) -> None:
    own_redis = EmbeddedRedis(tmp_path / "redis", persist=False).start()
    try:
        edge = start_edge(workers=2, REDIS_URL=own_redis.url, **LONG_TTL)
        code = make_link("https://example.org/before")
        assert locations(edge, code, 30) == {"https://example.org/before"}
        own_redis.stop()
        # Edited while Redis was down: the invalidation message is lost for good.
        db.execute("UPDATE links SET url = 'https://example.org/after' WHERE code = $1", code)
        assert locations(edge, code, 10) == {"https://example.org/before"}
        own_redis = EmbeddedRedis(tmp_path / "redis", port=own_redis.port, persist=False).start()
        eventually(edge, code, {"https://example.org/after"}, timeout=30)
    finally:
        own_redis.stop()


def test_an_edit_reaches_every_worker_when_redis_refuses_its_invalidation(
    start_edge: Callable[..., Edge],
    make_link: Callable[..., str],
    db: Db,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """Redis serves reads but refuses writes (``min-replicas-to-write`` with no replica) while a
    link is edited: the invalidation's marker is refused, the old record stays in Redis, and the
    workers' pollers of Postgres edits (``edge.edits``) still bring the new target within
    ``CACHE_TTL_S``. Once Redis takes writes again, a poller's marker replaces the old record."""
    own = EmbeddedRedis(tmp_path / "redis", persist=False).start()
    try:
        edge = start_edge(workers=2, REDIS_URL=own.url, CACHE_TTL_S="4")
        code = make_link("https://example.org/before")
        assert locations(edge, code, 30) == {"https://example.org/before"}
        client = redis.Redis.from_url(own.url)
        assert client.get(f"lk:link:{code}") is not None  # written back: Redis holds the record
        client.config_set("min-replicas-to-write", 1)
        with pytest.raises(redis.exceptions.ResponseError, match="NOREPLICAS"):
            client.set("probe", "1")
        db.execute("UPDATE links SET url = 'https://example.org/after' WHERE code = $1", code)
        invalidate(settings.replace(redis_url=Secret(own.url)), code)  # its SET is refused
        assert b"before" in client.get(f"lk:link:{code}")
        eventually(edge, code, {"https://example.org/after"}, timeout=15)
        client.config_set("min-replicas-to-write", 0)
        deadline = time.monotonic() + 15
        while b"before" in (client.get(f"lk:link:{code}") or b"") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert b"before" not in (client.get(f"lk:link:{code}") or b"")
        client.close()
    finally:
        own.stop()


def test_the_edit_log_keeps_the_newest_version_of_the_newest_codes() -> None:
    edits = EditLog(kept=2)
    assert edits.note("a", 5) and not edits.note("a", 5) and not edits.note("a", 4)
    assert edits.note("a", 6) and edits.version("a") == 6
    assert edits.note("b", 1) and edits.note("c", 1)
    assert edits.version("a") == 0 and edits.version("b") == edits.version("c") == 1
