"""The ClickHouse side of analytics: one insert per batch, and the few fixed queries it answers.

How a replayed click is kept from counting twice (the two mechanisms, and what each guarantees):

1. ``insert_deduplication_token`` (derived from the batch's stream entry ids). ClickHouse remembers
   the tokens of the last ``non_replicated_deduplication_window`` (1000) inserts of a table and
   skips an insert whose token it has seen: the whole block, in ``clicks`` and in the materialized
   view's ``clicks_hourly`` alike (checked on chdb 26.9; a non-replicated MergeTree ignores the
   token unless the table sets ``non_replicated_deduplication_window``, which defaults to 0, so
   the schema sets it on both tables). This covers the common replay: a batch
   inserted, then the process died (or Redis failed) before XACK, and the same entries come back as
   the same batch. It does not cover a replay composed differently (entries claimed by another
   consumer, a batch boundary that moved) nor one older than the window.
2. The table engines, which need no help from the writer: ``clicks`` is a ``ReplacingMergeTree``
   ordered by ``(link_id, ts, click_id)``, so duplicates of a click collapse when parts merge, and
   ``SELECT ... FINAL`` or ``uniqExact(click_id)`` is exact before that; ``clicks_hourly`` keeps
   ``uniqExact`` states of click ids, so its counts are exact whatever was inserted twice. Every
   query here counts with ``uniqExact(click_id)``.

So: counts read from ClickHouse are exactly once always; raw ``count()`` on ``clicks`` without
``FINAL`` is exact except after a replay that the token did not catch, until the next merge.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import threading
from collections.abc import Sequence
from typing import Any

from analytics.enrich import COLUMNS
from linkedge.clickhouse import connect
from linkedge.migrate import migrate_clickhouse

DAILY_COUNTS = """
SELECT link_id, toString(toDate(ts)) AS day,
       uniqExact(click_id) AS clicks, uniqExactIf(click_id, is_bot = 0) AS human_clicks
FROM clicks
WHERE ts >= toDateTime64({since:Date}, 3, 'UTC')
GROUP BY link_id, day
ORDER BY link_id, day
"""

LINK_COUNTS = """
SELECT
    (SELECT count() FROM clicks WHERE link_id = {link_id:UInt64}) AS row_count,
    (SELECT count() FROM clicks FINAL WHERE link_id = {link_id:UInt64}) AS final_rows,
    (SELECT uniqExact(click_id) FROM clicks WHERE link_id = {link_id:UInt64}) AS distinct_clicks,
    (SELECT uniqExactIf(click_id, is_bot = 0) FROM clicks WHERE link_id = {link_id:UInt64})
        AS human_clicks,
    (SELECT uniqExactMerge(clicks) FROM clicks_hourly WHERE link_id = {link_id:UInt64})
        AS hourly_clicks,
    (SELECT uniqExactMerge(human_clicks) FROM clicks_hourly WHERE link_id = {link_id:UInt64})
        AS hourly_human_clicks
"""

HOURLY = """
SELECT formatDateTime(hour, '%Y-%m-%dT%H:00:00Z') AS hour_start, uniqExactMerge(clicks) AS clicks,
       uniqExactMerge(human_clicks) AS human_clicks, uniqMerge(visitors) AS visitors
FROM clicks_hourly
WHERE link_id = {link_id:UInt64} AND hour >= toDateTime({since:Date}, 'UTC')
GROUP BY hour
ORDER BY hour
"""


def batch_token(entry_ids: Sequence[str]) -> str:
    """The insert deduplication token of a batch: a digest of its ``shard/entry-id`` list."""
    digest = hashlib.sha256("\n".join(sorted(entry_ids)).encode()).hexdigest()
    return f"lk-{digest[:40]}"


class ClickHouseWriter:
    """A lazily (re)connected clickhouse-connect client; blocking calls, run them in a thread.

    The schema is applied on connect (idempotent): with the embedded engine this process is the
    only one that can open the data path, so ``linkedge migrate`` cannot do it while we run.
    """

    def __init__(self, url: str, *, migrate: bool = True) -> None:
        self.url = url
        self.migrate = migrate
        self._client: Any = None
        self._lock = threading.Lock()

    def _get(self) -> Any:
        with self._lock:
            if self._client is None:
                kwargs: dict[str, Any] = {}
                if not self.url.startswith("chdb:"):
                    kwargs = {"connect_timeout": 5, "send_receive_timeout": 60}
                client = connect(self.url, **kwargs)
                if self.migrate:
                    migrate_clickhouse(self.url, client)
                self._client = client
            return self._client

    def _forget(self) -> None:
        """Drop an HTTP client after a failure so the next call reconnects; chdb's handle stays."""
        if self.url.startswith("chdb:"):
            return
        with self._lock:
            client, self._client = self._client, None
        _close_quietly(client)

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        client = self._get()
        try:
            return getattr(client, method)(*args, **kwargs)
        except Exception:
            self._forget()
            raise

    def insert(self, rows: Sequence[Sequence[Any]], token: str) -> None:
        self._call(
            "insert",
            "clicks",
            rows,
            column_names=list(COLUMNS),
            settings={
                "insert_deduplication_token": token,
                # Default on recent servers, off on older ones: the view skips what the table skips.
                "deduplicate_blocks_in_dependent_materialized_views": 1,
                # A batch may span many months (a spool replayed after a long outage, a skewed
                # clock); the default limit of 100 partitions would fail it on every retry and
                # stall its shard. 0 = no limit.
                "max_partitions_per_insert_block": 0,
            },
        )

    def query(self, sql: str, **kwargs: Any) -> Any:
        """Run one SELECT (``parameters``, ``settings`` as clickhouse-connect takes them)."""
        return self._call("query", sql, **kwargs)

    def ping(self) -> bool:
        try:
            return bool(self._call("query", "SELECT 1").result_rows)
        except Exception:  # noqa: BLE001 - readiness is a yes/no answer
            return False

    def daily_counts(self, since: datetime.date) -> list[dict[str, Any]]:
        """Distinct clicks and human clicks per link per UTC day from ``since`` on."""
        result = self._call("query", DAILY_COUNTS, parameters={"since": since})
        return [
            {"link_id": int(link_id), "day": day, "clicks": int(clicks), "human_clicks": int(human)}
            for link_id, day, clicks, human in result.result_rows
        ]

    def link_counts(self, link_id: int) -> dict[str, int]:
        """One link's counts read every way (rows, FINAL, distinct, rollup): they must agree."""
        result = self._call("query", LINK_COUNTS, parameters={"link_id": link_id})
        names = result.column_names
        return {
            name: int(value or 0) for name, value in zip(names, result.result_rows[0], strict=True)
        }

    def hourly(self, link_id: int, since: datetime.date) -> list[dict[str, Any]]:
        result = self._call("query", HOURLY, parameters={"link_id": link_id, "since": since})
        return [
            {"hour": hour, "clicks": int(c), "human_clicks": int(h), "visitors": int(v)}
            for hour, c, h, v in result.result_rows
        ]

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        _close_quietly(client)


def _close_quietly(client: Any) -> None:
    """Close a client that may be broken; its failure must not hide the error that got us here."""
    if client is None:
        return
    with contextlib.suppress(Exception):
        client.close()
