"""The click recorder in-process against real Redis: what a click becomes, one idempotent flush
per batch, the open batch, flush markers, shutdown and the synchronous recorder.

Each test records into Redis database 9 of the harness Redis, flushed per test
(``recorder_harness``).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import gc
import time
import uuid
from typing import Any, cast

import pytest
import redis.asyncio as aioredis
from prometheus_client import REGISTRY

from edge.clickinfo import client_ip, utm_params
from edge.clicks import ClickRecorder, new_recorder
from edge.resources import GC_THRESHOLDS, Resources
from edge.sender import FLUSH_SCRIPT, flush_args
from edge.spool import Batch
from edge.syncrecorder import SyncRecorder
from linkedge import keys
from linkedge.embedded import free_port
from linkedge.events import Click, counter_field, decode, encode, join_entry, split_entry
from linkedge.settings import ConfigError, Settings
from tests.recorder_harness import (
    CHROME,
    SHARDS,
    at_least,
    client_for,
    counters,
    eventually,
    link_record,
    make_scope,
    metric,
    recorder,
    spool_files,
    stream_clicks,
)


@pytest.fixture
def db9_url(stores: Any) -> str:
    return f"redis://127.0.0.1:{stores.redis.port}/9"


@pytest.fixture
def click_settings(settings: Settings) -> Settings:
    return settings.replace(click_shards=SHARDS, click_flush_interval_ms=20)


# ---- what one click becomes ---------------------------------------------------------------------
def test_event_fields_derived_from_the_scope(click_settings: Settings, db9_url: str) -> None:
    link = link_record()
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
    link = link_record()
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
    rec = SyncRecorder(settings, client_for("redis://127.0.0.1:1/0"))
    [batch] = rec.build([(time.time(), link, scope, "https://example.com/x") for scope in scopes])
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
    links = [link_record() for _ in range(3)]
    settings = click_settings.replace(click_flush_max_events=7)

    async def go() -> tuple[list[Click], collections.Counter[Any]]:
        async with recorder(settings, db9_url) as (rec, client):
            for i in range(60):
                rec.record(links[i % 3], make_scope(), "https://example.com/landing")
                if i % 20 == 19:
                    await asyncio.sleep(0.03)
            clicks = await eventually(lambda: at_least(stream_clicks(client), 60))
            return clicks, await counters(client)

    clicks, counts = asyncio.run(go())
    assert len(clicks) == 60 and len({c.id for c in clicks}) == 60
    by_link = collections.Counter(c.link_id for c in clicks)
    assert by_link == {link.id: 20 for link in links}
    assert sum(counts.values()) == 60
    assert {(lid, bot): n for (lid, _day, bot), n in counts.items()} == {
        (link.id, False): 20 for link in links
    }


def test_bot_reasons_decide_the_counter_field(click_settings: Settings, db9_url: str) -> None:
    link = link_record()
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
            clicks = await eventually(lambda: at_least(stream_clicks(client), len(cases)))
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
    link = link_record()
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
            return await eventually(lambda: at_least(stream_clicks(client), 3))  # type: ignore[no-any-return]

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
        stream: Any = await client.xrange(keys.clicks_stream(2))
        entries = [fields[b"e"] for _id, fields in stream]
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
    link = link_record()

    async def go() -> tuple[list[Click], collections.Counter[Any]]:
        async with recorder(click_settings.replace(click_flush_interval_ms=60_000), db9_url) as (
            rec,
            client,
        ):
            counts: dict[str, int] = {}
            events: list[bytes] = []
            rec.encoder.add(
                time.time(), link, make_scope(), "https://example.com/x", counts, events
            )
            batch = rec.sender.of(counts, events)
            assert await rec.sender.send(
                batch
            )  # first attempt: applied, pretend the reply was lost
            rec.backlog.hold([batch])  # ...so the batch is still held, and close() retries it
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
    link = link_record()

    async def go() -> tuple[list[int], int, list[int], int]:
        rec = ClickRecorder(settings, client_for(db9_url))
        for _ in range(250):
            rec.record(link, make_scope(), "https://example.com/x")
        sealed = [batch.clicks for batch in rec.backlog]
        open_events = rec._encoder.pending
        rec.seal()
        after = [batch.clicks for batch in rec.backlog]
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
    link = link_record()
    dropped = REGISTRY.get_sample_value("linkedge_clicks_dropped_total", {"reason": "error"}) or 0

    async def go() -> tuple[list[int], list[int]]:
        rec = ClickRecorder(settings, client_for(db9_url))
        rec._encoder = TakeFailsOnce(rec._encoder)
        for _ in range(30):
            rec.record(link, make_scope(), "https://example.com/x")
        rec.seal()
        failed = [batch.clicks for batch in rec.backlog]
        rec.record(link, make_scope(), "https://example.com/x")
        rec.seal()
        return failed, [batch.clicks for batch in rec.backlog]

    failed, after = asyncio.run(go())
    assert failed == [] and after == [31]
    now = REGISTRY.get_sample_value("linkedge_clicks_dropped_total", {"reason": "error"}) or 0
    assert now == dropped  # nothing was lost, so nothing is counted as dropped


def test_one_stream_entry_per_flush_holds_its_events(
    click_settings: Settings, db9_url: str
) -> None:
    settings = click_settings.replace(click_flush_interval_ms=60_000, click_flush_max_events=40)
    link = link_record()

    async def go() -> tuple[list[list[bytes]], list[Click]]:
        async with recorder(settings, db9_url) as (rec, client):
            for i in range(100):
                rec.record(link, make_scope(), f"https://example.com/{i}")
            await rec.close()
            entries = [
                split_entry(fields[b"e"])
                for shard in range(SHARDS)
                for _id, fields in cast(Any, await client.xrange(keys.clicks_stream(shard)))
            ]
            return entries, await stream_clicks(client)

    entries, clicks = asyncio.run(go())
    assert sorted(len(events) for events in entries) == [20, 40, 40]
    assert len({c.id for c in clicks}) == 100
    assert sorted(c.target for c in clicks) == sorted(
        f"https://example.com/{i}" for i in range(100)
    )


def test_worker_start_settles_the_garbage_collector(settings: Settings) -> None:
    """The worker's start-up (``Resources.open``, which also starts the recorder) freezes what it
    built and raises the young threshold (``edge.resources.settle_gc``)."""

    async def go() -> None:
        resources = await Resources.open(settings)
        await resources.close()

    asyncio.run(go())
    assert gc.get_threshold() == GC_THRESHOLDS and gc.get_freeze_count() > 0


# ---- shutdown and synchronous mode ----------------------------------------------------------------
def test_close_flushes_everything(click_settings: Settings, db9_url: str) -> None:
    settings = click_settings.replace(click_flush_interval_ms=60_000, click_flush_max_events=5000)
    link = link_record()

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
    link = link_record()

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
    link = link_record()
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
    link = link_record()
    spooled = metric("linkedge_clicks_spooled_total")

    async def go() -> list[Click]:
        down = client_for(f"redis://127.0.0.1:{free_port()}/0")
        rec = new_recorder(settings, down)
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
    link = link_record()

    async def go() -> tuple[int, list[bytes], int, int]:
        async with recorder(settings, db9_url) as (rec, client):
            for round_no in range(40):
                for _ in range(10):
                    rec.record(link, make_scope(), "https://example.com/x")
                done = 10 * (round_no + 1)

                async def landed(n: int = done) -> list[Click]:
                    return await at_least(stream_clicks(client), n)

                await eventually(landed)
            flushes = 40
            markers = await flush_markers(client)
            pending = sum(len(spent) for spent in rec.sender.spent.values())
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
    link = link_record()

    async def go() -> tuple[int, set[str], set[str], set[str]]:
        client = client_for(db9_url)
        await client.flushdb()
        rec = ClickRecorder(settings, client)  # not started: this test drives the flush steps
        for _ in range(15):
            rec.record(link, make_scope(), "https://example.com/x")
        rec.seal()
        spooled = list(rec.backlog)
        rec.backlog.max_events = 0  # as when memory was full during an outage
        rec.backlog.bound()
        rec.backlog.max_events = settings.click_memory_limit
        assert len(rec.backlog) == 0 and rec.backlog.events == 0
        while await rec.backlog.replay(rec.sender):
            pass
        sent: list[Batch] = []
        for _ in range(3):  # three rounds of flushes from memory, to every shard
            for _ in range(4 * 5):
                rec.record(link, make_scope(), "https://example.com/later")
            rec.seal()
            sent += rec.backlog
            await rec.tick()
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


def test_a_scope_that_cannot_be_read_is_counted_not_raised(
    click_settings: Settings, db9_url: str
) -> None:
    link = link_record()
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
