"""Links for the bench, written straight into Postgres with one COPY; click totals read back."""

from __future__ import annotations

import asyncpg
import redis.asyncio as aioredis

from edge.records import LinkRecord
from linkedge import apikeys, events, keys
from linkedge.settings import Settings
from loadtest.bench.workload import code


async def seed_links(dsn: str, count: int, *, account: str = "bench") -> tuple[int, str]:
    """Create ``account`` with an API key and ``count`` links ``code(0..count-1)``; return (account_id, key)."""
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        _, key = await apikeys.create_key(conn, account)
        account_id = await apikeys.ensure_account(conn, account)
        records = [(account_id, code(i), f"https://example.com/landing/{i}") for i in range(count)]
        await conn.copy_records_to_table(
            "links", records=records, columns=["account_id", "code", "url"]
        )
        await conn.execute("ANALYZE links")
        return account_id, key
    finally:
        await conn.close()


async def postgres_clicks(dsn: str) -> int:
    """Every click the aggregator has moved to Postgres so far."""
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        return int(await conn.fetchval("SELECT coalesce(sum(clicks), 0) FROM link_click_totals"))
    finally:
        await conn.close()


async def links_of(dsn: str, account_id: int) -> int:
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        return int(
            await conn.fetchval("SELECT count(*) FROM links WHERE account_id = $1", account_id)
        )
    finally:
        await conn.close()


async def redis_pending_clicks(url: str, shards: int) -> int:
    """Clicks still in Redis counters (live hash and the aggregator's snapshot) over all shards."""
    client = aioredis.Redis.from_url(url)
    try:
        total = 0
        for shard in range(shards):
            for key in (keys.counts(shard), keys.counts_snapshot(shard)):
                pairs = events.counter_items((await client.hgetall(key)).items())
                total += sum(int(clicks) for _field, clicks in pairs)
        return total
    finally:
        await client.aclose()


async def forget_links(url: str, codes: list[str]) -> None:
    """Delete the Redis copies of ``codes`` so that the next lookup of each goes to Postgres."""
    client = aioredis.Redis.from_url(url)
    try:
        for start in range(0, len(codes), 5000):
            await client.delete(*[keys.link(c) for c in codes[start : start + 5000]])
    finally:
        await client.aclose()


async def cached_in_redis(url: str, codes: list[str]) -> int:
    """How many of ``codes`` have a link record in Redis."""
    client = aioredis.Redis.from_url(url)
    try:
        found = 0
        for start in range(0, len(codes), 5000):
            found += int(await client.exists(*[keys.link(c) for c in codes[start : start + 5000]]))
        return found
    finally:
        await client.aclose()


async def trim_streams(url: str, shards: int) -> None:
    """Empty the click streams between edge runs: analytics is measured on its own, not during them."""
    client = aioredis.Redis.from_url(url)
    try:
        for shard in range(shards):
            await client.xtrim(keys.clicks_stream(shard), maxlen=0)
    finally:
        await client.aclose()


# The columns of a LinkRecord, as edge.linkstore reads them for one code.
_RECORDS = """
SELECT id, account_id, code, url, redirect_type,
       EXTRACT(EPOCH FROM expires_at)::float8 AS expires_at,
       expired_url, forward_query, disabled,
       (EXTRACT(EPOCH FROM updated_at) * 1000000)::int8 AS version
FROM links WHERE deleted_at IS NULL
"""


async def cache_in_redis(url: str, dsn: str) -> int:
    """Write every link's record to Redis the way the edge writes one back after a Postgres read."""
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        rows = await conn.fetch(_RECORDS)
    finally:
        await conn.close()
    ttl = Settings().redis_link_ttl_s
    client = aioredis.Redis.from_url(url)
    try:
        for start in range(0, len(rows), 5000):
            async with client.pipeline(transaction=False) as pipe:
                for row in rows[start : start + 5000]:
                    record = LinkRecord(**dict(row))
                    pipe.set(keys.link(record.code), record.to_json(), ex=ttl)
                await pipe.execute()
    finally:
        await client.aclose()
    return len(rows)
