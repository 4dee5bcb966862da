"""The click recorder against real Redis: one idempotent flush per shard, outages, spool, shutdown.

Recorder tests use Redis database 9 of the harness Redis (flushed per test) so that the stream and
counter contents are exactly what the test recorded; outage tests run their own Redis server and
stop/start it on the same port.
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from edge.clickinfo import client_ip, utm_params
from edge.clicks import FLUSH_SCRIPT, GC_THRESHOLDS, ClickRecorder, flush_args
from edge.records import LinkRecord
from edge.spool import Batch, Spool
from linkedge import keys
from linkedge.embedded import EmbeddedRedis, free_port
from linkedge.events import (
    Click,
    counter_field,
    counter_items,
    decode,
    encode,
    join_entry,
    parse_counter_field,
    split_entry,
)
from linkedge.settings import ConfigError, Settings

SHARDS = 4
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
ROOT = Path(__file__).resolve().parent.parent


def make_link(code: str | None = None) -> LinkRecord:
    return LinkRecord(
        id=int(uuid.uuid4().int % 10**12),
        account_id=7,
        code=code or uuid.uuid4().hex[:8],
        url="https://example.com/landing",
    )


def make_scope(
    method: str = "GET",
    headers: dict[str, str] | list[tuple[str, str]] | None = None,
    client: tuple[str, int] | None = ("203.0.113.7", 50123),
    query: bytes = b"",
) -> dict[str, Any]:
    pairs = (
        list((headers or {"user-agent": CHROME}).items())
        if not isinstance(headers, list)
        else headers
    )
    return {
        "type": "http",
        "method": method,
        "path": "/abc",
        "query_string": query,
        "client": client,
        "headers": [(name.encode(), value.encode()) for name, value in pairs],
    }


def client_for(url: str) -> aioredis.Redis:
    """Configured like the edge's own client: short timeouts, one retry."""
    return aioredis.Redis.from_url(
        url, socket_timeout=1, socket_connect_timeout=1, retry=Retry(NoBackoff(), 1)
    )


def metric(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def total_dropped() -> float:
    return sum(
        sample.value
        for family in REGISTRY.collect()
        if family.name == "linkedge_clicks_dropped"
        for sample in family.samples
        if sample.name == "linkedge_clicks_dropped_total"
    )


async def stream_clicks(client: aioredis.Redis, shards: int = SHARDS) -> list[Click]:
    clicks = []
    for shard in range(shards):
        entries: Any = await client.xrange(keys.clicks_stream(shard))
        for _id, fields in entries:
            clicks.extend(decode(raw) for raw in split_entry(fields[b"e"]))
    return clicks


async def counters(
    client: aioredis.Redis, shards: int = SHARDS
) -> collections.Counter[tuple[int, str, bool]]:
    total: collections.Counter[tuple[int, str, bool]] = collections.Counter()
    for shard in range(shards):
        for field, value in counter_items((await client.hgetall(keys.counts(shard))).items()):
            total[parse_counter_field(field)] += int(value)
    return total


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout}s: {check}")
        await asyncio.sleep(0.05)


def spool_files(directory: str | Path) -> list[Path]:
    path = Path(directory)
    return sorted(path.glob("*.spool")) if path.exists() else []


@pytest.fixture
def db9_url(stores: Any) -> str:
    return f"redis://127.0.0.1:{stores.redis.port}/9"


@pytest.fixture
def click_settings(settings: Settings) -> Settings:
    return settings.replace(click_shards=SHARDS, click_flush_interval_ms=20)


@asynccontextmanager
async def recorder(
    settings: Settings, url: str, *, flush: bool = True
) -> AsyncIterator[tuple[ClickRecorder, aioredis.Redis]]:
    client = client_for(url)
    if flush:
        await client.flushdb()
    rec = ClickRecorder(settings, client)
    await rec.start()
    try:
        yield rec, client
    finally:
        await rec.close()
        await client.aclose()


# ---- what one click becomes ---------------------------------------------------------------------
def test_event_fields_derived_from_the_scope(click_settings: Settings, db9_url: str) -> None:
    link = make_link()
    scope = make_scope(
        headers={
            "user-agent": CHROME,
            "referer": "https://news.example/item?id=1",
            "accept-language": "fr-CH, fr;q=0.9",
            "host": "sho.rt",
        },
        query=b"utm_source=newsletter&utm_medium=email&utm_campaign=spring%20sale&x=1",
    )

    async def go() -> tuple[list[Click], collections.Counter[Any], float, float]:
        async with recorder(click_settings, db9_url) as (rec, client):
            before = time.time()
            rec.record(link, scope, "https://example.com/landing?x=1")
            after = time.time()
            clicks = await eventually(lambda: stream_clicks(client))
            return clicks, await counters(client), before, after

    clicks, counts, before, after = asyncio.run(go())
    [click] = clicks
    assert uuid.UUID(click.id).version == 7
    assert int(before * 1000) <= click.ts_ms <= int(after * 1000) + 1
    assert (click.link_id, click.account_id, click.code) == (link.id, 7, link.code)
    assert click.target == "https://example.com/landing?x=1"
    assert click.ip == "203.0.113.7"
    assert click.user_agent == CHROME
    assert click.referer == "https://news.example/item?id=1"
    assert click.accept_language == "fr-CH, fr;q=0.9"
    assert click.host == "sho.rt"
    assert click.utm == {
        "utm_source": "newsletter",
        "utm_medium": "email",
        "utm_campaign": "spring sale",
    }
    assert click.bot == ""
    assert counts == {(link.id, click.day, False): 1}


def test_events_equal_encode_of_the_click_whatever_repeats(click_settings: Settings) -> None:
    """The recorder keeps each distinct set of headers' event tail: requests that share some
    headers and differ in others (method, prefetch, referer, query, forwarded-for) still get
    their own fields, byte for byte what ``events.encode`` makes of the decoded click."""
    settings = click_settings.replace(trusted_proxies=("10.0.0.0/8",))
    link = make_link()
    scopes = [
        make_scope(),
        make_scope(),
        make_scope(method="HEAD"),
        make_scope(headers={"user-agent": CHROME, "sec-purpose": "prefetch"}),
        make_scope(headers={"user-agent": CHROME, "referer": "https://a.example/"}),
        make_scope(headers={"user-agent": CHROME, "referer": "https://b.example/"}),
        make_scope(query=b"utm_source=a"),
        make_scope(query=b"utm_source=b"),
        make_scope(
            headers={"user-agent": CHROME, "x-forwarded-for": "198.51.100.1"},
            client=("10.1.2.3", 1),
        ),
        make_scope(headers={"user-agent": "curl/8.5.0"}),
        make_scope(),
    ]
    rec = ClickRecorder(settings, client_for("redis://127.0.0.1:1/0"))
    [batch] = rec._build([(time.time(), link, scope, "https://example.com/x") for scope in scopes])
    events = split_entry(batch.entry)
    clicks = [decode(event) for event in events]
    assert [encode(click) for click in clicks] == events and batch.clicks == len(scopes)
    assert [c.bot for c in clicks] == [
        "",
        "",
        "head",
        "prefetch",
        "",
        "",
        "",
        "",
        "",
        "crawler",
        "",
    ]
    assert [c.referer for c in clicks][3:6] == ["", "https://a.example/", "https://b.example/"]
    assert [c.utm for c in clicks][5:8] == [{}, {"utm_source": "a"}, {"utm_source": "b"}]
    assert [c.ip for c in clicks][7:10] == ["203.0.113.7", "198.51.100.1", "203.0.113.7"]
    assert len({c.id for c in clicks}) == len(clicks)
    assert sum(batch.counts().values()) == len(scopes)
    assert batch.counts()[counter_field(link.id, clicks[0].day, True)] == 3


def test_counters_and_stream_entries_arrive_together(
    click_settings: Settings, db9_url: str
) -> None:
    links = [make_link() for _ in range(3)]
    settings = click_settings.replace(click_flush_max_events=7)

    async def go() -> tuple[list[Click], collections.Counter[Any]]:
        async with recorder(settings, db9_url) as (rec, client):
            for i in range(60):
                rec.record(links[i % 3], make_scope(), "https://example.com/landing")
                if i % 20 == 19:
                    await asyncio.sleep(0.03)
            clicks = await eventually(lambda: _at_least(stream_clicks(client), 60))
            return clicks, await counters(client)

    clicks, counts = asyncio.run(go())
    assert len(clicks) == 60 and len({c.id for c in clicks}) == 60
    by_link = collections.Counter(c.link_id for c in clicks)
    assert by_link == {link.id: 20 for link in links}
    assert sum(counts.values()) == 60
    assert {(lid, bot): n for (lid, _day, bot), n in counts.items()} == {
        (link.id, False): 20 for link in links
    }


async def _at_least(clicks: Awaitable[list[Click]], n: int) -> list[Click]:
    found = await clicks
    return found if len(found) >= n else []


def test_bot_reasons_decide_the_counter_field(click_settings: Settings, db9_url: str) -> None:
    link = make_link()
    cases = {
        "head": make_scope(method="HEAD"),
        "prefetch": make_scope(headers={"user-agent": CHROME, "sec-purpose": "prefetch;prerender"}),
        "prefetch-moz": make_scope(headers={"user-agent": CHROME, "x-moz": "prefetch"}),
        "prefetch-safari": make_scope(headers={"user-agent": CHROME, "x-purpose": "preview"}),
        "prefetch-purpose": make_scope(headers={"user-agent": CHROME, "purpose": "prefetch"}),
        "crawler": make_scope(headers={"user-agent": "Mozilla/5.0 (compatible; Googlebot/2.1)"}),
        "empty-ua": make_scope(headers={"host": "sho.rt"}),
        "human": make_scope(),
    }

    async def go() -> tuple[list[Click], collections.Counter[Any]]:
        async with recorder(click_settings, db9_url) as (rec, client):
            for name, scope in cases.items():
                rec.record(link, scope, f"https://example.com/{name}")
            clicks = await eventually(lambda: _at_least(stream_clicks(client), len(cases)))
            return clicks, await counters(client)

    clicks, counts = asyncio.run(go())
    reasons = {c.target.rsplit("/", 1)[1]: c.bot for c in clicks}
    assert reasons == {
        "head": "head",
        "prefetch": "prefetch",
        "prefetch-moz": "prefetch",
        "prefetch-safari": "prefetch",
        "prefetch-purpose": "prefetch",
        "crawler": "crawler",
        "empty-ua": "crawler",
        "human": "",
    }
    day = clicks[0].day
    assert counts == {(link.id, day, True): 7, (link.id, day, False): 1}


def test_forwarded_for_only_from_trusted_proxies() -> None:
    from edge.clickinfo import trusted_networks

    nets = trusted_networks(("10.0.0.0/8", "192.168.1.1", "fd00::/8"))
    assert client_ip("10.1.2.3", ["198.51.100.9, 10.0.0.5"], nets) == "198.51.100.9"
    assert (
        client_ip("10.1.2.3", ["6.6.6.6, 198.51.100.9"], nets) == "198.51.100.9"
    )  # spoofed left part
    assert client_ip("10.1.2.3", ["6.6.6.6", "198.51.100.9, 192.168.1.1"], nets) == "198.51.100.9"
    assert client_ip("203.0.113.7", ["198.51.100.9"], nets) == "203.0.113.7"  # untrusted peer
    assert client_ip("10.1.2.3", [], nets) == "10.1.2.3"
    assert client_ip("10.1.2.3", ["10.0.0.9, 10.0.0.8"], nets) == "10.0.0.9"  # all trusted
    assert client_ip("10.1.2.3", ["junk, 10.0.0.8"], nets) == "10.0.0.8"  # stop at garbage
    assert client_ip("::ffff:10.0.0.1", ["2001:db8::1"], nets) == "2001:db8::1"
    assert client_ip("fd00::2", ["2001:db8::1"], nets) == "2001:db8::1"
    assert client_ip("10.1.2.3", ["198.51.100.9"], ()) == "10.1.2.3"  # nothing trusted
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        trusted_networks(("not-a-network",))


def test_forwarded_for_through_the_recorder(click_settings: Settings, db9_url: str) -> None:
    settings = click_settings.replace(trusted_proxies=("127.0.0.0/8",))
    link = make_link()
    via_proxy = make_scope(
        client=("127.0.0.1", 4000),
        headers={"user-agent": CHROME, "x-forwarded-for": "198.51.100.9"},
    )
    direct = make_scope(
        client=("203.0.113.50", 4000),
        headers={"user-agent": CHROME, "x-forwarded-for": "198.51.100.10"},
    )
    no_client = make_scope(client=None)

    async def go() -> list[Click]:
        async with recorder(settings, db9_url) as (rec, client):
            rec.record(link, via_proxy, "https://example.com/proxy")
            rec.record(link, direct, "https://example.com/direct")
            rec.record(link, no_client, "https://example.com/none")
            return await eventually(lambda: _at_least(stream_clicks(client), 3))  # type: ignore[no-any-return]

    ips = {c.target.rsplit("/", 1)[1]: c.ip for c in asyncio.run(go())}
    assert ips == {"proxy": "198.51.100.9", "direct": "203.0.113.50", "none": ""}


def test_utm_params() -> None:
    query = (
        b"utm_source=news&UTM_Medium=e%2Dmail&utm_campaign=a+b&utm_term=t&utm_content=c"
        b"&other=1&utm_source=second&utm_id=9"
    )
    assert utm_params(query) == {
        "utm_source": "news",
        "utm_medium": "e-mail",
        "utm_campaign": "a b",
        "utm_term": "t",
        "utm_content": "c",
    }
    assert utm_params(b"") == {}
    assert utm_params(b"a=1&b=2") == {}
    assert utm_params(b"utm_source=" + b"x" * 1000)["utm_source"] == "x" * 256
    assert utm_params(b"utm_source=%ff%fe") == {"utm_source": "\ufffd\ufffd"}


# ---- idempotence --------------------------------------------------------------------------------
def test_replayed_flush_id_is_not_applied_twice(db9_url: str) -> None:
    flush_id, other = uuid.uuid4().hex, uuid.uuid4().hex

    async def go() -> tuple[list[Any], list[bytes], dict[Any, Any]]:
        client = client_for(db9_url)
        await client.flushdb()
        script = client.register_script(FLUSH_SCRIPT)
        run_keys = [keys.counts(2), keys.clicks_stream(2), keys.flush_marker(2, flush_id)]
        events = [b'{"a":1}', b'{"a":"two\\nlines \\u2028"}', b'{"a":3}']
        batch = Batch.of(flush_id, 2, {"5:20260101:h": 2, "5:20260101:b": 1}, events)
        args = flush_args(batch)
        results = [await script(keys=run_keys, args=args), await script(keys=run_keys, args=args)]
        # a different flush id is a different flush, even with the same clicks
        other_args = flush_args(dataclasses.replace(batch, flush_id=other))
        results.append(
            await script(keys=[*run_keys[:2], keys.flush_marker(2, other)], args=other_args)
        )
        entries = [fields[b"e"] for _id, fields in await client.xrange(keys.clicks_stream(2))]
        assert entries == 2 * [join_entry(events)]
        assert [split_entry(entry) for entry in entries] == 2 * [events]
        counts = await client.hgetall(keys.counts(2))
        assert 0 < await client.ttl(run_keys[2]) <= keys.FLUSH_MARKER_TTL_S
        await client.aclose()
        return results, entries, counts

    results, entries, counts = asyncio.run(go())
    assert results == [1, 0, 1]
    assert len(entries) == 2  # one entry per applied flush, holding all its events (checked above)
    # one counts-hash field per applied flush, holding all its counters
    assert counts == {
        b"~" + flush_id.encode(): b"5:20260101:h 2\n5:20260101:b 1",
        b"~" + other.encode(): b"5:20260101:h 2\n5:20260101:b 1",
    }


def test_retry_after_lost_reply_is_a_noop(click_settings: Settings, db9_url: str) -> None:
    """A batch applied once (reply lost) and then retried by the recorder lands once."""
    link = make_link()

    async def go() -> tuple[list[Click], collections.Counter[Any]]:
        async with recorder(click_settings.replace(click_flush_interval_ms=60_000), db9_url) as (
            rec,
            client,
        ):
            [batch] = rec._build([(time.time(), link, make_scope(), "https://example.com/x")])
            assert await rec._send(batch)  # first attempt: applied, pretend the reply was lost
            rec._hold([batch])  # ...so the batch is still held, and close() retries it
        async with recorder(click_settings, db9_url, flush=False) as (rec, client):
            return await stream_clicks(client), await counters(client)

    clicks, counts = asyncio.run(go())
    assert len(clicks) == 1 and sum(counts.values()) == 1


# ---- the open batch ---------------------------------------------------------------------------------
def test_record_encodes_into_the_open_batch_sealed_at_the_batch_size(
    click_settings: Settings, db9_url: str
) -> None:
    """record() encodes at once (no scope is kept) and seals a batch every CLICK_FLUSH_MAX_EVENTS;
    the flush task seals what is left, and the next clicks open a new batch."""
    settings = click_settings.replace(click_flush_interval_ms=60_000, click_flush_max_events=100)
    link = make_link()

    async def go() -> tuple[list[int], int, list[int], int]:
        rec = ClickRecorder(settings, client_for(db9_url))
        for _ in range(250):
            rec.record(link, make_scope(), "https://example.com/x")
        sealed = [batch.clicks for batch in rec._batches]
        open_events = rec._encoder.pending
        rec._seal()
        after = [batch.clicks for batch in rec._batches]
        rec.record(link, make_scope(), "https://example.com/late")
        return sealed, open_events, after, rec._encoder.pending

    sealed, open_events, after, reopened = asyncio.run(go())
    assert sealed == [100, 100] and open_events == 50
    assert after == [100, 100, 50] and reopened == 1


class TakeFailsOnce:
    """The recorder's encoder, whose first ``take`` fails as a failed allocation does: raising
    ``MemoryError`` with the open batch left as it was (tests/test_encoder_limits.py)."""

    def __init__(self, encoder: Any) -> None:
        self.encoder, self.failed = encoder, False

    def __getattr__(self, name: str) -> Any:
        return getattr(self.encoder, name)

    def take(self) -> Any:
        if not self.failed:
            self.failed = True
            raise MemoryError
        return self.encoder.take()


def test_a_failed_take_keeps_the_open_batch_for_the_next_flush(
    click_settings: Settings, db9_url: str
) -> None:
    settings = click_settings.replace(click_flush_interval_ms=60_000, click_flush_max_events=5000)
    link = make_link()
    dropped = REGISTRY.get_sample_value("linkedge_clicks_dropped_total", {"reason": "error"}) or 0

    async def go() -> tuple[list[int], list[int]]:
        rec = ClickRecorder(settings, client_for(db9_url))
        rec._encoder = TakeFailsOnce(rec._encoder)
        for _ in range(30):
            rec.record(link, make_scope(), "https://example.com/x")
        rec._seal()
        failed = [batch.clicks for batch in rec._batches]
        rec.record(link, make_scope(), "https://example.com/x")
        rec._seal()
        return failed, [batch.clicks for batch in rec._batches]

    failed, after = asyncio.run(go())
    assert failed == [] and after == [31]
    now = REGISTRY.get_sample_value("linkedge_clicks_dropped_total", {"reason": "error"}) or 0
    assert now == dropped  # nothing was lost, so nothing is counted as dropped


def test_one_stream_entry_per_flush_holds_its_events(
    click_settings: Settings, db9_url: str
) -> None:
    settings = click_settings.replace(click_flush_interval_ms=60_000, click_flush_max_events=40)
    link = make_link()

    async def go() -> tuple[list[list[bytes]], list[Click]]:
        async with recorder(settings, db9_url) as (rec, client):
            for i in range(100):
                rec.record(link, make_scope(), f"https://example.com/{i}")
            await rec.close()
            entries = [
                split_entry(fields[b"e"])
                for shard in range(SHARDS)
                for _id, fields in await client.xrange(keys.clicks_stream(shard))
            ]
            return entries, await stream_clicks(client)

    entries, clicks = asyncio.run(go())
    assert sorted(len(events) for events in entries) == [20, 40, 40]
    assert len({c.id for c in clicks}) == 100
    assert sorted(c.target for c in clicks) == sorted(
        f"https://example.com/{i}" for i in range(100)
    )


def test_start_settles_the_garbage_collector(click_settings: Settings, db9_url: str) -> None:
    async def go() -> None:
        async with recorder(click_settings, db9_url):
            pass

    asyncio.run(go())
    assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0


# ---- shutdown and synchronous mode ----------------------------------------------------------------
def test_close_flushes_everything(click_settings: Settings, db9_url: str) -> None:
    settings = click_settings.replace(click_flush_interval_ms=60_000, click_flush_max_events=5000)
    link = make_link()

    async def go() -> tuple[list[Click], collections.Counter[Any]]:
        client = client_for(db9_url)
        await client.flushdb()
        rec = ClickRecorder(settings, client)
        await rec.start()
        for _ in range(137):
            rec.record(link, make_scope(), "https://example.com/x")
        await rec.close()
        result = await stream_clicks(client), await counters(client)
        await client.aclose()
        return result

    clicks, counts = asyncio.run(go())
    assert len(clicks) == 137 and sum(counts.values()) == 137


def test_record_now_is_in_redis_on_return(click_settings: Settings, db9_url: str) -> None:
    settings = click_settings.replace(click_flush_interval_ms=0)
    link = make_link()

    async def go() -> list[Click]:
        async with recorder(settings, db9_url) as (rec, client):
            assert rec.sync
            await rec.record_now(link, make_scope(method="HEAD"), "https://example.com/x")
            return await stream_clicks(client)

    [click] = asyncio.run(go())
    assert click.link_id == link.id and click.bot == "head"


def test_concurrent_record_now_calls_share_one_flush(
    click_settings: Settings, db9_url: str
) -> None:
    settings = click_settings.replace(click_flush_interval_ms=0)
    link = make_link()
    flushes = metric("linkedge_click_flush_events_count")

    async def go() -> list[Click]:
        async with recorder(settings, db9_url) as (rec, client):
            await asyncio.gather(
                *(rec.record_now(link, make_scope(), f"https://example.com/{i}") for i in range(50))
            )
            return await stream_clicks(client)  # on return, every click is already in Redis

    clicks = asyncio.run(go())
    assert sorted(int(c.target.rsplit("/", 1)[1]) for c in clicks) == list(range(50))
    assert metric("linkedge_click_flush_events_count") - flushes == 1


def test_record_now_with_redis_down_spools_on_close_and_replays_later(
    click_settings: Settings, db9_url: str
) -> None:
    settings = click_settings.replace(click_flush_interval_ms=0)
    link = make_link()
    spooled = metric("linkedge_clicks_spooled_total")

    async def go() -> list[Click]:
        down = client_for(f"redis://127.0.0.1:{free_port()}/0")
        rec = ClickRecorder(settings, down)
        await rec.start()
        await rec.record_now(link, make_scope(), "https://example.com/x")  # does not raise
        await rec.close()
        await down.aclose()
        assert len(spool_files(settings.click_spool_dir)) == 1
        async with recorder(settings, db9_url) as (_rec, client):
            return await eventually(lambda: stream_clicks(client))  # type: ignore[no-any-return]

    [click] = asyncio.run(go())
    assert click.link_id == link.id
    assert metric("linkedge_clicks_spooled_total") - spooled == 1
    assert spool_files(settings.click_spool_dir) == []


async def flush_markers(client: aioredis.Redis) -> list[bytes]:
    return [key async for key in client.scan_iter(match=f"{keys.PREFIX}:*:flush:*")]


def test_answered_flushes_markers_are_deleted_by_later_calls(
    click_settings: Settings, db9_url: str
) -> None:
    """A marker only guards a retry after a lost reply; once this worker has the reply, its next
    call to that shard deletes it. So markers do not pile up (one per flush for a day), and the
    counts stay exact."""
    settings = click_settings.replace(click_flush_max_events=10)
    link = make_link()

    async def go() -> tuple[int, list[bytes], int, int]:
        async with recorder(settings, db9_url) as (rec, client):
            for round_no in range(40):
                for _ in range(10):
                    rec.record(link, make_scope(), "https://example.com/x")
                done = 10 * (round_no + 1)
                await eventually(lambda n=done: _at_least(stream_clicks(client), n))
            flushes = 40
            markers = await flush_markers(client)
            pending = sum(len(spent) for spent in rec._spent.values())
            return flushes, markers, pending, sum((await counters(client)).values())

    flushes, markers, pending, counted = asyncio.run(go())
    assert counted == 400
    # What is left: the markers of the last answered flush to each shard, not yet deleted.
    assert len(markers) == pending <= SHARDS < flushes


def test_a_spool_replay_keeps_its_markers(click_settings: Settings, db9_url: str) -> None:
    """A batch replayed from a spool file may be replayed again by another worker if this one dies
    before the file is finished: its marker must stay (and expire on its own), while the markers of
    batches sent from memory are deleted by later calls."""
    settings = click_settings.replace(click_flush_interval_ms=60_000, click_flush_max_events=5)
    link = make_link()

    async def go() -> tuple[int, set[str], set[str], set[str]]:
        client = client_for(db9_url)
        await client.flushdb()
        rec = ClickRecorder(settings, client)  # not started: this test drives the flush steps
        for _ in range(15):
            rec.record(link, make_scope(), "https://example.com/x")
        rec._seal()
        spooled = list(rec._batches)
        rec._spool_out(spooled)  # as when memory was full during an outage
        rec._batches.clear()
        rec._batched_events = 0
        rec._spool_check_at = 0.0
        while await rec._replay_spool():
            pass
        sent: list[Batch] = []
        for _ in range(3):  # three rounds of flushes from memory, to every shard
            for _ in range(4 * 5):
                rec.record(link, make_scope(), "https://example.com/later")
            rec._seal()
            sent += rec._batches
            await rec._tick()
        markers = {m.decode() for m in await flush_markers(client)}
        clicks = len(await stream_clicks(client))
        await rec.close()
        await client.aclose()
        return (
            clicks,
            markers,
            {keys.flush_marker(b.shard, b.flush_id) for b in spooled},
            {keys.flush_marker(b.shard, b.flush_id) for b in sent},
        )

    clicks, markers, replayed, from_memory = asyncio.run(go())
    assert clicks == 15 + 60
    assert markers >= replayed  # all kept
    assert len(markers & from_memory) <= SHARDS < len(from_memory)  # only the last ones left


# ---- Redis outage, spool, drops -------------------------------------------------------------------
@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path / "own-redis", persist=True).start()
    yield server
    server.stop()


def test_outage_memory_then_spool_then_exactly_once(
    click_settings: Settings, own_redis: EmbeddedRedis
) -> None:
    settings = click_settings.replace(click_memory_limit=10, click_flush_max_events=5)
    link = make_link()
    spooled = metric("linkedge_clicks_spooled_total")
    dropped = total_dropped()
    restarted: list[EmbeddedRedis] = []

    async def go() -> tuple[list[Click], collections.Counter[Any], float]:
        async with recorder(settings, own_redis.url) as (rec, client):
            for _ in range(10):
                rec.record(link, make_scope(), "https://example.com/x")
            await eventually(lambda: _at_least(stream_clicks(client), 10))
            own_redis.stop()
            for i in range(90):
                rec.record(link, make_scope(), "https://example.com/x")
                if i % 10 == 9:
                    await asyncio.sleep(0.05)
            await eventually(
                lambda: _async(metric("linkedge_clicks_spooled_total") - spooled >= 80)
            )
            assert spool_files(settings.click_spool_dir)
            assert rec._batched_events <= settings.click_memory_limit
            spooled_during_outage = metric("linkedge_clicks_spooled_total") - spooled
            restarted.append(
                EmbeddedRedis(own_redis.data_dir, port=own_redis.port, persist=True).start()
            )
            clicks = await eventually(lambda: _at_least(stream_clicks(client), 100))
            await eventually(lambda: _async(not spool_files(settings.click_spool_dir)))
            return clicks, await counters(client), spooled_during_outage

    try:
        clicks, counts, spooled_during_outage = asyncio.run(go())
    finally:
        for server in restarted:
            server.stop()
    assert spooled_during_outage >= 80
    assert len(clicks) == 100 and len({c.id for c in clicks}) == 100
    assert sum(counts.values()) == 100
    assert total_dropped() == dropped


async def _async(value: Any) -> Any:
    return value


def test_drops_counted_and_logged_once_when_memory_and_spool_are_full(
    click_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = click_settings.replace(
        click_memory_limit=5, click_flush_max_events=5, click_spool_max_bytes=200
    )
    link = make_link()
    before = metric("linkedge_clicks_dropped_total", reason="spool_full")

    async def go() -> None:
        down = client_for(f"redis://127.0.0.1:{free_port()}/0")
        rec = ClickRecorder(settings, down)
        await rec.start()
        for i in range(50):
            rec.record(link, make_scope(), "https://example.com/x")
            if i % 10 == 9:
                await asyncio.sleep(0.05)
        await eventually(
            lambda: _async(
                metric("linkedge_clicks_dropped_total", reason="spool_full") - before >= 45
            )
        )
        await rec.close()
        await down.aclose()

    with caplog.at_level(logging.WARNING, logger="edge.clicks"):
        asyncio.run(go())
    assert metric("linkedge_clicks_dropped_total", reason="spool_full") - before == 50
    assert [r.getMessage() for r in caplog.records].count(
        "dropping clicks (memory and spool full, or unreadable)"
    ) == 1
    assert spool_files(settings.click_spool_dir) == []


# ---- spool files left by other workers ------------------------------------------------------------
DEAD_WORKER = """
import sys, time, uuid
from edge.spool import Batch, Spool
from linkedge.events import Click, encode, counter_field
directory, link_id, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
spool = Spool(directory, 10**9)
for start in range(0, n, 5):
    events = []
    for i in range(start, min(n, start + 5)):
        ts = int(time.time() * 1000)
        click = Click(id=str(uuid.uuid4()), ts_ms=ts, link_id=link_id, account_id=1, code="dead",
                      target="https://example.com/dead", ip="192.0.2.1")
        events.append(encode(click))
    spool.write([Batch.of(uuid.uuid4().hex, start % 4, {counter_field(link_id, click.day, False): len(events)}, events)])
"""


def test_spool_of_a_dead_worker_is_replayed_and_a_live_one_is_left_alone(
    click_settings: Settings, db9_url: str
) -> None:
    directory = Path(click_settings.click_spool_dir)
    dead_link, live_link = make_link(), make_link()
    subprocess.run(
        [sys.executable, "-c", DEAD_WORKER, str(directory), str(dead_link.id), "23"],
        cwd=ROOT,
        check=True,
    )
    # A torn last line, as a crash in the middle of a write leaves it: counted, never replayed.
    torn = directory / "clicks-999999-torn.spool"
    good = Batch.of(
        uuid.uuid4().hex,
        1,
        {f"{dead_link.id}:20260101:h": 1},
        [b'{"v":1,"id":"x","ts":1,"l":%d,"a":1,"c":"t","t":"u","ip":""}' % dead_link.id],
    )
    torn.write_bytes(good.to_line() + b'7 {"f":"abc","s":1,"c":{')
    corrupt = metric("linkedge_clicks_dropped_total", reason="spool_corrupt")
    live = Spool(directory, 10**9)  # a worker of this run, alive: holds the lock on its file
    live_batch = Batch.of(
        uuid.uuid4().hex,
        0,
        {f"{live_link.id}:20260101:h": 1},
        [b'{"v":1,"id":"y","ts":1,"l":%d,"a":1,"c":"l","t":"u","ip":""}' % live_link.id],
    )
    assert live.write([live_batch]) == 1

    async def go() -> tuple[list[Click], list[Path], list[Click]]:
        async with recorder(click_settings, db9_url) as (_rec, client):
            clicks = await eventually(lambda: _at_least(stream_clicks(client), 24))
            await eventually(lambda: _async(len(spool_files(directory)) == 1))
            left = spool_files(directory)
            live.release()  # the live worker goes away: now its file is fair game
            after = await eventually(lambda: _at_least(stream_clicks(client), 25))
            await eventually(lambda: _async(not spool_files(directory)))
            return clicks, left, after

    clicks, left, after = asyncio.run(go())
    assert collections.Counter(c.link_id for c in clicks) == {dead_link.id: 24}
    assert [p.name.startswith("clicks-") for p in left] == [True]
    assert collections.Counter(c.link_id for c in after) == {dead_link.id: 24, live_link.id: 1}
    assert metric("linkedge_clicks_dropped_total", reason="spool_corrupt") - corrupt == 7


def test_two_replayers_never_replay_the_same_file(tmp_path: Path) -> None:
    spool = Spool(tmp_path, 10**9)
    batch = Batch.of("f1", 0, {"1:20260101:h": 1}, [b"{}"])
    spool.write([batch])
    spool.release()
    first, second = Spool(tmp_path, 10**9).claim(), Spool(tmp_path, 10**9).claim()
    assert first is not None and second is None
    assert [b for b in first.batches()] == [batch]
    first.finish()
    assert spool_files(tmp_path) == []


# ---- through the real edge ------------------------------------------------------------------------
@pytest.mark.parametrize("interval_ms", ["60000", "0"])
def test_sigterm_flushes_every_click_of_the_edge(
    start_edge: Callable[..., Any],
    account: Callable[..., Any],
    db: Any,
    redis_client: Any,
    interval_ms: str,
) -> None:
    """N redirects through two Granian workers, SIGTERM: exactly N stream entries and counts.

    With a one-minute flush interval the clicks reach Redis only through the shutdown flush;
    with 0 each redirect answers after its click is in Redis.
    """
    account_id = db.fetchval("SELECT account_id FROM api_keys WHERE id = $1", account().key_id)
    code = "k" + uuid.uuid4().hex[:10]
    link_id = db.fetchval(
        "INSERT INTO links (account_id, code, url) VALUES ($1, $2, $3) RETURNING id",
        account_id,
        code,
        "https://example.org/landing",
    )
    edge = start_edge(workers=2, CLICK_FLUSH_INTERVAL_MS=interval_ms)
    humans, heads = 200, 20
    with edge.client(headers={"user-agent": CHROME}) as client:
        statuses = [client.get(f"/{code}").status_code for _ in range(humans)]
        statuses += [client.head(f"/{code}").status_code for _ in range(heads)]
    assert statuses == [302] * (humans + heads)
    assert edge.process.stop() == 0

    shards = Settings().click_shards
    events = [
        decode(raw)
        for shard in range(shards)
        for _id, fields in redis_client.xrange(keys.clicks_stream(shard))
        for raw in split_entry(fields[b"e"])
    ]
    mine = [e for e in events if e.link_id == link_id]
    assert len(mine) == humans + heads and len({e.id for e in mine}) == humans + heads
    assert collections.Counter(e.bot for e in mine) == {"": humans, "head": heads}
    counts: collections.Counter[bool] = collections.Counter()
    for shard in range(shards):
        for field, value in counter_items(redis_client.hgetall(keys.counts(shard)).items()):
            lid, _day, bot = parse_counter_field(field)
            if lid == link_id:
                counts[bot] += int(value)
    assert counts == {False: humans, True: heads}


def test_a_scope_that_cannot_be_read_is_counted_not_raised(
    click_settings: Settings, db9_url: str
) -> None:
    link = make_link()
    invalid = metric("linkedge_clicks_dropped_total", reason="invalid")
    broken = {"type": "http", "method": "GET", "headers": [(b"user-agent", 12345)], "client": None}

    async def go() -> list[Click]:
        async with recorder(click_settings, db9_url) as (rec, client):
            rec.record(link, broken, "https://example.com/broken")  # returns, whatever the scope
            rec.record(link, {"type": "http"}, "https://example.com/bare")
            return await eventually(lambda: stream_clicks(client))  # type: ignore[no-any-return]

    [click] = asyncio.run(go())
    assert click.target == "https://example.com/bare" and click.bot == "crawler"
    assert metric("linkedge_clicks_dropped_total", reason="invalid") - invalid == 1


def test_clicks_after_close_go_to_the_spool(click_settings: Settings, db9_url: str) -> None:
    """A request still running after shutdown flushed: its click is spooled, not lost."""
    link = make_link()

    async def go() -> list[Click]:
        late_client = client_for(db9_url)
        await late_client.flushdb()
        late = ClickRecorder(click_settings, late_client)
        await late.start()
        await late.close()
        late.record(link, make_scope(), "https://example.com/late")
        await late.record_now(link, make_scope(), "https://example.com/late-sync")
        assert spool_files(click_settings.click_spool_dir)
        late._spool.release()  # what the worker's exit does
        await late_client.aclose()
        async with recorder(click_settings, db9_url, flush=False) as (_rec, client):
            return await eventually(lambda: _at_least(stream_clicks(client), 2))  # type: ignore[no-any-return]

    clicks = asyncio.run(go())
    assert sorted(c.target for c in clicks) == [
        "https://example.com/late",
        "https://example.com/late-sync",
    ]


def test_redis_outage_under_the_edge_loses_nothing(
    start_edge: Callable[..., Any], account: Callable[..., Any], db: Any, tmp_path: Path
) -> None:
    """Redis stopped while the edge keeps redirecting, then started again: every click once."""
    account_id = db.fetchval("SELECT account_id FROM api_keys WHERE id = $1", account().key_id)
    code = "k" + uuid.uuid4().hex[:10]
    link_id = db.fetchval(
        "INSERT INTO links (account_id, code, url) VALUES ($1, $2, $3) RETURNING id",
        account_id,
        code,
        "https://example.org/landing",
    )
    own = EmbeddedRedis(tmp_path / "edge-redis", persist=True).start()
    servers = [own]
    try:
        spool_dir = tmp_path / "edge-spool"
        edge = start_edge(
            workers=2, REDIS_URL=own.url, CLICK_MEMORY_LIMIT="20", CLICK_SPOOL_DIR=str(spool_dir)
        )
        served = 0
        with edge.client(headers={"user-agent": CHROME}) as client:
            for phase in range(3):
                if phase == 1:
                    own.stop()
                if phase == 2:
                    servers.append(EmbeddedRedis(own.data_dir, port=own.port, persist=True).start())
                for _ in range(100):
                    served += client.get(f"/{code}").status_code == 302
                if phase == 1:  # the outage outgrew memory: the workers spooled
                    spooled = _metric_total(
                        client.get("/metrics").text, "linkedge_clicks_spooled_total"
                    )
        assert served == 300
        assert spooled > 0
        assert edge.process.stop() == 0
        assert spool_files(spool_dir) == []  # the shutdown flush replayed what was spooled
        import redis as sync_redis

        with sync_redis.Redis.from_url(own.url) as check:
            shards = Settings().click_shards
            ids = [
                decode(raw).id
                for shard in range(shards)
                for _id, fields in check.xrange(keys.clicks_stream(shard))
                for raw in split_entry(fields[b"e"])
            ]
            total = sum(
                int(value)
                for shard in range(shards)
                for field, value in counter_items(check.hgetall(keys.counts(shard)).items())
                if parse_counter_field(field)[0] == link_id
            )
    finally:
        for server in servers:
            server.stop()
    assert len(ids) == 300 and len(set(ids)) == 300
    assert total == 300


def _metric_total(exposition: str, name: str) -> float:
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in exposition.splitlines() if line.startswith(name)
    )


def test_sigterm_under_load_loses_no_served_click(
    start_edge: Callable[..., Any], account: Callable[..., Any], db: Any, redis_client: Any
) -> None:
    """SIGTERM while clients are still sending: every redirect a client received is a click in
    Redis, and the counters agree with the stream (a request cut off by the shutdown may or may
    not have been served, so the stream may hold a few more than the clients saw)."""
    account_id = db.fetchval("SELECT account_id FROM api_keys WHERE id = $1", account().key_id)
    code = "k" + uuid.uuid4().hex[:10]
    link_id = db.fetchval(
        "INSERT INTO links (account_id, code, url) VALUES ($1, $2, $3) RETURNING id",
        account_id,
        code,
        "https://example.org/landing",
    )
    edge = start_edge(workers=2)
    received, attempted = [0] * 4, [0] * 4
    stop = threading.Event()

    def hammer(slot: int) -> None:
        with edge.client(headers={"user-agent": CHROME}) as client:
            while not stop.is_set() and attempted[slot] < 2000:
                attempted[slot] += 1
                try:
                    if client.get(f"/{code}").status_code == 302:
                        received[slot] += 1
                except httpx.HTTPError:
                    return

    threads = [threading.Thread(target=hammer, args=(slot,)) for slot in range(4)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 20
    while sum(received) < 200 and time.monotonic() < deadline:
        time.sleep(0.02)
    # One SIGTERM to Granian and its workers, as a supervisor sends it. (A second one during the
    # graceful stop can leave Granian's workers to its kill timeout: a hard kill.)
    assert edge.process.stop() == 0
    stop.set()
    for thread in threads:
        thread.join(30)

    shards = Settings().click_shards
    mine = [
        e
        for shard in range(shards)
        for _id, fields in redis_client.xrange(keys.clicks_stream(shard))
        for raw in split_entry(fields[b"e"])
        if (e := decode(raw)).link_id == link_id
    ]
    total = sum(
        int(value)
        for shard in range(shards)
        for field, value in counter_items(redis_client.hgetall(keys.counts(shard)).items())
        if parse_counter_field(field)[0] == link_id
    )
    print(f"received {sum(received)} redirects, {len(mine)} clicks, {sum(attempted)} attempts")
    assert sum(received) >= 200
    assert sum(received) <= len(mine) <= sum(attempted)
    assert len({e.id for e in mine}) == len(mine) == total
