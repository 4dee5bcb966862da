"""The asynchronous click recorder: the handoff from the redirect, and the flush loop.

``record`` encodes the click's event (client IP, headers, UTM parameters, bot reason, from the
ASGI scope) into the open batch and returns; it does no I/O and never raises. Encoding at once,
while the request's scope is still in the CPU's caches, costs less than keeping scopes for the
flush task and encoding them in bursts, and keeps those bursts out of the tail latency
(BENCHMARKS.md). The encoding and the open batch are ``edge.clickencoder``'s, in C where it was
built: the encoder reads the clock, writes the event as the next line of the batch's stream entry
(one growing buffer, not an object per click) and counts it. The redirect handler and the C hot
path call the encoder's ``record`` themselves (``add``), then ``batch_full`` when it says so, or
``add_failed`` when it raises: no Python frame in between.

Every ``CLICK_FLUSH_INTERVAL_MS`` (default 10 ms), or as soon as ``CLICK_FLUSH_MAX_EVENTS`` are
waiting, the open batch is sealed into the backlog (``edge.backlog``) and the flush loop sends what
the backlog holds, one script call per batch (``edge.sender``), then replays spool files. 10 ms
bounds both what a hard kill of a worker can lose and how late a click reaches Redis; at most 100
calls a second per busy worker is little load for Redis (an idle worker makes none), and small,
evenly spread batches cost the worker less than large ones (BENCHMARKS.md). ``close()`` flushes
everything and replays the spool, spooling what Redis does not take.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Any

import redis.asyncio as aioredis

from edge.backlog import Backlog
from edge.clickencoder import Encoder, new_encoder, reseed
from edge.clickinfo import trusted_networks
from edge.drops import Drops
from edge.metrics import CLICKS_PENDING
from edge.records import LinkRecord
from edge.sender import MAX_BATCH, BatchSender
from edge.spool import Batch
from linkedge import bots
from linkedge.settings import Settings

log = logging.getLogger("edge.clicks")

CLOSE_WAIT_S = 8.0  # for the flush task to finish its current call on close
CLOSE_FLUSH_S = 5.0  # retrying Redis on close before spooling the rest


class ClickRecorder:
    """Per-worker open batch and its flush loop (see the module docstring)."""

    sync = False  # the redirect answers before its click is in Redis

    def __init__(self, settings: Settings, redis: aioredis.Redis) -> None:
        self._encoder = new_encoder(
            trusted_networks(settings.trusted_proxies), settings.click_encoder
        )
        self.batch_size = min(settings.click_flush_max_events, MAX_BATCH)
        self._encoder.limit = self.batch_size
        # The redirect handler's per-click call (see ``record``): the encoder's own, in C where it
        # was built, with no Python frame around it.
        self.add = self._encoder.record
        self._interval = (settings.click_flush_interval_ms or 10) / 1000
        self.drops = Drops(settings.click_spool_dir)
        self.sender = BatchSender(redis, settings.click_shards, self.drops)
        self.backlog = Backlog(settings, self.drops)
        self._build_logged_at = float("-inf")
        self._take_failing = False  # the last take() of the open batch failed (logged once)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self.closed = False

    # ---- the handoff from the redirect -------------------------------------------------------
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

    async def record_now(self, link: LinkRecord, scope: Mapping[str, Any], location: str) -> None:
        """``record``: this recorder's promise is the flush window, not Redis before answering."""
        self.record(link, scope, location)

    @property
    def encoder(self) -> Encoder:
        return self._encoder

    def add_failed(self, link: LinkRecord, exc: BaseException | None = None) -> None:
        """``add`` raised (``exc``, or the exception being handled): the click is counted as
        dropped and logged (at most once a minute: this is the request path)."""
        self.drops.count(1, "invalid")
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
            if self.closed:  # a request that outlived shutdown: straight to the spool
                self.backlog.spool_out(self._take_open())
            else:
                self.seal()
                self._wake.set()
        except Exception:  # noqa: BLE001
            self.drops.count(1, "error")

    def seal(self) -> None:
        """Hold the open batch for sending; new clicks go into a new one."""
        self.backlog.hold(self._take_open())

    def _take_open(self) -> list[Batch]:
        clicks = self._encoder.pending
        try:
            taken = self._encoder.take()
        except Exception:
            # Both encoders leave the open batch as it was when take() fails (MemoryError): a
            # later take gets it. After close() none will, so then it is dropped, counted.
            if self.closed:
                log.exception("open click batch could not be taken at close")
                self.drops.count(clicks, "error")
            elif not self._take_failing:
                log.exception("open click batch could not be taken; kept open for the next flush")
            self._take_failing = True
            return []
        self._take_failing = False
        if taken is None:
            return []
        return [self.sender.new(*taken)]

    # ---- the flush loop ----------------------------------------------------------------------
    async def start(self) -> None:
        reseed(self._encoder)  # two workers never share an id base, whatever started them
        bots.warm()
        self._task = asyncio.create_task(self._run(), name="click-flush")

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
                await self.tick()
            except Exception:  # keep flushing whatever went wrong once
                log.exception("click flush tick failed")

    async def tick(self) -> None:
        """Seal the open batch, send what the backlog holds, then replay a little of the spool."""
        self.seal()
        if self.sender.ready:
            sent_all = await self.backlog.send(self.sender, lambda: self._stopping)
            if sent_all and not self._stopping:
                await self.backlog.replay(self.sender)
        CLICKS_PENDING.set(self._encoder.pending + self.backlog.events)

    async def close(self) -> None:
        """Flush everything to Redis, then replay the spool; spool what Redis does not take
        within a few seconds."""
        if self.closed:
            return
        self._stopping = True
        if self._task is not None:
            self._wake.set()
            try:
                await asyncio.wait_for(self._task, CLOSE_WAIT_S)
            except TimeoutError:
                log.warning("click flush task did not stop in time; cancelled")
        self.closed = True
        self._encoder.limit = 0  # every later click is full: batch_full spools it
        self.seal()
        left = await self.backlog.close(self.sender, time.monotonic() + CLOSE_FLUSH_S)
        CLICKS_PENDING.set(0)
        if left:
            log.warning("clicks left for the spool at shutdown", extra={"clicks": left})
