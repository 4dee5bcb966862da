"""The Redis side of analytics: the consumer group on every shard's clicks stream.

- ``keys.ANALYTICS_GROUP`` is created on each ``keys.clicks_stream(s)`` from id 0 (``MKSTREAM``).
- ``read`` takes new entries with XREADGROUP. On one Redis it is one call over every shard stream;
  on Redis Cluster each shard stream is its own hash slot, so it is one call per shard.
- ``claim`` moves entries that another (dead) consumer has held longer than ``claim_idle_ms`` to us
  (XAUTOCLAIM), a shard at a time, resuming where the last scan stopped.
- ``settle`` is the only way entries leave the pending list: XACK, after the caller's insert
  succeeded, and for every undecodable event an XADD to the shard's dead-letter stream in the same
  MULTI (same hash tag, so one slot), so an event is set aside once and never retried forever.
- ``trim`` removes only entries every group has acknowledged: XTRIM MINID to the lowest id that is
  still pending or not yet delivered in any group. Never MAXLEN.
- ``lag`` reports stream length, undelivered and pending entries and the oldest pending entry's age.

An entry's ``e`` field holds one or more events, one per line (``events.split_entry``). ``read``
and ``claim`` take a number of entries; the caller sizes them by events (``Entry.size``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from linkedge import events, keys

DEAD_LETTER_MAXLEN = 100_000  # events kept per shard for inspection; each was counted and logged


def dead_letter_stream(shard: int) -> str:
    """Events that could not be decoded, copied here (with their entry's id and index) before XACK."""
    return f"{keys.clicks_stream(shard)}:dead"


def parse_id(entry_id: bytes | str) -> tuple[int, int]:
    text = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclasses.dataclass(slots=True)
class Entry:
    shard: int
    id: bytes
    fields: dict[bytes, bytes]

    @property
    def key(self) -> str:
        return f"{self.shard}/{_text(self.id)}"

    @property
    def size(self) -> int:
        """About how many events the entry holds (its lines), without splitting it."""
        return self.fields.get(events.STREAM_FIELD, b"").count(events.ENTRY_SEPARATOR) + 1


@dataclasses.dataclass(slots=True)
class DeadEvent:
    """An event set aside: ``fields`` go to the dead-letter stream with the entry id and index."""

    shard: int
    entry_id: bytes
    index: int  # of the event in its entry
    fields: dict[bytes, bytes]  # {e: the event}, or the entry's own fields when it had no event


@dataclasses.dataclass(slots=True)
class GroupLag:
    undelivered: int = 0  # entries the group has not read yet (XINFO GROUPS "lag", Redis 7+)
    pending: int = 0  # read by one of its consumers, not yet acknowledged
    oldest_pending_age_s: float = 0.0


@dataclasses.dataclass(slots=True)
class ShardLag:
    length: int = 0
    groups: dict[str, GroupLag] = dataclasses.field(default_factory=dict)


class StreamReader:
    def __init__(
        self,
        client: Any,  # redis.asyncio.Redis or RedisCluster: the same stream commands
        *,
        shards: int,
        consumer: str,
        block_ms: int,
        claim_idle_ms: int,
        group: str = keys.ANALYTICS_GROUP,
    ) -> None:
        self.redis = client
        self.shards = list(range(shards))
        self.group = group
        self.consumer = consumer
        self.block_ms = block_ms
        self.claim_idle_ms = claim_idle_ms
        self.cluster = isinstance(client, aioredis.RedisCluster)
        self._streams = {keys.clicks_stream(s): s for s in self.shards}
        self._claim_cursor = {s: b"0-0" for s in self.shards}

    async def ensure_groups(self) -> None:
        for stream in self._streams:
            try:
                await self.redis.xgroup_create(stream, self.group, id="0", mkstream=True)
            except aioredis.ResponseError as exc:
                # Redis answers an existing group with this error code; there is no other signal.
                if not str(exc).startswith("BUSYGROUP"):
                    raise

    def _entries(self, reply: Any) -> list[Entry]:
        found = []
        for stream, items in reply or []:  # RESP2: [[stream, [(id, fields), ...]], ...]
            shard = self._streams[_text(stream)]
            for entry_id, fields in items:
                if fields is None:  # deleted while pending
                    continue
                found.append(Entry(shard, entry_id, fields))
        return found

    async def read(self, count: int, *, block: bool = True) -> list[Entry]:
        """About ``count`` new entries for this consumer (``count`` over the shards, at least one a
        shard); with ``block``, waits up to ``block_ms`` when there are none."""
        per_stream = max(1, -(-count // len(self.shards)))
        if not self.cluster:
            reply = await self.redis.xreadgroup(
                self.group,
                self.consumer,
                {s: ">" for s in self._streams},
                count=per_stream,
                block=self.block_ms if block else None,
            )
            return self._entries(reply)
        replies = await asyncio.gather(
            *(
                self.redis.xreadgroup(self.group, self.consumer, {s: ">"}, count=per_stream)
                for s in self._streams
            )
        )
        found = [entry for reply in replies for entry in self._entries(reply)]
        if not found and block:
            await asyncio.sleep(min(self.block_ms, 200) / 1000)
        return found

    async def claim(self, count: int) -> list[Entry]:
        """Up to ``count`` entries idle longer than ``claim_idle_ms`` in any consumer's pending
        list, now ours."""
        found: list[Entry] = []
        for shard in self.shards:
            stream = keys.clicks_stream(shard)
            reply = await self.redis.xautoclaim(
                stream,
                self.group,
                self.consumer,
                self.claim_idle_ms,
                start_id=self._claim_cursor[shard],
                count=count - len(found),
            )
            next_id, items = reply[0], reply[1]
            self._claim_cursor[shard] = next_id
            found.extend(Entry(shard, eid, fields) for eid, fields in items if fields is not None)
            if len(found) >= count:
                break
        return found

    async def hold(self, entries: Iterable[Entry]) -> None:
        """Reset the idle time of entries we still hold (a batch waiting for ClickHouse), so other
        consumers do not claim them while we retry."""
        for shard, ids in _by_shard(entries).items():
            await self.redis.xclaim(
                keys.clicks_stream(shard), self.group, self.consumer, 0, ids, justid=True
            )

    async def settle(self, done: Iterable[Entry], dead: Iterable[DeadEvent] = ()) -> None:
        """XADD ``dead`` to the dead-letter stream, XACK ``done`` and the entries ``dead`` came
        from; one pipeline a shard."""
        done_by: dict[int, list[bytes]] = _by_shard(done)
        dead_by: dict[int, list[DeadEvent]] = {}
        for event in dead:
            dead_by.setdefault(event.shard, []).append(event)
        for shard in sorted(set(done_by) | set(dead_by)):
            stream = keys.clicks_stream(shard)
            # On Redis Cluster, redis-py's asyncio transaction pipeline runs queued commands
            # through asyncio.run() and fails inside a running loop; there the dead-letter XADD and
            # the XACK go as a plain pipeline (a crash in between only repeats a dead letter).
            async with self.redis.pipeline(transaction=not self.cluster) as pipe:
                for event in dead_by.get(shard, []):
                    fields = {**event.fields, b"id": event.entry_id, b"i": b"%d" % event.index}
                    pipe.xadd(
                        dead_letter_stream(shard),
                        fields,
                        maxlen=DEAD_LETTER_MAXLEN,
                        approximate=True,
                    )
                ids = done_by.get(shard, []) + [e.entry_id for e in dead_by.get(shard, [])]
                pipe.xack(stream, self.group, *dict.fromkeys(ids))
                await pipe.execute()

    async def _floor(self, stream: str) -> tuple[int, int] | None:
        """The lowest entry id some group still needs (pending, or after its last delivered id)."""
        groups = await self.redis.xinfo_groups(stream)
        if not groups:
            return None
        floor: tuple[int, int] | None = None
        for info in groups:
            needed = parse_id(info["last-delivered-id"])
            if info["pending"]:
                summary = await self.redis.xpending(stream, info["name"])
                if summary["min"] is not None:
                    needed = min(needed, parse_id(summary["min"]))
            floor = needed if floor is None else min(floor, needed)
        return floor

    async def trim(self) -> int:
        """XTRIM MINID each stream to what every group has acknowledged; the entries removed."""
        removed = 0
        for stream in self._streams:
            floor = await self._floor(stream)
            if floor is None or floor <= (0, 0):
                continue
            removed += await self.redis.xtrim(
                stream, minid=f"{floor[0]}-{floor[1]}", approximate=False
            )
        return removed

    async def lag(self) -> dict[int, ShardLag]:
        """Per shard: stream length and, for every group on it, undelivered and pending entries."""
        now_ms = time.time() * 1000
        found: dict[int, ShardLag] = {}
        for stream, shard in self._streams.items():
            lag = found[shard] = ShardLag(length=await self.redis.xlen(stream))
            for info in await self.redis.xinfo_groups(stream):
                name = _text(info["name"])
                group = lag.groups[name] = GroupLag(
                    undelivered=int(info.get("lag") or 0), pending=int(info["pending"])
                )
                if group.pending:
                    summary = await self.redis.xpending(stream, name)
                    if summary["min"] is not None:
                        age_ms = now_ms - parse_id(summary["min"])[0]
                        group.oldest_pending_age_s = max(0.0, age_ms / 1000)
        return found

    async def forget_idle_consumers(self, idle_ms: int) -> int:
        """Delete consumers with nothing pending, idle for ``idle_ms`` (dead processes)."""
        dropped = 0
        for stream in self._streams:
            try:
                consumers = await self.redis.xinfo_consumers(stream, self.group)
            except aioredis.ResponseError:
                continue  # no such group yet
            for info in consumers:
                name = _text(info["name"])
                if name != self.consumer and not info["pending"] and info["idle"] > idle_ms:
                    await self.redis.xgroup_delconsumer(stream, self.group, name)
                    dropped += 1
        return dropped


def _by_shard(entries: Iterable[Entry]) -> dict[int, list[bytes]]:
    grouped: dict[int, list[bytes]] = {}
    for entry in entries:
        grouped.setdefault(entry.shard, []).append(entry.id)
    return grouped
