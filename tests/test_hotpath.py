"""The C hot path (``RedirectHandler.hot_path``, ``edge._clickfast.Hot``) against the handler.

The same requests go through the edge app twice, once with the hot path answering what it can and
once with every request going to the Python handler: the messages sent, the clicks recorded (all
but id and time), the served statuses and the lookup tiers must be the same. The hot path must
also really answer the cases it is for (else the comparison would prove nothing) and leave every
other case to the handler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import secrets
from collections.abc import Callable
from typing import Any

import pytest

from edge.app import RESERVED, EdgeApp
from edge.redirect import RedirectHandler, no_answer
from edge.resources import Resources
from linkedge import events
from linkedge.settings import Settings

fast = pytest.importorskip("edge._clickfast", reason="the C module was not built")

CHROME = b"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0"


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

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.paths.append(scope["path"])
        await send({"type": "http.response.start", "status": 299, "headers": []})
        await send({"type": "http.response.body", "body": b""})


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

    async def serve(app: EdgeApp, request: dict[str, Any]) -> list[dict[str, Any]]:
        sent: list[dict[str, Any]] = []

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)

        await app(dict(request), None, send)  # type: ignore[arg-type]
        return sent

    async def go() -> None:
        resources = await Resources.open(settings)
        try:
            app = EdgeApp(settings)
            handler = app.redirect = RedirectHandler(resources)
            app.api = api = Api()
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
                    served, tiers = list(handler.counters.served), list(resources.links.tiers)
                    api_before = len(api.paths)
                    if answer is hot:  # did the hot path answer it, or leave it to the handler?
                        answered = hot(dict(request)) is not None
                        assert answered == hot_expected, request
                        if answered:  # undo that probe's counts and click
                            handler.counters.served[:] = served
                            resources.links.tiers[:] = tiers
                            encoder.take()
                    sent = await serve(app, request)
                    taken = encoder.take()
                    clicks = events.split_entry(taken[2]) if taken else []
                    results.append((
                        sent,
                        [_stable(events.decode(raw)) for raw in clicks],
                        taken[1] if taken else b"",
                        [b - a for a, b in zip(served, handler.counters.served)],
                        [b - a for a, b in zip(tiers, resources.links.tiers)],
                        len(api.paths) - api_before,
                    ))  # fmt: skip
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
