"""Random codes cannot flood Postgres: each worker's cold lookups are budgeted (``edge.budget``).

In-process: the budget refuses lookups past its tokens (404, cached nowhere, nothing written to
Redis), a found link gives its token back, and misses never push links out of the local cache. The
API writes created and edited records into Redis, as the edge would read them from Postgres, and
no marker or older record replaces them. Against a real edge: a flood of random codes stays within
the budget per worker (counted from the edge's own /metrics), hot links keep redirecting, a link
created through the API during the flood redirects at once, and after the flood a refused code is
looked up properly.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
import string
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import redis
from prometheus_client.parser import text_string_to_metric_families

from edge.budget import ColdBudget
from edge.cache import MISSING, Clock, LocalCache
from edge.linkstore import INVALIDATED_MARKER, MISS_MARKER
from edge.records import LinkRecord
from edge.resources import Resources
from linkedge import keys
from linkedge.settings import Secret, Settings
from loadtest.bench import flood
from loadtest.bench.wrk import WrkResult
from tests.conftest import Account, Edge

API = "/api/v1"
FLOOD_BUDGET = 2  # per worker and second: low, so that even a slow machine's flood overwhelms it


def random_code() -> str:
    return "fl" + "".join(random.choices(string.ascii_letters + string.digits, k=12))


# ---- in-process ------------------------------------------------------------------------------


def test_misses_never_push_links_out_of_the_local_cache() -> None:
    clock = Clock()
    cache: LocalCache[str] = LocalCache(size=100, ttl_s=60, miss_ttl_s=60, clock=clock)
    for i in range(100):
        cache.put(f"link{i}", f"target{i}")
    for i in range(10_000):
        cache.put(f"miss{i}", None)
    assert all(cache.get(f"link{i}") == f"target{i}" for i in range(100))
    assert len(cache.entries) == 100  # the hot path's map holds links only
    assert len(cache) == 100 + cache.misses_size  # misses bounded on their own (a tenth)
    assert cache.get("miss9999") is None and cache.get("miss0") is MISSING  # oldest out
    cache.put("miss9999", "created")  # a code created after its miss was remembered
    assert cache.get("miss9999") == "created"
    cache.put("link0", None)  # deleted
    assert cache.get("link0") is None and "link0" not in cache.entries


def test_budget_refills_at_its_rate_and_takes_found_lookups_back() -> None:
    clock = Clock()
    budget = ColdBudget(5, clock)
    assert [budget.take() for _ in range(7)] == [True] * 5 + [False] * 2
    budget.give_back()
    assert budget.take() and not budget.take()
    clock.now += 0.4  # two tokens' worth
    assert [budget.take() for _ in range(3)] == [True, True, False]
    clock.now += 100  # never more than one second's worth
    assert sum(budget.take() for _ in range(20)) == 5


def test_refused_cold_lookups_are_404s_that_nothing_remembers(
    settings: Settings, make_link: Callable[..., str], redis_client: redis.Redis, account_id: int
) -> None:
    existing = [make_link(f"https://example.org/found{i}") for i in range(3)]

    async def go() -> None:
        resources = await Resources.open(settings)
        links = resources.links
        links.budget = ColdBudget(5, Clock())  # a clock nobody ticks: no refill during the test
        try:
            # The found links take their tokens and give them back.
            found = await asyncio.gather(*(links.lookup(code) for code in existing))
            assert [r.url for r in found if r is not None] == [
                f"https://example.org/found{i}" for i in range(3)
            ]
            selects = links.selects
            tiers = links.tiers[:]
            unknown = [random_code() for _ in range(50)]
            answers = await asyncio.gather(*(links.lookup(code) for code in unknown))
            assert answers == [None] * 50
            looked_up = [links.tiers[i] - tiers[i] for i in range(len(tiers))]
            assert looked_up[4] == 5  # tier "none": Postgres said no to the five with a token
            assert looked_up[3] == 0 and links.refused == 45
            assert links.selects - selects <= 5
            await asyncio.sleep(0.2)  # write-backs
            remembered = [c for c in unknown if links.cache.get(c) is not MISSING]
            assert len(remembered) == 5  # only what Postgres answered is cached as a miss
            in_redis = redis_client.mget([keys.link(c) for c in unknown])
            assert sorted(v for v in in_redis if v is not None) == [MISS_MARKER] * 5
            # A link created while its code was refused is found once the budget allows.
            refused = next(c for c in unknown if links.cache.get(c) is MISSING)
            await resources.pg.execute(
                "INSERT INTO links (account_id, code, url) VALUES ($1, $2, $3)",
                account_id,
                refused,
                "https://example.org/late",
            )
            assert await links.lookup(refused) is None  # still no token
            links.budget.give_back()
            record = await links.lookup(refused)
            assert record is not None and record.url == "https://example.org/late"
        finally:
            await resources.close()

    asyncio.run(go())


def _create(client: httpx.Client, who: Account, **body: Any) -> dict[str, Any]:
    response = client.post(f"{API}/links", json=body, headers=who.headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_the_api_writes_created_and_edited_records_into_redis(
    edge: httpx.Client,
    account: Callable[..., Account],
    settings: Settings,
    redis_client: redis.Redis,
) -> None:
    who = account()
    code = f"rec{uuid.uuid4().hex[:10]}"
    _create(
        edge,
        who,
        url="https://example.com/first",
        code=code,
        redirect_type=307,
        expires_at="2031-02-03T04:05:06.789012+01:00",
        expired_url="https://example.com/gone",
        forward_query=True,
    )
    patched = edge.patch(
        f"{API}/links/{code}", json={"url": "https://example.com/second"}, headers=who.headers
    )
    assert patched.status_code == 200, patched.text
    bulk = edge.post(
        f"{API}/links/bulk", json={"links": [{"url": "https://example.com/b"}]}, headers=who.headers
    )
    bulk_code = bulk.json()["results"][0]["link"]["code"]

    async def from_postgres(codes: list[str]) -> list[LinkRecord | None]:
        resources = await Resources.open(settings)
        try:
            return await resources.links._select_many(codes)
        finally:
            await resources.close()

    edited, created = asyncio.run(from_postgres([code, bulk_code]))
    assert edited is not None and created is not None
    raw = redis_client.mget([keys.link(code), keys.link(bulk_code)])
    # Byte for byte what a worker would have written back after reading Postgres.
    assert raw == [edited.to_json(), created.to_json()]
    assert edited.url == "https://example.com/second" and edited.version > 0

    async def races() -> None:
        resources = await Resources.open(settings)
        links = resources.links
        try:
            # An edit read from Postgres marks the code, but not over its own record.
            links.edits.note(code, edited.version)
            await links._mark([code])
            assert redis_client.get(keys.link(code)) == edited.to_json()
            # A record older than the one in Redis is not written (a late API write).
            older = dataclasses.replace(edited, url="https://example.com/older", version=1)
            await links.invalidate_many([code], [older])
            assert redis_client.get(keys.link(code)) == edited.to_json()
            # A newer edit read from Postgres does mark it; a stale write-back keeps the marker.
            links.edits.note(code, edited.version + 1)
            await links._mark([code])
            assert redis_client.get(keys.link(code)) == INVALIDATED_MARKER
            await links._write_back(keys.link(code), edited, replace=True)
            assert redis_client.get(keys.link(code)) == INVALIDATED_MARKER
            # An edit whose version the worker has forgotten marks over any record.
            redis_client.set(keys.link(bulk_code), created.to_json())
            await links._mark([bulk_code])
            assert redis_client.get(keys.link(bulk_code)) == INVALIDATED_MARKER
        finally:
            await resources.close()

    asyncio.run(races())


def test_records_and_markers_on_a_redis_cluster(cluster_url: str, settings: Settings) -> None:
    """The version-checked writes run in cluster pipelines too (keys on many slots)."""
    records = [
        LinkRecord(id=i, account_id=1, code=f"cl{i}x", url="https://example.com/", version=10)
        for i in range(5)
    ]
    node = redis.Redis.from_url(cluster_url)

    async def go() -> None:
        resources = await Resources.open(settings.replace(redis_url=Secret(cluster_url)))
        links = resources.links
        try:
            await links.invalidate_many([r.code for r in records], records)
            assert [node.get(keys.link(r.code)) for r in records] == [r.to_json() for r in records]
            links.edits.note("cl0x", 10)
            links.edits.note("cl1x", 11)
            await links._mark(["cl0x", "cl1x"])
            assert node.get(keys.link("cl0x")) == records[0].to_json()
            assert node.get(keys.link("cl1x")) == INVALIDATED_MARKER
        finally:
            await resources.close()

    try:
        asyncio.run(go())
    finally:
        node.close()


# ---- against a real edge ---------------------------------------------------------------------


def _scrape(edge: Edge) -> dict[tuple[str, str], float]:
    """Counters of the edge's /metrics as (sample name, tier or "") -> value."""
    text = httpx.get(f"{edge.url}/metrics", timeout=10).text
    values: dict[tuple[str, str], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, sample.labels.get("tier", ""))] = sample.value
    return values


def _lookups(metrics: dict[tuple[str, str], float], tier: str) -> float:
    return metrics.get(("linkedge_link_lookups_total", tier), 0.0)


async def _flood(edge: Edge, stop: threading.Event, answers: dict[int, int]) -> None:
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with httpx.AsyncClient(base_url=edge.url, limits=limits, timeout=10) as client:

        async def one() -> None:
            while not stop.is_set():
                status = (await client.get(f"/{random_code()}")).status_code
                answers[status] = answers.get(status, 0) + 1

        await asyncio.gather(*(one() for _ in range(32)))


def test_a_flood_of_random_codes_stays_within_the_budget(
    start_edge: Callable[..., Edge],
    account: Callable[..., Account],
    make_link: Callable[..., str],
    redis_client: redis.Redis,
) -> None:
    edge = start_edge(
        workers=2, COLD_LOOKUPS_PER_SECOND=str(FLOOD_BUDGET), MISS_TTL_S="60", CACHE_TTL_S="600"
    )
    who = account()
    hot = make_link("https://example.org/hot")
    late = random_code()  # in Postgres during the flood, but neither cached nor in Redis
    with edge.client() as client:
        for _ in range(20):  # every worker has it cached
            assert client.get(f"/{hot}").status_code == 302
    time.sleep(1.5)  # counters folded, budgets full
    before = _scrape(edge)
    started = time.monotonic()
    stop = threading.Event()
    answers: dict[int, int] = {}
    flood = threading.Thread(target=lambda: asyncio.run(_flood(edge, stop, answers)))
    flood.start()
    try:
        time.sleep(1.0)  # the budgets are spent
        make_link("https://example.org/late", code=late)
        hot_answers: list[str | None] = []
        created: list[int] = []
        with edge.client() as client:
            for _ in range(3):
                for _ in range(30):
                    hot_answers.append(client.get(f"/{hot}").headers.get("location"))
                code = _create(client, who, url="https://example.com/fresh")["code"]
                assert redis_client.get(keys.link(code)) is not None  # the API wrote it
                for _ in range(10):  # new connections: every worker
                    with edge.client() as fresh:
                        created.append(fresh.get(f"/{code}").status_code)
                client.get(f"/{late}")  # most likely refused: the budget is spent
                time.sleep(0.5)
    finally:
        stop.set()
        flood.join()
    elapsed = time.monotonic() - started
    time.sleep(1.5)  # counters folded
    after = _scrape(edge)

    flooded = sum(answers.values())
    refused = after.get(("linkedge_cold_lookups_refused_total", ""), 0) - before.get(
        ("linkedge_cold_lookups_refused_total", ""), 0
    )
    unknown_looked_up = _lookups(after, "none") - _lookups(before, "none")
    found = _lookups(after, "postgres") - _lookups(before, "postgres")
    # Per worker: one second's worth at the start (a full bucket), then the rate. Found links
    # (only the late one here: the created ones are read from Redis) give their tokens back.
    bound = edge.workers * FLOOD_BUDGET * (elapsed + 1.0)
    assert set(answers) == {404}, answers
    assert unknown_looked_up <= bound, (unknown_looked_up, bound, flooded, elapsed)
    assert found <= edge.workers * 3, found
    assert refused >= flooded - unknown_looked_up, (refused, flooded, unknown_looked_up)
    assert refused > flooded / 2, f"the flood ({flooded} requests) did not exceed the budget"
    assert set(hot_answers) == {"https://example.org/hot"}
    assert set(created) == {302}, created

    with edge.client() as client:
        for _ in range(20):  # refused during the flood, not remembered: found now on every worker
            with edge.client() as fresh:
                assert fresh.get(f"/{late}").status_code == 302
        unknown = random_code()
        assert client.get(f"/{unknown}").status_code == 404
        assert redis_client.get(keys.link(unknown)) == MISS_MARKER  # Postgres was asked
        made = _create(client, who, url="https://example.com/later", code=unknown)
        assert made["code"] == unknown
        for _ in range(20):
            with edge.client() as fresh:
                assert fresh.get(f"/{unknown}").headers["location"] == "https://example.com/later"


def test_the_bench_row_reports_queries_and_the_hot_links_beside_the_flood() -> None:
    def result(requests: int, errors: int, p99: float) -> WrkResult:
        return WrkResult(requests, 10.0, errors, 0, 1.0, p99)

    measured = flood.Flood(
        flood=result(30_000, 30_000, 9.0),
        hot=result(16_500, 0, 65.0),
        hot_alone=result(33_670, 0, 5.0),
        queries=240,
        lookups={"postgres": 0.0, "none": 1_100.0, "redis": 5.0},
        refused=28_900.0,
    )
    row = flood.row("random-code flood", "100/s", measured)
    assert row.result == "24 Postgres queries/s" and row.p99_ms == 65.0
    assert "looked up in Postgres 110/s, refused 2,890/s" in row.note
    assert "flood 3,000 req/s (0 not 404)" in row.note
    assert "hot links 1,650 redirects/s beside it (3,367 alone, 0 non-3xx)" in row.note
