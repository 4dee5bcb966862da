"""The batch sender: one idempotent script call per batch of clicks, on one shard.

A batch (``edge.spool.Batch``) gets a flush id and a shard when it is made (``new``, ``of``:
shards rotate per batch). ``send`` applies it with ONE call of ``FLUSH_SCRIPT``, which adds ONE
field to the shard's counts hash holding the batch's counters (``events.join_counters``) and ONE
stream entry holding its events (``events.join_entry``): two writes per flush, not one per click
or per counter. The script sets the flush marker ``SET NX`` first and applies nothing when it was
already set, so a batch retried after a lost reply (same flush id, same shard) is a no-op:
counters and stream entries are applied together, once.

While Redis fails, ``ready`` says when to try again (backoff up to ``MAX_BACKOFF_S``); the outage
is logged when it starts and when it ends, and a flush Redis takes ends an episode of drops.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import random
import time
import uuid

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from edge.drops import Drops
from edge.metrics import CLICK_FLUSH_ERRORS, CLICK_FLUSH_EVENTS, CLICKS_RECORDED
from edge.spool import Batch
from linkedge import keys
from linkedge.events import FLUSH_COUNTERS_PREFIX

log = logging.getLogger("edge.clicks")

# KEYS: counts hash, clicks stream, flush marker, then markers of this worker's earlier flushes to
# this shard whose replies it has received (it will never retry those, so their markers have done
# their job; deleting them here keeps Redis from holding a marker per flush for a day: at 20
# flushes a second that was ~1.7 million keys per busy worker). ARGV: marker ttl, the counters as
# lines "<field> <increment>" (``events.join_counters``), the stream entry (the encoded events one
# per line; JSON from orjson has no raw newline), the counts-hash field of this flush
# ("~<flush id>"). Four arguments whatever the batch size: redis-py packs each argument in Python
# (~1 us each). Redis stores the counters as one hash field and the events as one stream entry:
# two writes per flush, not one HINCRBY per counter (the aggregator sums the lines,
# ``events.counter_items``). The shebang makes Redis refuse the whole call up front when it is out
# of memory, instead of failing halfway through.
FLUSH_SCRIPT = """#!lua
if #KEYS > 3 then
  redis.call('DEL', unpack(KEYS, 4))
end
if not redis.call('SET', KEYS[3], '1', 'NX', 'EX', ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], ARGV[4], ARGV[2])
redis.call('XADD', KEYS[2], '*', 'e', ARGV[3])
return 1
"""

FLUSH_COUNTERS_FIELD = FLUSH_COUNTERS_PREFIX.decode() + "%s"  # a flush's field of the counts hash
MAX_BATCH = 5000  # events per script call, whatever CLICK_FLUSH_MAX_EVENTS says
SPENT_MARKERS_PER_CALL = 100  # answered flushes' markers deleted by one script call, at most
SEND_TIMEOUT_S = 5.0  # one script call; a timed-out batch is retried with the same flush id
MAX_BACKOFF_S = 1.0  # between attempts while Redis fails


def flush_args(batch: Batch) -> list[int | bytes | str]:
    """``FLUSH_SCRIPT``'s ARGV for ``batch``."""
    return [
        keys.FLUSH_MARKER_TTL_S,
        batch.counters,
        batch.entry,
        FLUSH_COUNTERS_FIELD % batch.flush_id,
    ]


class BatchSender:
    """Makes batches (flush id, shard) and applies each with one script call."""

    def __init__(self, redis: aioredis.Redis, shards: int, drops: Drops) -> None:
        self._script = redis.register_script(FLUSH_SCRIPT)
        self._shards = shards
        self._shard = random.randrange(shards)
        self._drops = drops
        self._failures = 0  # failed calls in a row
        self._retry_at = 0.0
        # Per shard: markers of flushes whose replies came back, deleted by the next call there.
        self.spent: dict[int, list[str]] = collections.defaultdict(list)

    def new(self, clicks: int, counters: bytes, entry: bytes) -> Batch:
        """A batch of an encoder's taken open batch, with a new flush id on the next shard."""
        return Batch(uuid.uuid4().hex, self._next_shard(), counters, entry, clicks)

    def of(self, counts: dict[str, int], events: list[bytes]) -> Batch:
        """A batch of ``events`` counted in ``counts``, with a new flush id on the next shard."""
        return Batch.of(uuid.uuid4().hex, self._next_shard(), counts, events)

    def _next_shard(self) -> int:
        shard, self._shard = self._shard, (self._shard + 1) % self._shards
        return shard

    @property
    def ready(self) -> bool:
        """Whether to call Redis now (False while backing off after a failure)."""
        return time.monotonic() >= self._retry_at

    async def send(self, batch: Batch, *, from_spool: bool = False) -> bool:
        """Apply one batch; False (keep it for a retry with the same flush id) when Redis fails.

        Once answered, a batch from memory is never sent again, so its marker is spent. A batch
        replayed from a spool file is not: if this worker dies before the file is finished,
        another worker replays the whole file, and the marker is what makes that a no-op.
        """
        shard = batch.shard
        marker = keys.flush_marker(shard, batch.flush_id)
        # Never this batch's own marker, whatever the caller did (an answered batch is not resent).
        spent = [key for key in self.spent[shard][:SPENT_MARKERS_PER_CALL] if key != marker]
        try:
            async with asyncio.timeout(SEND_TIMEOUT_S):
                applied = await self._script(
                    keys=[keys.counts(shard), keys.clicks_stream(shard), marker, *spent],
                    args=flush_args(batch),
                )
        except (RedisError, OSError, TimeoutError) as exc:
            CLICK_FLUSH_ERRORS.inc()
            if not self._failures:
                log.warning(
                    "redis unavailable for clicks; holding them in memory, then the spool",
                    extra={"error": repr(exc)},
                )
            self._failures += 1
            self._retry_at = time.monotonic() + min(MAX_BACKOFF_S, 0.05 * 2 ** (self._failures - 1))
            return False
        if self._failures:
            log.info("redis reachable again for clicks", extra={"failed_attempts": self._failures})
            self._failures = 0
        self._retry_at = 0.0
        self._drops.end_episode()
        del self.spent[shard][: min(len(self.spent[shard]), SPENT_MARKERS_PER_CALL)]
        if not from_spool:
            self.spent[shard].append(marker)
        if applied:
            CLICKS_RECORDED.inc(batch.clicks)
            CLICK_FLUSH_EVENTS.observe(batch.clicks)
        return True
