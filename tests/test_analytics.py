"""``linkedge analytics`` end to end: entries in the edge's format -> ClickHouse, exactly once.

Every test runs the real command as a subprocess against a Redis of this module's own (the shard
streams are global, and the session's Redis is shared with the edge's tests and their analytics
runs) and an embedded ClickHouse path of its own, which it reads through the process's HTTP port:
the chdb engine allows one process per data path and one data path per process, so this pytest
process never opens it.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from conftest import ANALYTICS_TOKEN, Process, wait_http

from linkedge import events, keys
from linkedge.embedded import EmbeddedRedis, free_port

SHARDS = 4
IPHONE = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148"
_ids = events.ClickIds()


class Analytics:
    def __init__(self, process: Process, port: int) -> None:
        self.process = process
        self.url = f"http://127.0.0.1:{port}"

    def get(self, path: str, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {ANALYTICS_TOKEN}"}
        return httpx.get(f"{self.url}{path}", params=params, headers=headers, timeout=30)

    def counts(self, link_id: int) -> dict[str, int]:
        response = self.get("/internal/link-counts", link_id=link_id)
        return response.json() if response.status_code == 200 else {}  # type: ignore[no-any-return]

    def metric(self, name: str) -> float:
        """Sum of every sample of ``name`` (all label sets) in /metrics."""
        total = 0.0
        for line in self.get("/metrics").text.splitlines():
            if line.startswith(name) and line[len(name)] in " {":
                total += float(line.rsplit(" ", 1)[1])
        return total


@pytest.fixture
def start_analytics(
    linkedge_process: Callable[..., Process], own_redis: EmbeddedRedis, tmp_path: Path
) -> Callable[..., Analytics]:
    """Factory: ``linkedge analytics`` on this module's Redis and the test's own chdb path."""

    def start(**env: str) -> Analytics:
        port = free_port()
        settings = {
            "REDIS_URL": own_redis.url,
            "CLICKHOUSE_URL": f"chdb://{tmp_path / 'clickhouse'}",
            "ANALYTICS_PORT": str(port),
            "CLICK_SHARDS": str(SHARDS),
            "ANALYTICS_BLOCK_MS": "200",
            "VISITOR_SALT_SECRET": "test-secret",
            **env,
        }
        proc = linkedge_process("analytics", **settings)
        analytics = Analytics(proc, port)
        wait_http(f"{analytics.url}/healthz", proc)
        return analytics

    return start


def link_ids(n: int) -> list[int]:
    return [random.randrange(10**12, 2**62) for _ in range(n)]


def make_clicks(links: list[int], n: int) -> list[events.Click]:
    """``n`` clicks spread over ``links``; every fourth one a crawler, every tenth a HEAD."""
    now = int(time.time() * 1000)
    clicks = []
    for i in range(n):
        bot = "crawler" if i % 4 == 0 else "head" if i % 10 == 3 else ""
        clicks.append(
            events.Click(
                id=_ids.new(now),
                ts_ms=now,
                link_id=links[i % len(links)],
                account_id=1,
                code=f"c{i % len(links)}",
                target="https://example.com/",
                ip=f"8.8.{i % 7}.{i % 200}",
                user_agent=IPHONE,
                referer="https://www.example.org/",
                utm={"utm_source": "test"},
                bot=bot,
            )
        )
    return clicks


def produce(client: redis.Redis, clicks: list[events.Click]) -> None:
    """XADD each click the way the edge's flush does: field ``e``, a shard's stream."""
    pipe = client.pipeline(transaction=False)
    for i, click in enumerate(clicks):
        pipe.xadd(keys.clicks_stream(i % SHARDS), {events.STREAM_FIELD: events.encode(click)})
    pipe.execute()


def produce_entries(client: redis.Redis, clicks: list[events.Click], per_entry: int) -> list[bytes]:
    """XADD ``clicks`` the way the edge's flush will: entries of ``per_entry`` events, a shard each
    in turn; the entry ids."""
    pipe = client.pipeline(transaction=False)
    for n, start in enumerate(range(0, len(clicks), per_entry)):
        encoded = [events.encode(c) for c in clicks[start : start + per_entry]]
        pipe.xadd(keys.clicks_stream(n % SHARDS), {events.STREAM_FIELD: events.join_entry(encoded)})
    return list(pipe.execute())


def expected(clicks: list[events.Click]) -> dict[int, tuple[int, int]]:
    total, human = Counter[int](), Counter[int]()
    for click in clicks:
        total[click.link_id] += 1
        human[click.link_id] += not click.bot
    return {link: (total[link], human[link]) for link in total}


def group_state(client: redis.Redis) -> tuple[int, int]:
    """(pending, undelivered) of the analytics group over every shard."""
    pending = undelivered = 0
    for shard in range(SHARDS):
        if not client.exists(keys.clicks_stream(shard)):
            continue  # nothing produced there, and analytics has not made its group yet
        for info in client.xinfo_groups(keys.clicks_stream(shard)):
            if info["name"] == keys.ANALYTICS_GROUP.encode():
                pending += info["pending"]
                undelivered += info["lag"] or 0
    return pending, undelivered


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"not within {timeout}s: {what}")


def assert_exact(analytics: Analytics, clicks: list[events.Click]) -> None:
    """Every link counted exactly: distinct ids, FINAL rows and the hourly rollup all agree."""
    for link_id, (total, human) in expected(clicks).items():
        counts = analytics.counts(link_id)
        assert counts["distinct_clicks"] == total, counts
        assert counts["final_rows"] == total, counts
        assert counts["hourly_clicks"] == total, counts
        assert counts["human_clicks"] == human and counts["hourly_human_clicks"] == human, counts


def drained(
    client: redis.Redis, analytics: Analytics, clicks: list[events.Click]
) -> Callable[[], bool]:
    want = expected(clicks)

    def check() -> bool:
        return group_state(client) == (0, 0) and all(
            analytics.counts(link).get("distinct_clicks") == total
            for link, (total, _) in want.items()
        )

    return check


def test_every_click_once_dead_letters_set_aside_replay_not_duplicated(
    rds: redis.Redis, start_analytics: Callable[..., Analytics]
) -> None:
    clicks = make_clicks(link_ids(3), 600)
    produce(rds, clicks)
    garbage = [b"not json", b'{"v": 99, "id": "x"}', b'{"v": 1, "id": "x"}']
    for i, raw in enumerate(garbage):
        rds.xadd(keys.clicks_stream(i), {events.STREAM_FIELD: raw})
    rds.xadd(keys.clicks_stream(3), {b"other": b"field"})
    negative = make_clicks([-5], 1)[0]
    rds.xadd(keys.clicks_stream(0), {events.STREAM_FIELD: events.encode(negative)})

    analytics = start_analytics()
    eventually(
        drained(rds, analytics, clicks), "all clicks in ClickHouse, every entry acknowledged"
    )
    assert_exact(analytics, clicks)
    assert analytics.metric("linkedge_analytics_events_total") == 600 + 5
    dead = [rds.xrange(keys.clicks_stream(s) + ":dead") for s in range(SHARDS)]
    assert sum(len(d) for d in dead) == 5
    assert {fields.get(events.STREAM_FIELD) for d in dead for _, fields in d} >= set(garbage)

    # The same events again (as a retried edge flush would, under new stream ids): no new clicks.
    produce(rds, clicks)
    eventually(lambda: group_state(rds) == (0, 0), "replayed entries acknowledged")
    eventually(
        lambda: analytics.metric("linkedge_analytics_events_total") == 1200 + 5, "replay consumed"
    )
    assert_exact(analytics, clicks)

    # The read side: reconcile's daily counts, the hourly series, problems on bad input.
    link = clicks[0].link_id
    total, human = expected(clicks)[link]
    daily = analytics.get("/internal/daily-counts", since=time.strftime("%Y-%m-%d", time.gmtime()))
    assert [
        (r["clicks"], r["human_clicks"]) for r in daily.json()["rows"] if r["link_id"] == link
    ] == [(total, human)]
    hourly = analytics.get("/internal/hourly", link_id=link, since="2000-01-01").json()["series"]
    assert (
        sum(h["clicks"] for h in hourly) == total
        and sum(h["human_clicks"] for h in hourly) == human
    )
    for path, params in [
        ("/internal/daily-counts", {"since": "yesterday"}),
        ("/internal/link-counts", {}),
        ("/internal/link-counts", {"link_id": "-1"}),
        ("/internal/hourly", {"link_id": "1"}),
    ]:
        bad = analytics.get(path, **params)
        assert bad.status_code == 400 and bad.headers["content-type"] == "application/problem+json"
    assert analytics.get("/nope").status_code == 404
    assert httpx.post(f"{analytics.url}/metrics").status_code == 405
    assert analytics.get("/readyz").json() == {
        "status": "ready",
        "checks": {"redis": "ok", "clickhouse": "ok"},
    }


def test_entries_of_many_events_every_click_once(
    rds: redis.Redis, start_analytics: Callable[..., Analytics]
) -> None:
    """Entries of 400 events with a batch size of 300 events: one entry a batch, never split."""
    clicks = make_clicks(link_ids(3), 1200)
    produce_entries(rds, clicks, 400)
    single = make_clicks(link_ids(1), 10)
    produce(rds, single)  # the one-event entries of before stay valid beside them
    analytics = start_analytics(ANALYTICS_BATCH_SIZE="300")
    eventually(drained(rds, analytics, clicks + single), "every event of every entry inserted")
    assert_exact(analytics, clicks + single)
    eventually(
        lambda: analytics.metric("linkedge_analytics_events_total") == 1210, "events counted"
    )
    assert analytics.metric("linkedge_analytics_entries_total") == 13
    assert all(rds.xlen(keys.clicks_stream(s) + ":dead") == 0 for s in range(SHARDS))


def test_bad_event_in_an_entry_is_set_aside_the_rest_inserted(
    rds: redis.Redis, start_analytics: Callable[..., Analytics]
) -> None:
    clicks = make_clicks(link_ids(2), 9)
    encoded = [events.encode(c) for c in clicks]
    bad = [b'{"v": 1, "id": "x"}', b"not json"]
    raw = events.join_entry(encoded[:5] + [bad[0]] + encoded[5:] + [bad[1]])
    entry_id = rds.xadd(keys.clicks_stream(1), {events.STREAM_FIELD: raw})
    analytics = start_analytics()
    eventually(drained(rds, analytics, clicks), "the good events inserted, the entry acknowledged")
    assert_exact(analytics, clicks)
    eventually(
        lambda: analytics.metric('linkedge_analytics_events_total{outcome="inserted"}') == 9,
        "inserted events counted",
    )
    assert analytics.metric('linkedge_analytics_events_total{outcome="dead_letter"}') == 2
    assert [f for _, f in rds.xrange(keys.clicks_stream(1) + ":dead")] == [
        {events.STREAM_FIELD: bad[0], b"id": entry_id, b"i": b"5"},
        {events.STREAM_FIELD: bad[1], b"id": entry_id, b"i": b"10"},
    ]
    assert group_state(rds) == (0, 0)
    analytics.process.stop()
    logged = [line for line in analytics.process.output().splitlines() if "undecodable" in line]
    assert len(logged) == 1 and "2 undecodable click event(s)" in logged[0]  # one line per entry


def run_child(script: str) -> str:
    """``script`` in a child Python (chdb holds one data path per process); its stdout."""
    result = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout


def test_same_batch_twice_is_skipped_by_the_deduplication_token(tmp_path: Path) -> None:
    """What the engine does with ``insert_deduplication_token`` (in a child: one chdb path each)."""
    script = f"""
import time
from analytics.enrich import Enricher
from analytics.writer import ClickHouseWriter, batch_token
from linkedge.events import Click, ClickIds
ids, now = ClickIds(), int(time.time() * 1000)
rows = [Enricher(b"s").row(Click(id=ids.new(now), ts_ms=now, link_id=9, account_id=1, code="c",
        target="t", ip="1.1.1.1", bot="" if i % 2 else "crawler")) for i in range(10)]
writer = ClickHouseWriter("chdb://{tmp_path / "ch"}")
writer.insert(rows, batch_token(["0/1-0", "0/2-0"]))
writer.insert(rows, batch_token(["0/2-0", "0/1-0"]))  # the same batch retried: skipped whole
first = writer.link_counts(9)
writer.insert(rows[:4], batch_token(["1/5-0"]))  # same clicks, other batch
print(first["row_count"], first["hourly_clicks"], sorted(writer.link_counts(9).items()))
"""
    stdout = run_child(script)
    rows, hourly, after = stdout.split(" ", 2)
    assert (rows, hourly) == ("10", "10")
    counts = dict(eval(after))
    assert counts["row_count"] == 14  # ReplacingMergeTree collapses these at merge time
    assert counts["final_rows"] == counts["distinct_clicks"] == counts["hourly_clicks"] == 10
    assert counts["human_clicks"] == counts["hourly_human_clicks"] == 5


def test_a_batch_spanning_many_months_inserts_once(tmp_path: Path) -> None:
    """``clicks`` is partitioned by month, and ClickHouse refuses by default an insert touching
    more than 100 partitions (code 252), which would retry the batch forever and stall its shard
    (a spool replayed after a long outage, a skewed clock). The writer lifts that limit; the
    deduplication token still covers every partition of the batch."""
    script = f"""
import datetime
from analytics.enrich import Enricher
from analytics.writer import ClickHouseWriter, batch_token
from linkedge.events import Click, ClickIds
ids = ClickIds()
start = datetime.datetime(2010, 1, 15, tzinfo=datetime.timezone.utc)
stamps = [int((start + datetime.timedelta(days=31 * i)).timestamp() * 1000) for i in range(150)]
rows = [Enricher(b"s").row(Click(id=ids.new(ts), ts_ms=ts, link_id=11, account_id=1, code="m",
        target="t", ip="1.1.1.1")) for ts in stamps]
writer = ClickHouseWriter("chdb://{tmp_path / "ch"}")
writer.insert(rows, batch_token(["0/9-0"]))
writer.insert(rows, batch_token(["0/9-0"]))  # retried after a lost ack: skipped, every partition
counts = writer.link_counts(11)
print(counts["row_count"], counts["distinct_clicks"])
"""
    stdout = run_child(script)
    assert stdout.split() == ["150", "150"]


def test_entries_of_a_dead_consumer_are_claimed(
    rds: redis.Redis, start_analytics: Callable[..., Analytics]
) -> None:
    clicks = make_clicks(link_ids(2), 200)
    produce(rds, clicks)
    for shard in range(SHARDS):
        rds.xgroup_create(keys.clicks_stream(shard), keys.ANALYTICS_GROUP, id="0", mkstream=True)
    taken = rds.xreadgroup(
        keys.ANALYTICS_GROUP,
        "gone-host-1",
        {keys.clicks_stream(s): ">" for s in range(SHARDS)},
        count=30,
    )
    held = sum(len(items) for _, items in taken)
    assert held == 4 * 30

    analytics = start_analytics(ANALYTICS_CLAIM_IDLE_MS="500")
    eventually(drained(rds, analytics, clicks), "claimed and new entries all in ClickHouse")
    assert_exact(analytics, clicks)
    assert analytics.metric("linkedge_analytics_claimed_total") >= held


def _pending_of(client: redis.Redis) -> dict[str, int]:
    found: Counter[str] = Counter()
    for shard in range(SHARDS):
        for info in client.xinfo_consumers(keys.clicks_stream(shard), keys.ANALYTICS_GROUP):
            found[info["name"].decode()] += info["pending"]
    return dict(found)


@pytest.mark.slow
@pytest.mark.parametrize("per_entry", [1, 100])
def test_consumer_killed_mid_batch_loses_and_duplicates_nothing(
    rds: redis.Redis, start_analytics: Callable[..., Analytics], per_entry: int
) -> None:
    clicks = make_clicks(link_ids(3), 5000)
    produce_entries(rds, clicks, per_entry)
    env = {"ANALYTICS_BATCH_SIZE": "200", "ANALYTICS_CLAIM_IDLE_MS": "1000"}
    first = start_analytics(**env)
    eventually(
        lambda: first.metric("linkedge_analytics_batches_total") >= 2, "first batches inserted"
    )
    for _ in range(100):  # stop it while it holds a batch: read, maybe inserted, not acknowledged
        first.process.signal(signal.SIGSTOP)
        held = sum(_pending_of(rds).values())
        if held:
            break
        first.process.signal(signal.SIGCONT)
        time.sleep(0.02)
    first.process.signal(signal.SIGKILL)
    first.process.proc.wait(10)
    assert held > 0, "never caught the consumer holding a batch"
    assert group_state(rds)[0] == held  # the dead consumer's entries wait, unacknowledged

    second = start_analytics(**env)
    eventually(
        drained(rds, second, clicks), "everything in ClickHouse after the restart", timeout=60
    )
    assert_exact(second, clicks)
    assert second.metric("linkedge_analytics_claimed_total") >= held


@pytest.mark.slow
def test_clickhouse_unavailable_entries_wait_then_arrive(
    rds: redis.Redis, start_analytics: Callable[..., Analytics]
) -> None:
    clicks = make_clicks(link_ids(2), 300)
    produce(rds, clicks)
    closed_port = free_port()  # nothing listens there: every ClickHouse call is refused
    down = start_analytics(CLICKHOUSE_URL=f"http://127.0.0.1:{closed_port}")
    eventually(
        lambda: down.metric("linkedge_analytics_insert_failures_total") >= 2, "inserts failing"
    )
    eventually(lambda: down.metric("linkedge_analytics_pending") == 300, "lag visible in /metrics")
    eventually(
        lambda: down.metric("linkedge_analytics_oldest_pending_age_seconds") > 0, "age visible"
    )
    assert group_state(rds) == (300, 0)  # read, held, not acknowledged
    ready = down.get("/readyz")
    assert ready.status_code == 503 and ready.json()["checks"] == {
        "redis": "ok",
        "clickhouse": "down",
    }
    assert down.get("/internal/daily-counts", since="2020-01-01").status_code == 503
    assert down.process.stop() == 0
    assert group_state(rds) == (300, 0)
    assert all(rds.xlen(keys.clicks_stream(s) + ":dead") == 0 for s in range(SHARDS))

    up = start_analytics(ANALYTICS_CLAIM_IDLE_MS="500")
    eventually(drained(rds, up, clicks), "the waiting entries in ClickHouse once it is back")
    assert_exact(up, clicks)


def test_trimming_keeps_whatever_a_group_has_not_acknowledged(
    rds: redis.Redis, start_analytics: Callable[..., Analytics]
) -> None:
    stream = keys.clicks_stream(0)
    for shard in range(SHARDS):
        rds.xgroup_create(keys.clicks_stream(shard), keys.ANALYTICS_GROUP, id="0", mkstream=True)
    rds.xgroup_create(stream, "audit", id="0")
    first = make_clicks(link_ids(1), 100)
    first_ids = [rds.xadd(stream, {events.STREAM_FIELD: events.encode(c)}) for c in first]
    rds.xreadgroup("audit", "auditor", {stream: ">"}, count=50)  # read but never acknowledged
    rds.xack(stream, "audit", *first_ids[:40])  # ...except the first 40
    second = make_clicks(link_ids(1), 20)
    second_ids = [rds.xadd(stream, {events.STREAM_FIELD: events.encode(c)}) for c in second]
    rds.xreadgroup(keys.ANALYTICS_GROUP, "stuck-host", {stream: ">"}, count=120)  # all of it, held
    rds.xack(stream, keys.ANALYTICS_GROUP, *first_ids)  # the analytics group finished `first`...
    third = make_clicks(link_ids(1), 50)
    third_ids = [rds.xadd(stream, {events.STREAM_FIELD: events.encode(c)}) for c in third]

    analytics = start_analytics(ANALYTICS_CLAIM_IDLE_MS="3600000")  # ...but `second` stays stuck
    eventually(
        lambda: analytics.metric("linkedge_analytics_events_total") == 50, "third batch consumed"
    )
    eventually(lambda: rds.xlen(stream) < 170, "stream trimmed")
    time.sleep(2.5)  # another maintenance pass: it must not trim further
    kept = {entry_id for entry_id, _ in rds.xrange(stream)}
    # audit acknowledged first[:40] only; first[40:50] are pending in audit, so nothing from there
    # on may go, though analytics acknowledged all of `first`.
    assert kept == set(first_ids[40:] + second_ids + third_ids)
    assert analytics.metric("linkedge_analytics_trimmed_total") == 40
    # Every group's lag is published, not just the analytics group's.
    audit = 'linkedge_analytics_pending{group="audit",shard="0"}'
    eventually(lambda: analytics.metric(audit) == 10, "the audit group's pending entries")


def test_redis_emptied_under_it_groups_are_recreated(
    rds: redis.Redis, start_analytics: Callable[..., Analytics]
) -> None:
    """A Redis restarted without its data loses streams and groups; analytics makes them again."""
    before = make_clicks(link_ids(1), 50)
    produce(rds, before)
    analytics = start_analytics()
    eventually(drained(rds, analytics, before), "first clicks in ClickHouse")
    rds.flushall()
    after = make_clicks(link_ids(1), 50)
    eventually(lambda: rds.exists(keys.clicks_stream(0)) == 1, "streams and groups recreated")
    produce(rds, after)
    eventually(drained(rds, analytics, before + after), "clicks after the flush in ClickHouse")
    assert_exact(analytics, before + after)
