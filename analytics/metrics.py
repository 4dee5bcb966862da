"""Prometheus metrics of the analytics process (the default registry; one process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from linkedge import __version__

EVENTS = Counter(
    "linkedge_analytics_events_total",
    "Click events settled, by outcome: inserted (into ClickHouse) or dead_letter (set aside)",
    ["outcome"],
)
ENTRIES = Counter(
    "linkedge_analytics_entries_total",
    "Stream entries acknowledged (each holds one or more click events)",
)
BATCHES = Counter(
    "linkedge_analytics_batches_total", "Batches inserted into ClickHouse and acknowledged"
)
CLAIMED = Counter(
    "linkedge_analytics_claimed_total", "Entries taken over from idle consumers with XAUTOCLAIM"
)
TRIMMED = Counter(
    "linkedge_analytics_trimmed_total",
    "Stream entries removed by XTRIM MINID (acknowledged by every group)",
)
INSERT_FAILURES = Counter(
    "linkedge_analytics_insert_failures_total",
    "ClickHouse inserts that failed (the batch is retried, not acked)",
)
INSERT_DURATION = Histogram(
    "linkedge_analytics_insert_duration_seconds",
    "Time of one batch insert into ClickHouse",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
CLICKHOUSE_UP = Gauge(
    "linkedge_analytics_clickhouse_up", "1 when the last ClickHouse call succeeded"
)
STREAM_LENGTH = Gauge(
    "linkedge_analytics_stream_length", "Entries in the shard's clicks stream", ["shard"]
)
UNDELIVERED = Gauge(
    "linkedge_analytics_undelivered",
    "Entries of the shard's clicks stream a consumer group has not read yet",
    ["shard", "group"],
)
PENDING = Gauge(
    "linkedge_analytics_pending",
    "Entries a consumer group has read and not yet acknowledged",
    ["shard", "group"],
)
OLDEST_PENDING_AGE = Gauge(
    "linkedge_analytics_oldest_pending_age_seconds",
    "Age of the oldest entry a consumer group has not acknowledged (0 when none)",
    ["shard", "group"],
)
BUILD_INFO = Gauge("linkedge_analytics_build_info", "Build information", ["version"])
BUILD_INFO.labels(version=__version__).set(1)
