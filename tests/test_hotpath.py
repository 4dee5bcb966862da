"""The C hot path (``RedirectHandler.hot_path``, ``edge._clickfast.Hot``) against the handler.

The same requests go through the edge app twice, once with the hot path answering what it can and
once with every request going to the Python handler: the messages sent, the clicks recorded (all
but id and time), the served statuses and the lookup tiers must be the same (``outcome``). The hot
path must also really answer the cases it is for (else the comparison would prove nothing) and
leave every other case to the handler. First for a fixed list of requests, then for sequences
that Hypothesis makes: requests of any method, path, query and headers to links in every state,
with time moving (cache entries and links expiring) and codes invalidated between them.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import secrets
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given
from hypothesis import settings as examples
from hypothesis import strategies as st
from starlette.types import Receive, Scope, Send

from edge.app import RESERVED, EdgeApp
from edge.cache import Clock
from edge.linkstore import LOCAL, LOCAL_MISS
from edge.redirect import RedirectHandler, no_answer
from edge.resources import Resources
from linkedge import events
from linkedge.settings import Settings

fast = pytest.importorskip("edge._clickfast", reason="the C module was not built")

CHROME = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"
SETTINGS = examples(
    max_examples=150,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)


def scope(path: str, method: str = "GET", query: bytes = b"", **headers: bytes) -> dict[str, Any]:
    return {
        "type": "http",
        "method": method,
        "path": path,
        "query_string": query,
        "headers": [(b"host", b"sho.rt"), (b"user-agent", CHROME)]
        + [(name.replace("_", "-").encode(), value) for name, value in headers.items()],
        "client": ("192.0.2.7", 5000),
    }


class Api:
    """The API app's seat: records which requests reached it."""

    def __init__(self) -> None:
        self.paths: list[str] = []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


async def serve(app: EdgeApp, request: dict[str, Any]) -> list[dict[str, Any]]:
    """The messages the app sends for ``request`` (a copy: the app may add to its scope)."""
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(dict(request), None, send)  # type: ignore[arg-type]
    return sent


def tiers_seen(before: list[int], after: list[int]) -> tuple[int, ...]:
    """The lookups a request made, by tier: the local ones as they are, the fetches (Redis,
    Postgres, none) as one number, since which of them answers depends on what another worker
    wrote back to Redis meanwhile."""
    delta = [b - a for a, b in zip(before, after, strict=True)]
    return (delta[LOCAL], delta[LOCAL_MISS], sum(delta) - delta[LOCAL] - delta[LOCAL_MISS])


async def outcome(
    app: EdgeApp, handler: RedirectHandler, resources: Resources, request: dict[str, Any]
) -> tuple[Any, ...]:
    """What serving ``request`` did: the messages sent, the clicks recorded (but id and time),
    the counters written, the served statuses and lookup tiers counted, whether the API got it."""
    api = app.api
    assert isinstance(api, Api)
    served, tiers = list(handler.counters.served), list(resources.links.tiers)
    api_before = len(api.paths)
    sent = await serve(app, request)
    taken = resources.clicks.encoder.take()
    clicks = events.split_entry(taken[2]) if taken else []
    return (
        sent,
        [_stable(events.decode(raw)) for raw in clicks],
        taken[1] if taken else b"",
        [b - a for a, b in zip(served, handler.counters.served, strict=True)],
        tiers_seen(tiers, resources.links.tiers),
        len(api.paths) - api_before,
    )


def test_hot_path_answers_as_the_handler_does(
    settings: Settings, make_link: Callable[..., str]
) -> None:
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    past = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=5)
    codes = {
        "301": make_link("https://example.org/301", redirect_type=301),
        "302": make_link("https://example.org/302?a=1"),
        "307": make_link("https://example.org/307", redirect_type=307),
        "308": make_link("https://example.org/308", redirect_type=308),
        "expires later": make_link("https://example.org/later", expires_at=later),
        "expired": make_link("https://example.org/gone", expires_at=past),
        "forward": make_link("https://example.org/fwd?x=1", forward_query=True),
        "disabled": make_link("https://example.org/off", disabled=True),
    }
    requests = [
        *(scope(f"/{code}") for code in codes.values()),
        *(scope(f"/{code}", "HEAD") for code in codes.values()),
        scope(f"/{codes['302']}", query=b"utm_source=x"),  # not forwarded: still the hot path's
        scope(f"/{codes['forward']}", query=b"y=2"),  # merged into Location: the handler's
        scope(f"/{codes['302']}", "POST"),
        scope(f"/{codes['302']}", referer=b"https://news.example/", x_forwarded_for=b"203.0.113.1"),
        scope("/h" + secrets.token_hex(6)),  # unknown
        scope("/not a code"),
        scope("/healthz"),
        scope(f"/{codes['302']}/more"),
    ]
    hot_kinds = {"301", "302", "307", "308", "expires later", "forward", "disabled"}
    expect_hot = [name in hot_kinds for name in codes] * 2 + [True, False, False, True]
    expect_hot += [False] * 4

    async def go() -> None:
        resources = await Resources.open(settings)
        try:
            app = EdgeApp(settings)
            handler = app.redirect = RedirectHandler(resources)
            app.api = Api()
            hot = handler.hot_path(RESERVED)
            assert hot is not no_answer
            resources._periodic.clear()  # no metric fold zeroes the counters while they are compared
            encoder = resources.clicks.encoder
            app.answer = no_answer
            for _ in range(20):  # fill the cache through the handler (a fetch that overlaps the
                for request in requests:  # invalidation subscriber's start is not cached)
                    await serve(app, request)
                if all(code in resources.links.cache.entries for code in codes.values()):
                    break
                await asyncio.sleep(0.05)
            encoder.take()
            for request, hot_expected in zip(requests, expect_hot, strict=True):
                results = []
                for answer in (hot, no_answer):
                    app.answer = answer
                    if answer is hot:  # did the hot path answer it, or leave it to the handler?
                        served, tiers = list(handler.counters.served), list(resources.links.tiers)
                        answered = hot(dict(request)) is not None
                        assert answered == hot_expected, request
                        if answered:  # undo that probe's counts and click
                            handler.counters.served[:] = served
                            resources.links.tiers[:] = tiers
                            encoder.take()
                    results.append(await outcome(app, handler, resources, request))
                assert results[0] == results[1], request
                assert results[0][0], request  # something was sent
        finally:
            await resources.close()

    asyncio.run(go())


def _stable(click: events.Click) -> dict[str, Any]:
    """A click's fields but its id and time, which differ between two recordings."""
    fields = dataclasses.asdict(click)
    fields.pop("id")
    fields.pop("ts_ms")
    return fields


@pytest.mark.parametrize(
    "change", [{"click_encoder": "python"}, {"click_flush_interval_ms": 0}], ids=["python", "sync"]
)
def test_no_hot_path_where_the_handler_must_record(
    settings: Settings, change: dict[str, Any]
) -> None:
    """With the Python encoder, or clicks recorded before the answer (CLICK_FLUSH_INTERVAL_MS=0),
    every request goes through the handler."""

    async def go() -> None:
        resources = await Resources.open(settings.replace(**change))
        try:
            assert RedirectHandler(resources).hot_path(RESERVED) is no_answer
        finally:
            await resources.close()

    asyncio.run(go())


def test_hot_path_counts_a_click_it_cannot_encode_and_still_answers(
    settings: Settings, make_link: Callable[..., str]
) -> None:
    """A click the encoder refuses inside the C call (here: headers the Python encoder, to which C
    hands them, fails on) is counted as dropped ("invalid") through add_failed, and the redirect
    is sent all the same."""
    from prometheus_client import REGISTRY

    code = make_link("https://example.org/hot-odd")

    def broken_headers() -> Any:
        yield (b"user-agent", b"x")
        raise ValueError("torn header list")

    def dropped() -> float:
        labels = {"reason": "invalid"}
        return REGISTRY.get_sample_value("linkedge_clicks_dropped_total", labels) or 0.0

    async def go() -> tuple[Any, int]:
        resources = await Resources.open(settings)
        try:
            handler = RedirectHandler(resources)
            for _ in range(20):  # into the local cache (a fetch that overlaps the invalidation
                await handler.links.fetch(code)  # subscriber's start is not cached): the hot path's
                if code in handler.links.cache.entries:
                    break
                await asyncio.sleep(0.05)
            hot = handler.hot_path(RESERVED)
            odd = {**scope(f"/{code}"), "headers": broken_headers()}
            answer = hot(odd)
            return answer, resources.clicks.encoder.pending
        finally:
            await resources.close()

    before = dropped()
    answer, pending = asyncio.run(go())
    assert answer is not None and answer[0]["status"] == 302
    assert dict(answer[0]["headers"])[b"location"] == b"https://example.org/hot-odd"
    assert pending == 0 and dropped() - before == 1


# ---- random requests, time and invalidations: the hot path against the handler, by Hypothesis ----

UA = st.sampled_from([CHROME, b"Googlebot/2.1 (+http://www.google.com/bot.html)", b"", b"\xff\xfe"])
HEADER = st.one_of(
    st.tuples(st.just("user_agent"), UA),
    st.tuples(st.just("referer"), st.sampled_from([b"https://news.example/", b"\xc3\x28"])),
    st.tuples(st.just("accept_language"), st.sampled_from([b"en-US,en;q=0.9", b"\xe9"])),
    st.tuples(st.just("x_forwarded_for"), st.sampled_from([b"203.0.113.1", b"garbage, ::1"])),
    st.tuples(st.sampled_from(["purpose", "sec_purpose"]), st.sampled_from([b"prefetch", b"x"])),
    st.tuples(st.just("accept"), st.binary(max_size=10)),
)
QUERY = st.one_of(
    st.just(b""),
    st.just(b""),
    st.sampled_from([b"utm_source=x", b"y=2&utm_medium=z", b"a=%E2%98%83"]),
    st.binary(max_size=12),
)
# A link's name in ``_links`` (its code is made per test), or a literal path. Most requests go to
# a few links, so that a sequence finds them cached (the hot path's case) as often as not.
PATH = st.one_of(
    *[st.sampled_from(["302", "301", "expiring", "forward"])] * 4,
    st.sampled_from(
        ["307", "308", "expired", "expired_url", "disabled", "unknown", "unknown2", "/healthz",
         "/api/v1/links", "/", "/not a code", "/" + "x" * 70, "/a/b"]
    ),
)  # fmt: skip
REQUEST = st.builds(
    lambda method, path, query, headers, more: ("request", (method, path, query, headers, more)),
    st.sampled_from(["GET", "GET", "GET", "HEAD", "HEAD", "POST", "OPTIONS", "get"]),
    PATH,
    QUERY,
    st.lists(HEADER, max_size=4),
    st.sampled_from([False] * 9 + [True]),  # a second path segment after a link's code
)
ADVANCE = st.tuples(
    st.just("advance"), st.tuples(st.sampled_from([0.0, 0.5, 10.0, 31.0]), st.integers(0, 30))
)  # monotonic seconds (cache entries live CACHE_TTL_S, 30), wall seconds (links expire)
INVALIDATE = st.tuples(st.just("invalidate"), st.sampled_from(["302", "forward", "expiring"]))
STEPS = st.lists(st.one_of(REQUEST, REQUEST, REQUEST, ADVANCE, INVALIDATE), min_size=8, max_size=24)


def _links(make_link: Callable[..., str], wall: float) -> dict[str, str]:
    """A link in each state a request can find: name -> code."""
    at = datetime.datetime.fromtimestamp
    return {
        "301": make_link("https://example.org/301", redirect_type=301),
        "302": make_link("https://example.org/302?a=1"),
        "307": make_link("https://example.org/307", redirect_type=307),
        "308": make_link("https://example.org/308", redirect_type=308),
        "forward": make_link("https://example.org/fwd?x=1", forward_query=True),
        "expiring": make_link(  # expires while a sequence's wall clock moves
            "https://example.org/soon", expires_at=at(wall + 45, datetime.UTC)
        ),
        "expired": make_link("https://example.org/gone", expires_at=at(wall - 5, datetime.UTC)),
        "expired_url": make_link(
            "https://example.org/old",
            expires_at=at(wall - 5, datetime.UTC),
            expired_url="https://example.org/instead",
        ),
        "disabled": make_link("https://example.org/off", disabled=True),
        "unknown": "h" + secrets.token_hex(6),
        "unknown2": "h" + secrets.token_hex(6),
    }


@dataclasses.dataclass
class World:
    """One worker's edge app, its answers either through the hot path or only the handler."""

    resources: Resources
    app: EdgeApp
    handler: RedirectHandler
    answered: int = 0  # requests the hot path answered itself

    @classmethod
    async def open(cls, settings: Settings, hot: bool) -> World:
        resources = await Resources.open(settings)
        app = EdgeApp(settings)
        handler = app.redirect = RedirectHandler(resources)
        app.api = Api()
        resources._periodic.clear()  # no metric fold zeroes the counters while they are compared
        world = cls(resources, app, handler)
        if hot:
            answer = handler.hot_path(RESERVED)
            assert answer is not no_answer

            def counted(scope: Scope) -> tuple[Any, ...] | None:
                answered = answer(scope)
                world.answered += answered is not None
                return answered

            app.answer = counted
        else:
            app.answer = no_answer
        return world

    async def warm(self, codes: list[str]) -> None:
        """Every code once through the handler, until the links are cached: the invalidation
        subscriber has started (a fetch that overlaps its start is not cached), and Redis holds
        every link's record."""
        for _ in range(40):
            for code in codes:
                await self.handler.links.fetch(code)
            if all(code in self.resources.links.cache.entries for code in codes[:5]):
                return
            await asyncio.sleep(0.05)
        raise AssertionError("the links were never cached")


def test_random_requests_answer_alike_through_both_paths(
    settings: Settings, make_link: Callable[..., str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two workers, one with the hot path and one without, get the same sequences of requests,
    clock moves (monotonic: cache entries expire; wall: links expire) and invalidations (the code
    dropped from the worker's cache, as the invalidation listener does): every request's outcome
    is the same in both."""
    monkeypatch.setattr(Clock, "tick", lambda self: None)  # time moves when the test says so
    wall = time.time()
    codes = _links(make_link, wall)
    loop = asyncio.new_event_loop()
    worlds: list[World] = []
    try:
        for hot in (True, False):
            worlds.append(loop.run_until_complete(World.open(settings, hot)))
            loop.run_until_complete(worlds[-1].warm(list(codes.values())))

        def request_of(step: tuple[str, str, bytes, list[tuple[str, bytes]], bool]) -> Any:
            method, path, query, headers, more = step
            if not path.startswith("/"):
                path = "/" + codes[path] + ("/more" if more else "")
            return scope(path, method, query, **dict(headers))

        @SETTINGS
        @given(steps=STEPS)
        def check(steps: list[tuple[str, Any]]) -> None:
            for world in worlds:  # a new start: the links as they were made, four of them cached
                clock = world.resources.clock
                clock.now, clock.wall = clock.now + 1000.0, wall
                world.resources.links.cache.clear()
                for name in ("302", "301", "expiring", "forward"):
                    loop.run_until_complete(world.handler.links.fetch(codes[name]))
                world.resources.clicks.encoder.take()
            for kind, arg in steps:
                if kind == "advance":
                    for world in worlds:
                        world.resources.clock.now += arg[0]
                        world.resources.clock.wall += arg[1]
                elif kind == "invalidate":
                    for world in worlds:
                        world.resources.links.cache.discard(codes[arg])
                else:
                    request = request_of(arg)
                    seen = [
                        loop.run_until_complete(
                            outcome(world.app, world.handler, world.resources, request)
                        )
                        for world in worlds
                    ]
                    assert seen[0] == seen[1], request
                    assert seen[0][0], request  # something was sent

        check()
        assert worlds[0].answered > 50  # the hot path did answer (about 120 of 800 requests)
    finally:
        for world in worlds:
            loop.run_until_complete(world.resources.close())
        loop.close()
