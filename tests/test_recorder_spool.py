"""The click recorder when Redis is down: the memory bound in clicks and in bytes, the spool,
drops, replay of spool files (dead workers' included), clicks after shutdown.

Outage tests run a Redis of their own (``outage_redis``) and stop and start it on the same port
with its data; the others use Redis database 9 of the harness Redis (``recorder_harness``).
"""

from __future__ import annotations

import asyncio
import collections
import logging
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from edge.clicks import ClickRecorder, SyncRecorder
from edge.spool import Batch, Spool
from linkedge.embedded import EmbeddedRedis, free_port
from linkedge.events import Click
from linkedge.settings import Settings
from tests.recorder_harness import (
    CHROME,
    ROOT,
    SHARDS,
    at_least,
    client_for,
    counters,
    eventually,
    link_record,
    make_scope,
    metric,
    now,
    recorder,
    spool_files,
    stream_clicks,
    total_dropped,
)


@pytest.fixture
def db9_url(stores: Any) -> str:
    return f"redis://127.0.0.1:{stores.redis.port}/9"


@pytest.fixture
def click_settings(settings: Settings) -> Settings:
    return settings.replace(click_shards=SHARDS, click_flush_interval_ms=20)


# ---- Redis outage, spool, drops -------------------------------------------------------------------
@pytest.fixture
def outage_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A Redis of this test's own, with its data on disk, for the test to stop and start again on
    the same port (conftest's ``own_redis`` is a module's, without persistence)."""
    server = EmbeddedRedis(tmp_path / "outage-redis", persist=True).start()
    yield server
    server.stop()


def test_outage_memory_then_spool_then_exactly_once(
    click_settings: Settings, outage_redis: EmbeddedRedis
) -> None:
    settings = click_settings.replace(click_memory_limit=10, click_flush_max_events=5)
    link = link_record()
    spooled = metric("linkedge_clicks_spooled_total")
    dropped = total_dropped()
    restarted: list[EmbeddedRedis] = []

    async def go() -> tuple[list[Click], collections.Counter[Any], float]:
        async with recorder(settings, outage_redis.url) as (rec, client):
            for _ in range(10):
                rec.record(link, make_scope(), "https://example.com/x")
            await eventually(lambda: at_least(stream_clicks(client), 10))
            outage_redis.stop()
            for i in range(90):
                rec.record(link, make_scope(), "https://example.com/x")
                if i % 10 == 9:
                    await asyncio.sleep(0.05)
            await eventually(lambda: now(metric("linkedge_clicks_spooled_total") - spooled >= 80))
            assert spool_files(settings.click_spool_dir)
            assert rec.backlog.events <= settings.click_memory_limit
            spooled_during_outage = metric("linkedge_clicks_spooled_total") - spooled
            restarted.append(
                EmbeddedRedis(outage_redis.data_dir, port=outage_redis.port, persist=True).start()
            )
            clicks = await eventually(lambda: at_least(stream_clicks(client), 100))
            await eventually(lambda: now(not spool_files(settings.click_spool_dir)))
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


def visitor_scope(i: int) -> dict[str, Any]:
    """A request with a referer as long as the event keeps it (2048 characters) and a user agent
    of its own: more than 2 KB of event for one click, different on every request. (The user
    agent stays short: crawler detection of a long one costs tens of milliseconds.)"""
    return make_scope(
        headers={
            "user-agent": f"{CHROME} visitor/{i:05d}",
            "referer": f"https://ref.example/{i:05d}/" + "r" * 2100,
        }
    )


def test_memory_bound_in_bytes_holds_for_large_clicks_during_an_outage(
    click_settings: Settings, outage_redis: EmbeddedRedis
) -> None:
    """Large clicks during an outage: the batches held in memory never pass
    CLICK_MEMORY_LIMIT_BYTES (the click limit, at its default, would hold them all), the rest
    goes to the spool, nothing is dropped, and once Redis is back every click is there once, with
    its own referer, and the counters are exact."""
    limit = 64 * 1024
    settings = click_settings.replace(click_memory_limit_bytes=limit, click_flush_max_events=5)
    assert settings.click_memory_limit == Settings().click_memory_limit
    link = link_record()
    before, outage = 10, 300
    spooled = metric("linkedge_clicks_spooled_total")
    dropped = total_dropped()
    restarted: list[EmbeddedRedis] = []

    async def go() -> tuple[list[Click], collections.Counter[Any], list[int], float]:
        async with recorder(settings, outage_redis.url) as (rec, client):
            for i in range(before):
                rec.record(link, visitor_scope(i), f"https://example.com/{i}")
            await eventually(lambda: at_least(stream_clicks(client), before))
            outage_redis.stop()
            held = []
            for i in range(before, before + outage):
                rec.record(link, visitor_scope(i), f"https://example.com/{i}")
                held.append(rec.backlog.bytes)
                if i % 20 == 19:
                    await asyncio.sleep(0.03)
                    held.append(rec.backlog.bytes)
            await asyncio.sleep(0.1)  # a few flush ticks, all failing
            held.append(rec.backlog.bytes)
            spooled_during_outage = metric("linkedge_clicks_spooled_total") - spooled
            restarted.append(
                EmbeddedRedis(outage_redis.data_dir, port=outage_redis.port, persist=True).start()
            )
            clicks = await eventually(lambda: at_least(stream_clicks(client), before + outage))
            await eventually(lambda: now(not spool_files(settings.click_spool_dir)))
            await eventually(lambda: now(rec.backlog.events == rec.backlog.bytes == 0))
            return clicks, await counters(client), held, spooled_during_outage

    try:
        clicks, counts, held, spooled_during_outage = asyncio.run(go())
    finally:
        for server in restarted:
            server.stop()
    assert max(held) <= limit and max(held) > 0
    # More than 2,048 bytes an event: at most 32 clicks fit in memory, the others were spooled.
    assert spooled_during_outage >= outage - limit // 2048
    assert len(clicks) == before + outage and len({c.id for c in clicks}) == before + outage
    assert sorted(c.referer for c in clicks) == sorted(
        f"https://ref.example/{i:05d}/" + "r" * (2048 - len(f"https://ref.example/{i:05d}/"))
        for i in range(before + outage)
    )
    assert sum(counts.values()) == before + outage
    assert total_dropped() == dropped


def test_the_batch_being_sent_is_never_spooled(click_settings: Settings, db9_url: str) -> None:
    """While a send waits on Redis (writes paused), batches past the memory bound are spooled,
    oldest first, but never the one being sent: it stays counted in memory, lands once when Redis
    answers, the spooled ones are replayed, and the counts are exact."""
    settings = click_settings.replace(
        click_flush_interval_ms=60_000, click_flush_max_events=5, click_memory_limit=10
    )
    link = link_record()
    spooled = metric("linkedge_clicks_spooled_total")

    async def go() -> tuple[int, int, int, list[Click], collections.Counter[Any]]:
        client, admin = client_for(db9_url), client_for(db9_url)
        await client.flushdb()
        rec = ClickRecorder(settings, client)  # not started: this test drives the flush steps
        for _ in range(5):  # the fifth fills the batch: sealed and held
            rec.record(link, make_scope(), "https://example.com/first")
        await admin.client_pause(600, all=False)  # writes (the flush script) wait
        sending = asyncio.create_task(rec.backlog.send(rec.sender))
        await asyncio.sleep(0.1)
        in_flight = (len(rec.backlog), rec.backlog.events)
        assert in_flight == (0, 5)  # out of the queue, still counted
        for _ in range(15):  # three more batches: 20 clicks against a bound of 10
            rec.record(link, make_scope(), "https://example.com/later")
        held, spooled_meanwhile = rec.backlog.events, len(rec.backlog)
        assert await sending  # the batch in flight, then the one still held
        while await rec.backlog.replay(rec.sender):
            pass
        result = (
            held,
            spooled_meanwhile,
            int(metric("linkedge_clicks_spooled_total") - spooled),
            await stream_clicks(client),
            await counters(client),
        )
        await rec.close()
        await client.aclose()
        await admin.aclose()
        return result

    held, left_in_queue, spooled_clicks, clicks, counts = asyncio.run(go())
    assert held == 10 and left_in_queue == 1  # 5 in flight, 5 held, the 10 between spooled
    assert spooled_clicks == 10
    assert len(clicks) == 20 and len({c.id for c in clicks}) == 20
    assert collections.Counter(c.target for c in clicks) == {
        "https://example.com/first": 5,
        "https://example.com/later": 15,
    }
    assert sum(counts.values()) == 20


def test_drops_counted_and_logged_once_when_memory_and_spool_are_full(
    click_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    settings = click_settings.replace(
        click_memory_limit=5, click_flush_max_events=5, click_spool_max_bytes=200
    )
    link = link_record()
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
            lambda: now(metric("linkedge_clicks_dropped_total", reason="spool_full") - before >= 45)
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
    dead_link, live_link = link_record(), link_record()
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
            clicks = await eventually(lambda: at_least(stream_clicks(client), 24))
            await eventually(lambda: now(len(spool_files(directory)) == 1))
            left = spool_files(directory)
            live.release()  # the live worker goes away: now its file is fair game
            after = await eventually(lambda: at_least(stream_clicks(client), 25))
            await eventually(lambda: now(not spool_files(directory)))
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


def test_clicks_after_close_go_to_the_spool(click_settings: Settings, db9_url: str) -> None:
    """A request still running after shutdown flushed: its click is spooled, not lost."""
    link = link_record()

    async def go() -> list[Click]:
        late_client = client_for(db9_url)
        await late_client.flushdb()
        late = ClickRecorder(click_settings, late_client)
        late_sync = SyncRecorder(click_settings.replace(click_flush_interval_ms=0), late_client)
        for rec in (late, late_sync):
            await rec.start()
            await rec.close()
        late.record(link, make_scope(), "https://example.com/late")
        await late_sync.record_now(link, make_scope(), "https://example.com/late-sync")
        assert spool_files(click_settings.click_spool_dir)
        for rec in (late, late_sync.buffered):  # what the worker's exit does
            rec.backlog.spool.release()
        await late_client.aclose()
        async with recorder(click_settings, db9_url, flush=False) as (_rec, client):
            return await eventually(lambda: at_least(stream_clicks(client), 2))  # type: ignore[no-any-return]

    clicks = asyncio.run(go())
    assert sorted(c.target for c in clicks) == [
        "https://example.com/late",
        "https://example.com/late-sync",
    ]
