"""``linkedge reconcile``: Postgres and ClickHouse counts per link per UTC day, side by side.

Postgres (``link_daily_clicks``, written by the aggregator) and ClickHouse (``uniqExact(click_id)``
over ``clicks``, written by analytics) are fed from the same edge flush, so at rest they agree.
While clicks move they may not, by at most what is still in flight in Redis:

- counters not yet aggregated (the shard ``counts`` hashes and any aggregator snapshot): Postgres
  is behind by up to that much;
- stream entries not yet acknowledged by the analytics group (undelivered or pending): ClickHouse
  is behind by up to that much.

So for every link-day with ``d = postgres - clickhouse`` (clicks, and human clicks alike),
``-unaggregated <= d <= unacknowledged`` is in flight; anything else is a real difference. Redis is
read before and after the two databases and the larger of the two readings taken, and a check that
fails is repeated (clicks keep moving while we read). Exit code: 0 in sync or only in flight,
1 a real difference, 2 a store could not be read.

ClickHouse is queried directly for ``http(s)://`` URLs. The embedded ``chdb://`` engine can be open
in one process only, the analytics process, so reconcile asks it at ``ANALYTICS_URL``
(``/internal/daily-counts``, with ``Authorization: Bearer ANALYTICS_TOKEN`` when the token is set);
without ``ANALYTICS_URL`` it opens the data path itself, which works only while analytics is
stopped.

Redis is read like the other processes read it: when the ``REDIS_URL`` node says it is in cluster
mode, through a ``RedisCluster`` client, so each shard's keys are read on the node owning their slot.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import logging
import sys
from collections import Counter
from typing import Any, TextIO

import asyncpg
import httpx
import redis.asyncio as aioredis
from redis.exceptions import RedisClusterException

from analytics.consumer import parse_id
from linkedge import events, keys, redisclient
from linkedge.settings import Settings

Key = tuple[int, str]  # link id, ISO day
ATTEMPTS = 3
REDIS_TIMEOUT_S = 30.0
_PAGE = 1000


class ReconcileError(RuntimeError):
    """A store could not be read."""


@dataclasses.dataclass
class InFlight:
    unaggregated: Counter[Key] = dataclasses.field(default_factory=Counter)
    unaggregated_human: Counter[Key] = dataclasses.field(default_factory=Counter)
    unacked: Counter[Key] = dataclasses.field(default_factory=Counter)
    unacked_human: Counter[Key] = dataclasses.field(default_factory=Counter)

    def widest(self, other: InFlight) -> InFlight:
        names = [f.name for f in dataclasses.fields(self)]
        return InFlight(*(getattr(self, name) | getattr(other, name) for name in names))


@dataclasses.dataclass
class Row:
    key: Key
    pg: tuple[int, int]  # clicks, human clicks
    ch: tuple[int, int]
    unaggregated: int
    unacked: int
    beyond: bool


def _iso(day: str) -> str:
    return f"{day[:4]}-{day[4:6]}-{day[6:8]}"


async def open_redis(url: str) -> redisclient.AnyRedis:
    """A client for ``url``: ``RedisCluster`` when its node is in cluster mode, else a plain one."""
    options: dict[str, Any] = {
        "socket_timeout": REDIS_TIMEOUT_S,
        "socket_connect_timeout": REDIS_TIMEOUT_S,
    }
    if await redisclient.cluster_enabled(url, timeout=REDIS_TIMEOUT_S):
        return redisclient.cluster_client(url, "reconcile", **options)
    return aioredis.Redis.from_url(url, **options)


async def read_in_flight(client: redisclient.AnyRedis, shards: int) -> InFlight:
    found = InFlight()
    for shard in range(shards):
        for key in (keys.counts(shard), keys.counts_snapshot(shard)):
            for field, value in events.counter_items((await client.hgetall(key)).items()):
                try:
                    link_id, day, bot = events.parse_counter_field(field)
                    clicks = int(value)
                except (events.EventDecodeError, ValueError):  # the aggregator sets it aside
                    continue
                found.unaggregated[(link_id, _iso(day))] += clicks
                if not bot:
                    found.unaggregated_human[(link_id, _iso(day))] += clicks
        await _read_unacked(client, keys.clicks_stream(shard), found)
    return found


async def _read_unacked(client: redisclient.AnyRedis, stream: str, found: InFlight) -> None:
    """Count, per link-day, the events of the stream entries the analytics group has not
    acknowledged (an entry holds one or more)."""
    delivered: tuple[int, int] = (0, 0)
    pending: set[bytes] = set()
    groups = (
        {g["name"].decode(): g for g in await client.xinfo_groups(stream)}
        if await client.exists(stream)
        else {}
    )
    group = groups.get(keys.ANALYTICS_GROUP)
    if group is not None:
        delivered = parse_id(group["last-delivered-id"])
        start = "-"
        while group["pending"]:
            held: list[Any] = await client.xpending_range(
                stream, keys.ANALYTICS_GROUP, min=start, max="+", count=_PAGE
            )
            pending.update(p["message_id"] for p in held)
            if len(held) < _PAGE:
                break
            last = parse_id(held[-1]["message_id"])
            start = f"{last[0]}-{last[1] + 1}"
    start = "-"
    if group is not None and pending:
        start = min(pending, key=parse_id).decode()
    elif group is not None:
        start = f"{delivered[0]}-{delivered[1] + 1}"
    while True:
        page: Any = await client.xrange(stream, min=start, max="+", count=_PAGE)
        for entry_id, fields in page:
            if parse_id(entry_id) <= delivered and entry_id not in pending:
                continue  # delivered and acknowledged: in ClickHouse already
            for event in events.split_entry(fields.get(events.STREAM_FIELD, b"")):
                try:
                    click = events.decode(event)
                except events.EventDecodeError:
                    continue  # will go to the dead-letter stream, never counted in ClickHouse
                key = (click.link_id, _iso(click.day))
                found.unacked[key] += 1
                if not click.bot:
                    found.unacked_human[key] += 1
        if len(page) < _PAGE:
            return
        last = parse_id(page[-1][0])
        start = f"{last[0]}-{last[1] + 1}"


async def postgres_counts(dsn: str, since: datetime.date) -> dict[Key, tuple[int, int]]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch(
            "SELECT link_id, day, clicks, human_clicks FROM link_daily_clicks WHERE day >= $1",
            since,
        )
    finally:
        await conn.close()
    return {(r["link_id"], r["day"].isoformat()): (r["clicks"], r["human_clicks"]) for r in rows}


async def clickhouse_counts(settings: Settings, since: datetime.date) -> dict[Key, tuple[int, int]]:
    url = settings.clickhouse_url.get()
    if url.startswith("chdb:") and settings.analytics_url:
        endpoint = settings.analytics_url.rstrip("/") + "/internal/daily-counts"
        headers = {}
        if settings.analytics_token:
            headers["Authorization"] = f"Bearer {settings.analytics_token.get()}"
        try:
            async with httpx.AsyncClient(timeout=60, headers=headers) as client:
                response = await client.get(endpoint, params={"since": since.isoformat()})
        except httpx.HTTPError as exc:
            raise ReconcileError(
                f"analytics at {settings.analytics_url} did not answer: {exc}"
            ) from exc
        if response.status_code == 401:
            given = "a different" if settings.analytics_token else "no"
            raise ReconcileError(
                f"{endpoint} answered 401: ANALYTICS_TOKEN must be the analytics process's"
                f" (this run has {given} token)"
            )
        if response.status_code != 200:
            raise ReconcileError(
                f"{endpoint} answered {response.status_code}: {response.text[:300]}"
            )
        rows: list[dict[str, Any]] = response.json()["rows"]
    else:
        from analytics.writer import ClickHouseWriter

        writer = ClickHouseWriter(url, migrate=False)
        try:
            rows = await asyncio.to_thread(writer.daily_counts, since)
        except Exception as exc:
            hint = " (is analytics running? set ANALYTICS_URL)" if url.startswith("chdb:") else ""
            raise ReconcileError(f"ClickHouse query failed: {exc}{hint}") from exc
        finally:
            writer.close()
    return {(int(r["link_id"]), r["day"]): (int(r["clicks"]), int(r["human_clicks"])) for r in rows}


def compare(
    pg: dict[Key, tuple[int, int]], ch: dict[Key, tuple[int, int]], flight: InFlight
) -> list[Row]:
    """The link-days whose counts differ; ``beyond`` when in-flight clicks cannot explain it."""
    rows = []
    for key in sorted(set(pg) | set(ch) | set(flight.unaggregated) | set(flight.unacked)):
        p, c = pg.get(key, (0, 0)), ch.get(key, (0, 0))
        if p == c:
            continue
        limits = (
            (flight.unaggregated[key], flight.unacked[key]),
            (flight.unaggregated_human[key], flight.unacked_human[key]),
        )
        beyond = any(
            not -low <= pv - cv <= high for pv, cv, (low, high) in zip(p, c, limits, strict=True)
        )
        rows.append(Row(key, p, c, flight.unaggregated[key], flight.unacked[key], beyond))
    return rows


def print_report(rows: list[Row], compared: int, out: TextIO) -> None:
    if not rows:
        print(f"in sync: {compared} link-day(s) compared, Postgres and ClickHouse agree", file=out)
        return
    header = (
        "link_id",
        "day",
        "pg_clicks",
        "ch_clicks",
        "pg_human",
        "ch_human",
        "unaggregated",
        "unacked",
        "status",
    )
    table = [header] + [
        (
            str(r.key[0]),
            r.key[1],
            str(r.pg[0]),
            str(r.ch[0]),
            str(r.pg[1]),
            str(r.ch[1]),
            str(r.unaggregated),
            str(r.unacked),
            "DIFFERS" if r.beyond else "in flight",
        )
        for r in rows
    ]
    widths = [max(len(line[i]) for line in table) for i in range(len(header))]
    for line in table:
        print("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)), file=out)
    beyond = sum(r.beyond for r in rows)
    if beyond:
        print(f"{beyond} link-day(s) differ beyond what is in flight", file=out)
    else:
        print(f"{len(rows)} link-day(s) differ only by clicks still in flight", file=out)


async def reconcile(settings: Settings, days: int, out: TextIO = sys.stdout) -> int:
    since = datetime.datetime.now(datetime.UTC).date() - datetime.timedelta(days=max(1, days) - 1)
    client = await open_redis(settings.redis_url.get())
    try:
        for attempt in range(ATTEMPTS):
            before = await read_in_flight(client, settings.click_shards)
            pg = await postgres_counts(settings.database_url.get(), since)
            ch = await clickhouse_counts(settings, since)
            flight = before.widest(await read_in_flight(client, settings.click_shards))
            rows = compare(pg, ch, flight)
            if not any(r.beyond for r in rows) or attempt == ATTEMPTS - 1:
                break
            await asyncio.sleep(1)
    finally:
        await client.aclose()
    print_report(rows, len(set(pg) | set(ch)), out)
    return 1 if any(r.beyond for r in rows) else 0


def run(settings: Settings, args: argparse.Namespace) -> int:
    settings.require("redis_url", "database_url", "clickhouse_url")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # no line per request on our output
    try:
        return asyncio.run(reconcile(settings, args.days))
    except (
        ReconcileError,
        OSError,
        asyncpg.PostgresError,
        aioredis.RedisError,
        RedisClusterException,  # a cluster without a node for a slot: no RedisError subclass
    ) as exc:
        print(f"linkedge reconcile: {exc}", file=sys.stderr)
        return 2
