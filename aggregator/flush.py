"""Moving one shard's click counters from Redis to Postgres, exactly once.

Three steps, each atomic on its own, safe to repeat after a crash between any two:

1. ``take``: one Lua call. If the shard has an unfinished batch (``counts:batch`` set), return
   its id and snapshot; else RENAME ``counts`` to ``counts:snapshot``, set ``counts:batch`` to a
   new id and return them. The id and the snapshot are read together, so two aggregators racing
   always see a snapshot with the id it belongs to. The snapshot's fields are the edge's flushes,
   each holding that flush's counters as lines (``events.counter_items`` expands them).
2. ``apply``: one Postgres transaction. Insert the batch id into ``aggregator_batches`` (unique);
   only if it was new, upsert the daily and total counts, one statement each (arrays through
   ``unnest``). A replayed batch finds its row and writes nothing.
3. ``finish``: one Lua call deletes the snapshot and the batch id, only if the batch id is still
   this batch's, and sets malformed fields aside in ``counts:bad``.

Postgres or Redis down: the step raises, the snapshot stays in Redis, the next pass resumes it.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import time
import uuid
from collections.abc import Awaitable
from typing import TypeVar

import asyncpg

from aggregator import metrics
from linkedge import keys
from linkedge.events import counter_items, parse_counter_field
from linkedge.redisclient import AnyRedis

log = logging.getLogger("linkedge.aggregator")

_MAX_BIGINT = 2**63 - 1
# Far above any real count of one flush window, far below what could overflow a bigint sum: a
# larger value is corrupt input, set aside rather than left to fail the batch on every retry.
_MAX_FIELD_VALUE = 10**12
T = TypeVar("T")


# KEYS: counts, snapshot, batch. ARGV: a new batch id. Returns {id, {field, value, ...}} or nil.
TAKE = """
local id = redis.call('GET', KEYS[3])
if not id then
  if redis.call('EXISTS', KEYS[1]) == 0 then return false end
  redis.call('RENAME', KEYS[1], KEYS[2])
  redis.call('SET', KEYS[3], ARGV[1])
  id = ARGV[1]
end
return {id, redis.call('HGETALL', KEYS[2])}
"""

# KEYS: snapshot, batch, bad. ARGV: batch id, then malformed field/value pairs to set aside.
# Returns 1 when this call finished the batch, 0 when someone else already had.
FINISH = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 0 end
for i = 2, #ARGV, 2 do
  local r = redis.pcall('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])
  if type(r) == 'table' and r.err then redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1]) end
end
redis.call('DEL', KEYS[1], KEYS[2])
return 1
"""

INSERT_BATCH = """
INSERT INTO aggregator_batches (batch_id, shard, fields, clicks) VALUES ($1, $2, $3, $4)
ON CONFLICT (batch_id) DO NOTHING RETURNING batch_id
"""

UPSERT_DAILY = """
INSERT INTO link_daily_clicks AS d (link_id, day, clicks, human_clicks)
SELECT * FROM unnest($1::bigint[], $2::date[], $3::bigint[], $4::bigint[])
ON CONFLICT (link_id, day) DO UPDATE
SET clicks = d.clicks + EXCLUDED.clicks, human_clicks = d.human_clicks + EXCLUDED.human_clicks
"""

UPSERT_TOTALS = """
INSERT INTO link_click_totals AS t (link_id, clicks, human_clicks)
SELECT * FROM unnest($1::bigint[], $2::bigint[], $3::bigint[])
ON CONFLICT (link_id) DO UPDATE
SET clicks = t.clicks + EXCLUDED.clicks, human_clicks = t.human_clicks + EXCLUDED.human_clicks
"""


@dataclasses.dataclass(frozen=True, slots=True)
class Batch:
    shard: int
    batch_id: str
    pairs: list[tuple[bytes, bytes]]  # the snapshot's counters (``events.counter_items``), raw


@dataclasses.dataclass(slots=True)
class Counts:
    """A snapshot summed per (link, day) and per link; ``apply`` sorts them so that concurrent
    upserts take their row locks in one order."""

    daily: dict[tuple[int, datetime.date], list[int]]  # -> [clicks, human_clicks]
    totals: dict[int, list[int]]
    bad: list[tuple[bytes, bytes]]
    clicks: int = 0
    human_clicks: int = 0


@dataclasses.dataclass(frozen=True, slots=True)
class Outcome:
    batch_id: str
    applied: bool  # False: Postgres had it already (a replay)
    finished: bool  # False: another aggregator deleted the snapshot first
    fields: int
    clicks: int
    human_clicks: int
    set_aside: int


def _parse_day(day: str, cache: dict[str, datetime.date]) -> datetime.date:
    found = cache.get(day)
    if found is None:
        found = cache[day] = datetime.date(int(day[:4]), int(day[4:6]), int(day[6:]))
    return found


def fold(pairs: list[tuple[bytes, bytes]]) -> Counts:
    """Sum a snapshot's fields; anything not a well-formed positive counter goes to ``bad``."""
    counts = Counts(daily={}, totals={}, bad=[])
    days: dict[str, datetime.date] = {}
    for field, raw in pairs:
        try:
            link_id, day_text, bot = parse_counter_field(field)
            day = _parse_day(day_text, days)
            value = int(raw)
            if not (0 < link_id <= _MAX_BIGINT and 0 <= value <= _MAX_FIELD_VALUE):
                raise ValueError("out of range")
        except ValueError:  # EventDecodeError, UnicodeDecodeError and int() failures alike
            counts.bad.append((field, raw))
            continue
        human = 0 if bot else value
        row = counts.daily.setdefault((link_id, day), [0, 0])
        row[0] += value
        row[1] += human
        total = counts.totals.setdefault(link_id, [0, 0])
        total[0] += value
        total[1] += human
        counts.clicks += value
        counts.human_clicks += human
    return counts


class Flusher:
    """The three steps above against one Redis and one Postgres pool."""

    def __init__(self, redis: AnyRedis, pool: asyncpg.Pool) -> None:
        self.redis = redis
        self.pool = pool
        self._take = redis.register_script(TAKE)
        self._finish = redis.register_script(FINISH)

    async def take(self, shard: int) -> Batch | None:
        """The shard's unfinished batch, else a new one made of its live counters, else None."""
        found = await self._take(
            keys=[keys.counts(shard), keys.counts_snapshot(shard), keys.counts_batch(shard)],
            args=[uuid.uuid4().hex],
        )
        if not found:
            return None
        batch_id, flat = found
        pairs = counter_items(zip(flat[0::2], flat[1::2], strict=True))
        return Batch(shard=shard, batch_id=batch_id.decode(), pairs=pairs)

    async def apply(self, batch: Batch, counts: Counts) -> bool:
        """Write the batch in one transaction; False when it was already written (a replay)."""
        daily = sorted(counts.daily.items())
        totals = sorted(counts.totals.items())
        async with self.pool.acquire() as conn, conn.transaction():
            inserted = await conn.fetchval(
                INSERT_BATCH, batch.batch_id, batch.shard, len(batch.pairs), counts.clicks
            )
            if inserted is None:
                return False
            if daily:
                await conn.execute(
                    UPSERT_DAILY,
                    [link_id for (link_id, _), _ in daily],
                    [day for (_, day), _ in daily],
                    [c for _, (c, _) in daily],
                    [h for _, (_, h) in daily],
                )
                await conn.execute(
                    UPSERT_TOTALS,
                    [link_id for link_id, _ in totals],
                    [c for _, (c, _) in totals],
                    [h for _, (_, h) in totals],
                )
        return True

    async def finish(self, batch: Batch, bad: list[tuple[bytes, bytes]]) -> bool:
        args: list[bytes | str] = [batch.batch_id]
        for field, value in bad:
            args += [field, value]
        done = await self._finish(
            keys=[
                keys.counts_snapshot(batch.shard),
                keys.counts_batch(batch.shard),
                keys.counts_bad(batch.shard),
            ],
            args=args,
        )
        return bool(done)

    async def flush_shard(self, shard: int) -> Outcome | None:
        """Move one shard's counters (or finish its unfinished batch); None when it had none."""
        started = time.perf_counter()
        batch = await _counting_errors("redis", self.take(shard))
        if batch is None:
            return None
        counts = fold(batch.pairs)
        applied = await _counting_errors("postgres", self.apply(batch, counts))
        finished = await _counting_errors("redis", self.finish(batch, counts.bad))
        outcome = Outcome(
            batch_id=batch.batch_id,
            applied=applied,
            finished=finished,
            fields=len(batch.pairs),
            clicks=counts.clicks,
            human_clicks=counts.human_clicks,
            set_aside=len(counts.bad) if finished else 0,
        )
        _record(shard, outcome, counts, time.perf_counter() - started)
        return outcome


async def _counting_errors(store: str, step: Awaitable[T]) -> T:
    try:
        return await step
    except Exception:
        metrics.ERRORS.labels(store=store).inc()
        raise


def _record(shard: int, outcome: Outcome, counts: Counts, seconds: float) -> None:
    metrics.FLUSH_DURATION.observe(seconds)
    metrics.BATCHES.labels(result="applied" if outcome.applied else "replayed").inc()
    if outcome.applied:
        metrics.CLICKS_MOVED.labels(kind="all").inc(outcome.clicks)
        metrics.CLICKS_MOVED.labels(kind="human").inc(outcome.human_clicks)
    if outcome.set_aside:
        metrics.FIELDS_SET_ASIDE.inc(outcome.set_aside)
        log.warning(
            "set aside %d malformed counter field(s) in %s",
            outcome.set_aside,
            keys.counts_bad(shard),
            extra={
                "shard": shard,
                "batch_id": outcome.batch_id,
                "sample": [f.decode(errors="replace") for f, _ in counts.bad[:5]],
            },
        )
    if not outcome.applied:
        log.debug(
            "replayed batch %s of shard %d: already in Postgres",
            outcome.batch_id,
            shard,
            extra={"shard": shard, "batch_id": outcome.batch_id},
        )
