"""Click recording: what the redirect hands a click to, and how it reaches Redis.

Every served redirect is one click. The redirect handler and the C hot path (``edge.redirect``)
use a ``Recorder``; the worker's lifespan makes one with ``new_recorder``:

- ``edge.recorder.ClickRecorder``, the asynchronous recorder: the click is encoded into the open
  batch and the redirect answers; a flush loop sends batches every ``CLICK_FLUSH_INTERVAL_MS``.
- ``edge.syncrecorder.SyncRecorder`` (``CLICK_FLUSH_INTERVAL_MS=0``): the redirect answers once
  its click is in Redis (``record_now``).

Behind them: ``edge.sender`` applies a batch with one idempotent script call (flush ids and
markers), ``edge.backlog`` holds what Redis has not taken yet within a memory bound in clicks and
bytes, spools the rest (``edge.spool``) and replays spool files, and ``edge.drops`` counts what
fits nowhere, logging once per episode.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, Protocol

import redis.asyncio as aioredis

from edge.clickencoder import Encoder
from edge.recorder import ClickRecorder
from edge.records import LinkRecord
from edge.syncrecorder import SyncRecorder
from linkedge.settings import Settings

__all__ = ["ClickRecorder", "Recorder", "SyncRecorder", "new_recorder"]


class Recorder(Protocol):
    """A worker's click recorder, as the redirect handler, the hot path and the lifespan use it.

    Per click the handler calls ``add`` (the encoder's own ``record``: the click into the open
    batch, True when the batch is full), then ``batch_full`` when it said so, or ``add_failed``
    when it raised; with ``sync`` it awaits ``record_now`` instead. None of them raises.
    """

    @property
    def sync(self) -> bool:
        """Whether the handler must await ``record_now`` before answering."""
        ...

    @property
    def add(self) -> Callable[[LinkRecord, Mapping[str, Any], str], bool]: ...

    @property
    def encoder(self) -> Encoder: ...

    def record(self, link: LinkRecord, scope: Mapping[str, Any], location: str) -> None:
        """``add``, then ``batch_full`` or ``add_failed``: one served redirect's click."""
        ...

    def batch_full(self) -> None: ...

    def add_failed(self, link: LinkRecord, exc: BaseException | None = None) -> None: ...

    async def record_now(self, link: LinkRecord, scope: Mapping[str, Any], location: str) -> None:
        """Return once the click is recorded as far as this recorder promises before answering."""
        ...

    async def start(self) -> None: ...

    async def close(self) -> None:
        """Flush everything (to the spool what Redis does not take); later clicks are spooled."""
        ...


def new_recorder(settings: Settings, redis: aioredis.Redis) -> Recorder:
    """The recorder ``CLICK_FLUSH_INTERVAL_MS`` asks for: synchronous at 0, else asynchronous."""
    if settings.click_flush_interval_ms == 0:
        return SyncRecorder(settings, redis)
    return ClickRecorder(settings, redis)
