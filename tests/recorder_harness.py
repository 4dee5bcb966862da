"""What the click recorder's tests share: clicks to record, a recorder on real Redis, and readers
of what reached Redis (stream events, counters) and the spool.

The tests of one recorder use Redis database 9 of the harness Redis (flushed per test), so that
the streams and counters hold exactly what the test recorded.
"""

from __future__ import annotations

import asyncio
import collections
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from prometheus_client import REGISTRY
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from edge.clicks import new_recorder
from edge.records import LinkRecord
from linkedge import keys
from linkedge.events import Click, counter_items, decode, parse_counter_field, split_entry
from linkedge.settings import Settings

SHARDS = 4
CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
ROOT = Path(__file__).resolve().parent.parent


def link_record(code: str | None = None) -> LinkRecord:
    """A link as the edge caches it, never stored anywhere (conftest's ``make_link`` stores one)."""
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
    clicks: list[Click] = []
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


async def at_least(clicks: Awaitable[list[Click]], n: int) -> list[Click]:
    found = await clicks
    return found if len(found) >= n else []


async def now(value: Any) -> Any:
    """``value``, awaitable (for ``eventually`` over a plain condition)."""
    return value


def spool_files(directory: str | Path) -> list[Path]:
    path = Path(directory)
    return sorted(path.glob("*.spool")) if path.exists() else []


@asynccontextmanager
async def recorder(
    settings: Settings, url: str, *, flush: bool = True
) -> AsyncIterator[tuple[Any, aioredis.Redis]]:
    """The recorder ``settings`` ask for (``new_recorder``), started on Redis at ``url``; closed
    on the way out. Tests reach into its parts, hence ``Any``."""
    client = client_for(url)
    if flush:
        await client.flushdb()
    rec = new_recorder(settings, client)
    await rec.start()
    try:
        yield rec, client
    finally:
        await rec.close()
        await client.aclose()
