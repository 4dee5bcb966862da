"""The loop every background process runs: the aggregator and analytics share this shape.

After arq's worker and uvicorn's server:

- a drift-corrected poll: a pass starts every ``interval`` seconds however long the last one took
  (a pass that reports more work waiting is followed at once by the next);
- SIGTERM and SIGINT only set a flag; the pass in progress runs to its end, the loop then stops;
- a failed pass (a store unavailable) is retried with exponential backoff; the outage is logged
  once when it starts and once when it ends, not once per retry;
- a bounded drain: ``drain()`` (the last flush) gets ``drain_timeout`` seconds;
- one summary log line on the way out (``Worker.summary()`` as its fields).

A worker implements ``Worker``; ``run_worker`` does the rest and returns the exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import signal
import time
from collections.abc import AsyncIterator
from typing import Any, Protocol

log = logging.getLogger("linkedge.worker")


class Worker(Protocol):
    name: str

    async def start(self) -> None:
        """Open what the worker needs that cannot wait (a listening port). Stores may be down."""

    async def tick(self) -> bool:
        """One pass. Return True when more work is waiting now (poll again without sleeping).

        Raise when a store is unavailable: the loop backs off and calls ``tick`` again.
        """

    async def drain(self) -> None:
        """The last flush after a stop was asked for; cancelled after ``drain_timeout``."""

    async def close(self) -> None:
        """Release connections and servers; never raises."""

    def summary(self) -> dict[str, Any]:
        """Fields of the one line logged on exit (totals since start)."""


class Backoff:
    """Exponential backoff with a cap: 0.1 s, 0.2 s, ... up to ``cap``; ``reset()`` on success.

    Each delay is jittered into its upper half so that several processes retrying a store that
    comes back do not all knock at the same instant.
    """

    def __init__(self, first: float = 0.1, cap: float = 10.0) -> None:
        self.first = first
        self.cap = cap
        self._next = first

    def next(self) -> float:
        delay = self._next
        self._next = min(self.cap, self._next * 2)
        return random.uniform(delay / 2, delay)

    def reset(self) -> None:
        self._next = self.first


async def poll(interval: float, stop: asyncio.Event) -> AsyncIterator[None]:
    """Yield every ``interval`` seconds (minus the time the caller spent) until ``stop`` is set."""
    loop = asyncio.get_running_loop()
    while not stop.is_set():
        started = loop.time()
        yield
        await wait_or_stop(stop, interval - (loop.time() - started))


async def wait_or_stop(stop: asyncio.Event, delay: float) -> None:
    """Sleep ``delay`` seconds, or less if ``stop`` is set meanwhile."""
    if delay <= 0 or stop.is_set():
        return
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), delay)


def install_stop_handlers(stop: asyncio.Event) -> None:
    """SIGTERM and SIGINT set ``stop``; nothing else happens in the handler."""
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)


class _Outage:
    """Logs a run of failed passes at its start (again for each new cause) and at its end."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.since: float | None = None
        self.causes: set[str] = set()
        self.failures = 0

    def failed(self, exc: Exception) -> None:
        self.failures += 1
        cause = type(exc).__name__
        if cause in self.causes:
            return
        log.warning(
            "%s: pass failed, retrying with backoff: %s: %s",
            self.name,
            cause,
            exc,
            extra={"worker": self.name, "error": cause},
            exc_info=not _is_expected(exc),
        )
        self.since = self.since or time.monotonic()
        self.causes.add(cause)

    def succeeded(self) -> None:
        if self.since is not None:
            outage_s = time.monotonic() - self.since
            log.warning(
                "%s: recovered after %.1f s",
                self.name,
                outage_s,
                extra={"worker": self.name, "outage_s": round(outage_s, 3)},
            )
            self.since = None
            self.causes.clear()


def _is_expected(exc: Exception) -> bool:
    """Connection trouble needs no traceback in the log; anything else does."""
    if isinstance(exc, (OSError, TimeoutError)):
        return True
    name = type(exc).__name__
    return "Connect" in name or "Timeout" in name


async def run_worker(
    worker: Worker,
    *,
    interval: float,
    drain_timeout: float = 10.0,
    max_backoff: float = 10.0,
    stop: asyncio.Event | None = None,
) -> int:
    """Run ``worker`` until SIGTERM/SIGINT (or ``stop`` is set); return the exit code (0)."""
    stop = stop or asyncio.Event()
    install_stop_handlers(stop)
    started = time.monotonic()
    outage = _Outage(worker.name)
    backoff = Backoff(cap=max_backoff)
    await worker.start()
    try:
        async for _ in poll(interval, stop):
            while True:
                try:
                    more = await worker.tick()
                except Exception as exc:  # noqa: BLE001 -- a store down, or a bug: retried, logged
                    outage.failed(exc)
                    await wait_or_stop(stop, backoff.next())
                    break
                outage.succeeded()
                backoff.reset()
                if not more or stop.is_set():
                    break
        try:
            await asyncio.wait_for(worker.drain(), drain_timeout)
        except TimeoutError:
            log.warning("%s: drain did not finish within %.0f s", worker.name, drain_timeout)
        except Exception as exc:  # noqa: BLE001 -- the last flush below still runs
            log.warning("%s: drain failed: %s: %s", worker.name, type(exc).__name__, exc)
    finally:
        await worker.close()
    log.info(
        "%s stopped",
        worker.name,
        extra={
            "worker": worker.name,
            "uptime_s": round(time.monotonic() - started, 3),
            "failed_passes": outage.failures,
            **worker.summary(),
        },
    )
    return 0
