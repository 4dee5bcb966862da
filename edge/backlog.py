"""The backlog: sealed batches not yet in Redis, in memory up to a bound, then in the spool.

Batches wait here, oldest first, until the batch sender gets them into Redis. Memory is bounded
twice: ``CLICK_MEMORY_LIMIT`` clicks and ``CLICK_MEMORY_LIMIT_BYTES`` bytes (a batch's counters
and entry, ``Batch.size``: a visitor decides how long a user agent or referer is, so the click
count alone does not bound the bytes). Whenever batches are added past either bound, the oldest
go to the local spool (``edge.spool``) until both hold again; the batch being sent stays, counted.
What fits neither memory nor spool is dropped (``edge.drops``).

Spool files are replayed a few batches at a time while Redis answers, files of dead workers
included (``Spool.claim``); a replayed batch keeps its flush id, so a replay is as idempotent as
the first attempt.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Callable, Iterator

from edge.drops import Drops
from edge.metrics import CLICKS_SPOOLED
from edge.sender import BatchSender
from edge.spool import Batch, Claimed, CorruptLine, Spool
from linkedge.settings import Settings

log = logging.getLogger("edge.clicks")

SPOOL_CHECK_S = 1.0  # how often an idle worker looks for spool files to replay
REPLAY_BATCHES_PER_TICK = 20  # new clicks keep flowing while a spool file replays
CLOSE_TRIES = 3  # failed sends at close before the rest is spooled
CLOSE_RETRY_S = 0.2


class Backlog:
    """This worker's batches waiting for Redis, and its door to the spool."""

    def __init__(self, settings: Settings, drops: Drops) -> None:
        self.max_events = settings.click_memory_limit
        self.max_bytes = settings.click_memory_limit_bytes
        self.spool = Spool(settings.click_spool_dir, settings.click_spool_max_bytes)
        self._drops = drops
        self._batches: collections.deque[Batch] = collections.deque()
        self.events = 0  # clicks held, the batch being sent included
        self.bytes = 0  # ... and their bytes (``Batch.size``)
        self._spool_check_at = 0.0
        self._claimed: Claimed | None = None
        self._replay: Iterator[Batch | CorruptLine] = iter(())
        self._replay_head: Batch | None = None

    def __len__(self) -> int:
        """Batches held and not being sent."""
        return len(self._batches)

    def __iter__(self) -> Iterator[Batch]:
        return iter(self._batches)

    def hold(self, batches: list[Batch]) -> None:
        """Keep ``batches`` for sending; spool the oldest held ones beyond the memory bound."""
        for batch in batches:
            self._batches.append(batch)
            self.events += batch.clicks
            self.bytes += batch.size
        self.bound()

    def bound(self) -> None:
        """Spool the oldest held batches until the memory bound holds (in clicks and in bytes)."""
        if self.events <= self.max_events and self.bytes <= self.max_bytes:
            return
        out: list[Batch] = []
        while self._batches and (self.events > self.max_events or self.bytes > self.max_bytes):
            batch = self._batches.popleft()
            self._forget(batch)
            out.append(batch)
        self.spool_out(out)

    def _forget(self, batch: Batch) -> None:
        self.events -= batch.clicks
        self.bytes -= batch.size

    async def send(self, sender: BatchSender, stop: Callable[[], bool] = lambda: False) -> bool:
        """Send held batches, oldest first, until one fails or ``stop()``; True when none is
        left."""
        while self._batches and not stop():
            if not await self._send_oldest(sender):
                return False
        return not self._batches

    async def _send_oldest(self, sender: BatchSender) -> bool:
        # Out of the queue while it is sent (never spooled under the sender's feet), still
        # counted; first in line again unless Redis took it.
        batch = self._batches.popleft()
        try:
            sent = await sender.send(batch)
        except BaseException:
            self._batches.appendleft(batch)
            raise
        if sent:
            self._forget(batch)
        else:
            self._batches.appendleft(batch)
        return sent

    def spool_out(self, batches: list[Batch]) -> None:
        """Write ``batches`` to the spool; count what does not fit as dropped."""
        reason = "spool_full"
        try:
            written = self.spool.write(batches)
        except OSError as exc:
            log.error(
                "click spool write failed",
                extra={"error": repr(exc), "dir": str(self.spool.directory)},
            )
            written, reason = 0, "spool_error"
        if written:
            CLICKS_SPOOLED.inc(sum(batch.clicks for batch in batches[:written]))
            self._spool_check_at = 0.0
        lost = sum(batch.clicks for batch in batches[written:])
        if lost:
            self._drops.count(lost, reason)

    async def replay(self, sender: BatchSender) -> bool:
        """Replay a few spooled batches; False when nothing more can be replayed right now."""
        if self._claimed is None:
            now = time.monotonic()
            if now < self._spool_check_at:
                return False
            self._spool_check_at = now + SPOOL_CHECK_S
            if not self.spool.has_files():
                return False
            self.spool.release()  # our own file becomes claimable too
            self._claimed = self.spool.claim()
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
                self._drops.count(item.events, "spool_corrupt")
                continue
            self._replay_head = item
            if not await sender.send(item, from_spool=True):
                return False
            self._replay_head = None
        return True

    async def close(self, sender: BatchSender, deadline: float) -> int:
        """Send what is held, then, if Redis took it all, replay the spool, until ``deadline``;
        spool what is left and give up this worker's files. Returns the clicks left for the
        spool."""
        failures = 0
        while self._batches and failures < CLOSE_TRIES and time.monotonic() < deadline:
            if not await self._send_oldest(sender):
                failures += 1
                await asyncio.sleep(CLOSE_RETRY_S)
        if not self._batches:  # Redis is taking clicks: empty the spool too, within the deadline
            self._spool_check_at = 0.0
            while time.monotonic() < deadline and await self.replay(sender):
                pass
        left = self.events
        if self._batches:
            self.spool_out(list(self._batches))
            self._batches.clear()
            self.events = self.bytes = 0
        if self._claimed is not None:
            self._claimed.release()
            self._claimed = None
        self.spool.release()
        return left
