"""Edits read from Postgres: how an edit reaches every worker when its Redis invalidation did not.

After a committed edit the API writes the link's new record to Redis (a marker for a deleted
one) and tells every worker (``LinkStore.invalidate_many``). When Redis refuses that write (three
tries, then only logged), the old record would stay in Redis for ``REDIS_LINK_TTL_S`` and every
worker would keep loading it. So each worker also polls Postgres for edited rows (``links.updated_at``, moved by a
trigger on every update, indexed) every ``poll_interval`` (half of ``CACHE_TTL_S``, within 1 to
10 s), and for each edit it has not seen:

- drops the code from its cache, and puts the invalidation marker over a Redis record older than
  the edit (never over the edit's own record; over any record when the edit's version was
  forgotten), trying again on every poll while the write fails;
- remembers the edit's version in ``EditLog`` (bounded), so that a Redis record older than that
  version is not believed: the worker reads Postgres instead and writes the fresh record back.

A worker polls from its own start: an edit made before it, whose marker Redis has not yet taken,
reaches it once Redis takes writes again and a running worker's retry lands. Each poll reads from
``OVERLAP_S`` before the previous one, so an edit committed late (its ``updated_at`` taken before
the commit) is still seen; an edit seen twice changes nothing. Rows
only created (``updated_at = created_at``) are skipped: there is no older record to replace.
"""

from __future__ import annotations

import asyncio
import collections
import datetime
import logging
from collections.abc import Callable

import asyncpg

log = logging.getLogger("linkedge.edge")

OVERLAP_S = 10.0  # longer than any API write transaction
EDITS_KEPT = 100_000  # newest edits remembered per worker; older ones may have left Redis anyway
POLL_ROWS = 10_000  # edits read per query; a longer backlog is read over the next polls

SELECT_EDITS = """
SELECT code, (EXTRACT(EPOCH FROM updated_at) * 1000000)::int8 AS version, updated_at
FROM links
WHERE updated_at > $1 AND updated_at > created_at
ORDER BY updated_at
LIMIT $2
"""


def poll_interval(cache_ttl_s: float) -> float:
    """Seconds between polls: an edit reaches every worker within ``CACHE_TTL_S``."""
    return min(max(cache_ttl_s / 2, 1.0), 10.0)


class EditLog:
    """The newest version of each recently edited code, at most ``kept`` codes."""

    def __init__(self, kept: int = EDITS_KEPT) -> None:
        self._versions: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._kept = kept

    def version(self, code: str) -> int:
        """The newest edit's version seen for ``code``; 0 when none is remembered."""
        return self._versions.get(code, 0)

    def note(self, code: str, version: int) -> bool:
        """Remember an edit; whether it is newer than what was remembered."""
        if version <= self._versions.get(code, 0):
            return False
        self._versions[code] = version
        self._versions.move_to_end(code)
        while len(self._versions) > self._kept:
            self._versions.popitem(last=False)
        return True


class EditWatcher:
    """Polls Postgres for edits and hands the new ones to ``forget`` (``LinkStore.forget_edited``)."""

    def __init__(
        self,
        pg: asyncpg.Pool,
        edits: EditLog,
        forget: Callable[[list[str]], None],
        interval: float,
    ) -> None:
        self.pg = pg
        self.edits = edits
        self.forget = forget
        self.interval = interval
        self.since: datetime.datetime | None = None
        self._failing = False

    async def poll(self) -> list[str]:
        """Read the edits since the last poll (less ``OVERLAP_S``); the codes edited anew."""
        if self.since is None:  # edits before this worker started: its cache is empty anyway
            self.since = await self.pg.fetchval("SELECT clock_timestamp()", timeout=5)
        since = self.since - datetime.timedelta(seconds=OVERLAP_S)
        rows = await self.pg.fetch(SELECT_EDITS, since, POLL_ROWS, timeout=5)
        changed = [row["code"] for row in rows if self.edits.note(row["code"], row["version"])]
        if rows:
            self.since = max(self.since, rows[-1]["updated_at"])
            if len(rows) == POLL_ROWS:  # more than a page behind: the next poll goes on from here
                self.since = rows[-1]["updated_at"] + datetime.timedelta(seconds=OVERLAP_S)
        self.forget(changed)  # also when empty: it retries markers that did not land
        return changed

    async def run(self) -> None:
        """``poll`` every ``interval`` for the life of the worker; errors are logged once."""
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.poll()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 -- Postgres down: Redis still carries edits
                if not self._failing:
                    log.warning("polling Postgres for edits failed", extra={"error": repr(exc)})
                self._failing = True
            else:
                self._failing = False
