"""Click recording: an encoded event per redirect in memory, one idempotent Redis call per flush.

``record`` encodes the click's event (client IP, headers, UTM parameters, bot reason, from the
ASGI scope) into the open batch and returns; it does no I/O and never raises. Encoding at once,
while the request's scope is still in the CPU's caches, costs less than keeping scopes for the
flush task and encoding them in bursts, and keeps those bursts out of the tail latency
(BENCHMARKS.md). The encoding and the open batch are ``edge.clickencoder``'s, in C where it was
built: the encoder reads the clock, writes the event as the next line of the batch's stream entry
(one growing buffer, not an object per click) and counts it; sealing takes the entry and the
counters' lines as they are sent. The redirect handler calls the encoder's ``record`` itself
(``ClickRecorder.add``), with no Python frame in between.

Every ``CLICK_FLUSH_INTERVAL_MS`` (default 10 ms), or as soon as ``CLICK_FLUSH_MAX_EVENTS`` are
waiting, the task applies the batch (its events and counter increments) with ONE script call on
ONE shard (shards rotate per flush), which adds ONE field to the shard's counts hash holding the
batch's counters (``events.join_counters``) and ONE stream entry holding its events
(``events.join_entry``): two writes per flush, not one per click or per counter. 10 ms bounds
both what a hard kill of a worker can lose and how late a click reaches Redis; at most 100 calls a
second per busy worker is little load for Redis (an idle worker makes none), and small, evenly
spread batches cost the worker less than large ones (BENCHMARKS.md: 0.74 -> 0.79 of bare Granian,
p99 4.2 -> 3.4 ms). The script sets the flush marker ``SET NX`` first and applies nothing when it was
already set, so a batch retried after a lost reply (same flush id, same shard) is a no-op: counters
and stream entries are applied together, once.

Redis unavailable: built batches wait in memory (``CLICK_MEMORY_LIMIT`` events), then go to the
local spool (``edge.spool``), and are replayed when Redis answers again, spool files of dead workers
included. Only when memory and spool are both full are clicks dropped: counted in
``linkedge_clicks_dropped_total{reason}`` and logged once per episode. ``close()`` flushes
everything and replays the spool, spooling what Redis does not take. ``CLICK_FLUSH_INTERVAL_MS=0`` makes the redirect
handler call ``record_now``, which answers once the click is in Redis (or safely held).
"""

from __future__ import annotations

import asyncio
import collections
import gc
import logging
import random
import time
import uuid
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from edge.clickencoder import Counts, Encoder, new_encoder, reseed
from edge.clickinfo import trusted_networks
from edge.metrics import (
    CLICK_FLUSH_ERRORS,
    CLICK_FLUSH_EVENTS,
    CLICKS_DROPPED,
    CLICKS_PENDING,
    CLICKS_RECORDED,
    CLICKS_SPOOLED,
)
from edge.records import LinkRecord
from edge.spool import Batch, Claimed, CorruptLine, Spool
from linkedge import bots, keys
from linkedge.events import FLUSH_COUNTERS_PREFIX
from linkedge.settings import Settings

log = logging.getLogger(__name__)

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
SPOOL_CHECK_S = 1.0  # how often an idle worker looks for spool files to replay
REPLAY_BATCHES_PER_TICK = 20  # new clicks keep flowing while a spool file replays
CLOSE_WAIT_S = 8.0  # for the flush task to finish its current call on close
CLOSE_FLUSH_S = 5.0  # retrying Redis on close before spooling the rest

# The worker's garbage collector thresholds (see settle_gc); CPython's defaults are (700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 10)

# A click waiting for record_now's shared flush: time, link, ASGI scope, Location served.
Record = tuple[float, LinkRecord, Mapping[str, Any], str]


class ClickRecorder:
    """Per-worker click buffer and its flush task (see the module docstring)."""

    def __init__(self, settings: Settings, redis: aioredis.Redis) -> None:
        self.settings = settings
        self.sync = settings.click_flush_interval_ms == 0
        self._script = redis.register_script(FLUSH_SCRIPT)
        self._encoder = new_encoder(
            trusted_networks(settings.trusted_proxies), settings.click_encoder
        )
        self._batch_size = min(settings.click_flush_max_events, MAX_BATCH)
        self._encoder.limit = self._batch_size
        # The redirect handler's per-click call (see ``record``): the encoder's own, in C where it
        # was built, with no Python frame around it.
        self.add = self._encoder.record
        self._interval = (settings.click_flush_interval_ms or 10) / 1000
        self._shard = random.randrange(settings.click_shards)
        self._spool = Spool(settings.click_spool_dir, settings.click_spool_max_bytes)
        self._build_logged_at = float("-inf")
        self._sync_group: tuple[list[Record], asyncio.Future[None]] | None = None
        self._sync_tasks: set[asyncio.Task[None]] = set()
        self._batches: collections.deque[Batch] = collections.deque()
        self._batched_events = 0
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self._failures = 0
        self._retry_at = 0.0
        self._spool_check_at = 0.0
        self._claimed: Claimed | None = None
        self._replay: Any = None  # iterator over the claimed file's batches
        self._replay_head: Batch | None = None
        self._dropping = 0  # clicks dropped in the current episode; 0 when none
        self._take_failing = False  # the last take() of the open batch failed (logged once)
        # Per shard: markers of flushes whose replies came back, deleted by the next call there.
        self._spent: dict[int, list[str]] = collections.defaultdict(list)

    # ---- the request side ------------------------------------------------------------------
    def record(self, link: LinkRecord, scope: Mapping[str, Any], location: str) -> None:
        """Encode one served redirect into the open batch. No I/O, never raises.

        The redirect handler does the same inline: ``add``, then ``batch_full`` when it says so,
        or ``add_failed`` when it raises.
        """
        try:
            full = self.add(link, scope, location)
        except Exception:  # noqa: BLE001 -- never fail a redirect for a click; counted
            self.add_failed(link)
            return
        if full:
            self.batch_full()

    @property
    def encoder(self) -> Encoder:
        return self._encoder

    def add_failed(self, link: LinkRecord, exc: BaseException | None = None) -> None:
        """``add`` raised (``exc``, or the exception being handled): the click is counted as
        dropped and logged (at most once a minute: this is the request path)."""
        self._drop(1, "invalid")
        now = time.monotonic()
        if now - self._build_logged_at >= 60:
            self._build_logged_at = now
            log.error(
                "click event could not be built",
                exc_info=exc if exc is not None else True,
                extra={"code": link.code},
            )

    def batch_full(self) -> None:
        """``add`` said the open batch is full: seal it for the flush task. Never raises."""
        try:
            if self._closed:  # a request that outlived shutdown: straight to the spool
                self._spool_out(self._take_open())
            else:
                self._seal()
                self._wake.set()
        except Exception:  # noqa: BLE001
            self._drop(1, "error")

    async def record_now(self, link: LinkRecord, scope: Mapping[str, Any], location: str) -> None:
        """Record one click and return once it is in Redis, or held in memory/spool. Never raises.

        Calls made in the same event-loop iteration share one script call.
        """
        group = self._sync_group
        if group is None:
            group = self._sync_group = ([], asyncio.get_running_loop().create_future())
            asyncio.get_running_loop().call_soon(self._start_sync_flush)
        group[0].append((time.time(), link, scope, location))
        await asyncio.shield(group[1])  # a cancelled request does not cancel the flush

    def _start_sync_flush(self) -> None:
        group, self._sync_group = self._sync_group, None
        if group is not None:
            task = asyncio.create_task(self._flush_sync(*group))
            self._sync_tasks.add(task)
            task.add_done_callback(self._sync_tasks.discard)

    async def _flush_sync(self, records: list[Record], done: asyncio.Future[None]) -> None:
        batches = collections.deque(self._build(records))
        sending = not self._closed and time.monotonic() >= self._retry_at
        try:
            while batches:
                if sending:
                    sending = await self._send(batches[0])
                if not sending:
                    self._keep(batches[0])
                batches.popleft()
        except Exception:
            log.exception("click flush failed unexpectedly")
        finally:  # whatever was not sent (cancelled, failed) is kept for a retry, same flush id
            for batch in batches:
                self._keep(batch)
            if not done.done():
                done.set_result(None)

    def _keep(self, batch: Batch) -> None:
        if self._closed:
            self._spool_out([batch])
        else:
            self._hold([batch])

    # ---- lifecycle ---------------------------------------------------------------------------
    async def start(self) -> None:
        settle_gc()
        reseed(self._encoder)  # two workers never share an id base, whatever started them
        bots.warm()
        self._task = asyncio.create_task(self._run(), name="click-flush")

    async def close(self) -> None:
        """Flush everything to Redis, then replay the spool; spool what Redis does not take
        within a few seconds."""
        if self._closed:
            return
        self._stopping = True
        if self._sync_tasks:
            await asyncio.wait(self._sync_tasks, timeout=CLOSE_WAIT_S)
        if self._task is not None:
            self._wake.set()
            try:
                await asyncio.wait_for(self._task, CLOSE_WAIT_S)
            except TimeoutError:
                log.warning("click flush task did not stop in time; cancelled")
        self._closed = True
        self._encoder.limit = 0  # every later click is full: batch_full spools it
        self._seal()
        deadline = time.monotonic() + CLOSE_FLUSH_S
        failures = 0
        while self._batches and failures < 3 and time.monotonic() < deadline:
            if await self._send(self._batches[0]):
                self._batched_events -= self._batches.popleft().clicks
            else:
                failures += 1
                await asyncio.sleep(0.2)
        if not self._batches:  # Redis is taking clicks: empty the spool too, within the deadline
            self._spool_check_at = 0.0
            while time.monotonic() < deadline and await self._replay_spool():
                pass
        left = self._batched_events
        if self._batches:
            self._spool_out(list(self._batches))
            self._batches.clear()
            self._batched_events = 0
        if self._claimed is not None:
            self._claimed.release()
            self._claimed = None
        self._spool.release()
        CLICKS_PENDING.set(0)
        if left:
            log.warning("clicks left for the spool at shutdown", extra={"clicks": left})

    # ---- the flush task ----------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._stopping:
            # A timer handle, not wait_for: that makes a task per tick, 100 times a second.
            timer = loop.call_later(self._interval, self._wake.set)
            await self._wake.wait()
            timer.cancel()
            self._wake.clear()
            if self._stopping:
                return
            try:
                await self._tick()
            except Exception:  # keep flushing whatever went wrong once
                log.exception("click flush tick failed")

    async def _tick(self) -> None:
        self._seal()
        self._limit_memory()
        if time.monotonic() >= self._retry_at:
            while self._batches and not self._stopping:
                if not await self._send(self._batches[0]):
                    break
                self._batched_events -= self._batches.popleft().clicks
            else:
                if not self._stopping:
                    await self._replay_spool()
        CLICKS_PENDING.set(self._encoder.pending + self._batched_events)

    def _seal(self) -> None:
        """Hold the open batch for sending; new clicks go into a new one."""
        self._hold(self._take_open())

    def _take_open(self) -> list[Batch]:
        clicks = self._encoder.pending
        try:
            taken = self._encoder.take()
        except Exception:
            # Both encoders leave the open batch as it was when take() fails (MemoryError): a
            # later take gets it. After close() none will, so then it is dropped, counted.
            if self._closed:
                log.exception("open click batch could not be taken at close")
                self._drop(clicks, "error")
            elif not self._take_failing:
                log.exception("open click batch could not be taken; kept open for the next flush")
            self._take_failing = True
            return []
        self._take_failing = False
        if taken is None:
            return []
        clicks, counters, entry = taken
        return [Batch(uuid.uuid4().hex, self._next_shard(), counters, entry, clicks)]

    def _hold(self, batches: list[Batch]) -> None:
        self._batches.extend(batches)
        self._batched_events += sum(batch.clicks for batch in batches)

    def _build(self, records: list[Record]) -> list[Batch]:
        batches = []
        for start in range(0, len(records), self._batch_size):
            counts: Counts = {}
            events: list[bytes] = []
            self._fill(records[start : start + self._batch_size], counts, events)
            if events:
                batches.append(Batch.of(uuid.uuid4().hex, self._next_shard(), counts, events))
        return batches

    def _next_shard(self) -> int:
        shard, self._shard = self._shard, (self._shard + 1) % self.settings.click_shards
        return shard

    def _fill(self, records: list[Record], counts: Counts, events: list[bytes]) -> None:
        """``add`` for each of ``records``; a click that cannot be encoded is counted and logged."""
        for record in records:
            try:
                self._encoder.add(*record, counts, events)
            except Exception:  # noqa: BLE001
                self.add_failed(record[1])

    async def _send(self, batch: Batch, *, from_spool: bool = False) -> bool:
        """Apply one batch; False (batch kept for a retry with the same flush id) when Redis fails.

        Once answered, a batch from memory is never sent again, so its marker is spent. A batch
        replayed from a spool file is not: if this worker dies before the file is finished,
        another worker replays the whole file, and the marker is what makes that a no-op.
        """
        shard = batch.shard
        marker = keys.flush_marker(shard, batch.flush_id)
        # Never this batch's own marker, whatever the caller did (an answered batch is not resent).
        spent = [key for key in self._spent[shard][:SPENT_MARKERS_PER_CALL] if key != marker]
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
        self._end_drop_episode()
        del self._spent[shard][: min(len(self._spent[shard]), SPENT_MARKERS_PER_CALL)]
        if not from_spool:
            self._spent[shard].append(marker)
        if applied:
            CLICKS_RECORDED.inc(batch.clicks)
            CLICK_FLUSH_EVENTS.observe(batch.clicks)
        return True

    # ---- memory bound, spool and replay --------------------------------------------------------
    def _limit_memory(self) -> None:
        excess = self._batched_events - self.settings.click_memory_limit
        if excess <= 0:
            return
        out: list[Batch] = []
        while self._batches and excess > 0:
            batch = self._batches.popleft()
            self._batched_events -= batch.clicks
            excess -= batch.clicks
            out.append(batch)
        self._spool_out(out)

    def _spool_out(self, batches: list[Batch]) -> None:
        reason = "spool_full"
        try:
            written = self._spool.write(batches)
        except OSError as exc:
            log.error(
                "click spool write failed",
                extra={"error": repr(exc), "dir": str(self._spool.directory)},
            )
            written, reason = 0, "spool_error"
        if written:
            CLICKS_SPOOLED.inc(sum(batch.clicks for batch in batches[:written]))
            self._spool_check_at = 0.0
        lost = sum(batch.clicks for batch in batches[written:])
        if lost:
            self._drop(lost, reason)

    async def _replay_spool(self) -> bool:
        """Replay a few spooled batches; False when nothing more can be replayed right now."""
        if self._claimed is None:
            now = time.monotonic()
            if now < self._spool_check_at:
                return False
            self._spool_check_at = now + SPOOL_CHECK_S
            if not self._spool.has_files():
                return False
            self._spool.release()  # our own file becomes claimable too
            self._claimed = self._spool.claim()
            if self._claimed is None:
                return False
            log.info("replaying click spool file", extra={"path": str(self._claimed.path)})
            self._replay = self._claimed.batches()
            self._replay_head = None
        for _ in range(REPLAY_BATCHES_PER_TICK):
            item = self._replay_head or next(self._replay, None)
            if item is None:
                self._claimed.finish()
                self._claimed = None
                self._spool_check_at = 0.0
                return True
            if isinstance(item, CorruptLine):
                log.error("unreadable click spool line", extra={"clicks": item.events})
                self._drop(item.events, "spool_corrupt")
                continue
            self._replay_head = item
            if not await self._send(item, from_spool=True):
                return False
            self._replay_head = None
        return True

    def _drop(self, clicks: int, reason: str) -> None:
        CLICKS_DROPPED.labels(reason=reason).inc(clicks)
        if not self._dropping:
            log.warning(
                "dropping clicks (memory and spool full, or unreadable)",
                extra={"reason": reason, "spool_dir": str(self._spool.directory)},
            )
        self._dropping += clicks

    def _end_drop_episode(self) -> None:
        if self._dropping:
            log.warning("clicks dropped in this episode", extra={"clicks": self._dropping})
            self._dropping = 0


def flush_args(batch: Batch) -> list[Any]:
    """``FLUSH_SCRIPT``'s ARGV for ``batch``."""
    return [
        keys.FLUSH_MARKER_TTL_S,
        batch.counters,
        batch.entry,
        FLUSH_COUNTERS_FIELD % batch.flush_id,
    ]


_gc_settled = False


def settle_gc() -> None:
    """Set up the worker's garbage collector for a recorder; once per process, after start-up.

    With CPython's default thresholds a young collection runs every 700 allocations and promotes
    whatever is alive at that moment: requests in flight, the open batch's counter keys, links
    entering the cache. Under load the promotions set off a full collection about every second,
    walking every object of the worker (~120k with 10k links cached): 70-130 ms with the loop
    stopped, the hot path's p99 (measured when the recorder still held every request's scope until
    the flush, BENCHMARKS.md; it now keeps only bytes and counter keys, so less survives, but the
    link cache's objects remain). ``gc.freeze()`` takes what start-up built out of every later
    collection, and a 50,000-allocation young threshold lets short-lived objects die before a
    collection sees them. Cyclic garbage is still collected, in fewer, larger young collections.
    """
    global _gc_settled
    if _gc_settled:
        return
    _gc_settled = True
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
