"""Many awaited lookups, few round trips: the requests of one loop tick go out as one batch.

A caller awaits ``get(item)``; items asked for in the same loop iteration are sent together with
one ``fetch_many`` call. While ``in_flight`` batches are out, new items wait and go together when
one returns, so under load the batches grow instead of the round trips. The edge uses it for
Redis (one ``MGET`` per batch) and Postgres (one ``SELECT ... = ANY($1)``) on a local cache miss.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

K = TypeVar("K")
R = TypeVar("R")


class Coalescer(Generic[K, R]):
    """``fetch_many(items)`` returns one result per item, in order; an exception it raises goes
    to every waiter of that batch."""

    def __init__(
        self,
        fetch_many: Callable[[list[K]], Awaitable[Sequence[R]]],
        *,
        max_batch: int,
        in_flight: int,
    ) -> None:
        self.fetch_many = fetch_many
        self.max_batch = max_batch
        self.in_flight = in_flight
        self._items: list[K] = []
        self._waiters: list[asyncio.Future[R]] = []
        self._scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    def get(self, item: K) -> asyncio.Future[R]:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[R] = loop.create_future()
        self._items.append(item)
        self._waiters.append(waiter)
        if not self._scheduled and len(self._tasks) < self.in_flight:
            self._scheduled = True
            loop.call_soon(self._flush)
        return waiter

    def _flush(self) -> None:
        self._scheduled = False
        items, waiters = self._items[: self.max_batch], self._waiters[: self.max_batch]
        del self._items[: self.max_batch], self._waiters[: self.max_batch]
        task = asyncio.ensure_future(self._send(items, waiters))
        self._tasks.add(task)
        task.add_done_callback(self._done)
        self._schedule_more()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        self._schedule_more()

    def _schedule_more(self) -> None:
        if self._items and not self._scheduled and len(self._tasks) < self.in_flight:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _send(self, items: list[K], waiters: list[asyncio.Future[R]]) -> None:
        try:
            results = await self.fetch_many(items)
        except Exception as exc:  # noqa: BLE001 -- handed to every waiter, which decides
            for waiter in waiters:
                if not waiter.done():
                    waiter.set_exception(exc)
            return
        for waiter, result in zip(waiters, results, strict=True):
            if not waiter.done():
                waiter.set_result(result)
