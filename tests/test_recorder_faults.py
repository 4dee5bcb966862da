"""The click recorder's guarantees through the real edge (Granian workers, SIGTERM, a Redis
outage under load): slow, multi-process fault tests."""

from __future__ import annotations

import collections
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from linkedge import keys
from linkedge.embedded import EmbeddedRedis
from linkedge.events import counter_items, decode, parse_counter_field, split_entry
from linkedge.settings import Settings
from tests.recorder_harness import CHROME, spool_files


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
