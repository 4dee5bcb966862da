"""The synchronous click recorder (``CLICK_FLUSH_INTERVAL_MS=0``): no answer before Redis has it.

The redirect handler awaits ``record_now``, which returns once the click is in Redis, or, when
Redis fails, held in the backlog (memory, then spool) for the flush loop to retry: a hard kill of
the worker then loses no answered click. Calls made in the same event-loop iteration share one
script call. The backlog, the batch sender and the flush loop are those of an asynchronous
recorder (``edge.recorder``) this one wraps, which also takes the calls of the handoff protocol
(``record``, ``add``, ...) should anything make them.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis

from edge.clickencoder import Counts, Encoder
from edge.recorder import CLOSE_WAIT_S, ClickRecorder
from edge.records import LinkRecord
from edge.spool import Batch
from linkedge.settings import Settings

log = logging.getLogger("edge.clicks")

# A click waiting for record_now's shared flush: time, link, ASGI scope, Location served.
Record = tuple[float, LinkRecord, Mapping[str, Any], str]


class SyncRecorder:
    """``record_now`` for every click, over an asynchronous recorder's backlog and sender."""

    sync = True  # the redirect answers once its click is in Redis (or safely held)

    def __init__(self, settings: Settings, redis: aioredis.Redis) -> None:
        self.buffered = ClickRecorder(settings, redis)
        self.add = self.buffered.add
        self._group: tuple[list[Record], asyncio.Future[None]] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def encoder(self) -> Encoder:
        return self.buffered.encoder

    def record(self, link: LinkRecord, scope: Mapping[str, Any], location: str) -> None:
        """Into the open batch, as the asynchronous recorder does (the flush loop sends it)."""
        self.buffered.record(link, scope, location)

    def batch_full(self) -> None:
        self.buffered.batch_full()

    def add_failed(self, link: LinkRecord, exc: BaseException | None = None) -> None:
        self.buffered.add_failed(link, exc)

    async def record_now(self, link: LinkRecord, scope: Mapping[str, Any], location: str) -> None:
        """Record one click and return once it is in Redis, or held in memory/spool. Never raises.

        Calls made in the same event-loop iteration share one script call.
        """
        group = self._group
        if group is None:
            group = self._group = ([], asyncio.get_running_loop().create_future())
            asyncio.get_running_loop().call_soon(self._start_flush)
        group[0].append((time.time(), link, scope, location))
        await asyncio.shield(group[1])  # a cancelled request does not cancel the flush

    def _start_flush(self) -> None:
        group, self._group = self._group, None
        if group is not None:
            task = asyncio.create_task(self._flush(*group))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _flush(self, records: list[Record], done: asyncio.Future[None]) -> None:
        buffered = self.buffered
        batches = collections.deque(self.build(records))
        sending = not buffered.closed and buffered.sender.ready
        try:
            while batches:
                if sending:
                    sending = await buffered.sender.send(batches[0])
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
        if self.buffered.closed:
            self.buffered.backlog.spool_out([batch])
        else:
            self.buffered.backlog.hold([batch])

    def build(self, records: list[Record]) -> list[Batch]:
        """``records`` encoded into batches of at most the batch size, each with its flush id."""
        size = self.buffered.batch_size
        batches = []
        for start in range(0, len(records), size):
            counts: Counts = {}
            events: list[bytes] = []
            self._fill(records[start : start + size], counts, events)
            if events:
                batches.append(self.buffered.sender.of(counts, events))
        return batches

    def _fill(self, records: list[Record], counts: Counts, events: list[bytes]) -> None:
        """The encoder's ``add`` for each of ``records``; one that fails is counted and logged."""
        for record in records:
            try:
                self.encoder.add(*record, counts, events)
            except Exception:  # noqa: BLE001
                self.add_failed(record[1])

    async def start(self) -> None:
        await self.buffered.start()

    async def close(self) -> None:
        """Let the flushes under way finish, then close the asynchronous recorder (which sends
        or spools what is held); a click recorded after that goes straight to the spool."""
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=CLOSE_WAIT_S)
        await self.buffered.close()
