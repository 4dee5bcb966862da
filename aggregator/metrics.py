"""Prometheus metrics of the aggregator, in the default registry (one process)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from linkedge import __version__

BATCHES = Counter(
    "linkedge_aggregator_batches_total",
    "Counter batches finished, by result: applied (written to Postgres), replayed (already there)",
    ["result"],
)
CLICKS_MOVED = Counter(
    "linkedge_aggregator_clicks_moved_total",
    "Clicks moved to Postgres, by kind (all, human)",
    ["kind"],
)
FIELDS_SET_ASIDE = Counter(
    "linkedge_aggregator_fields_set_aside_total",
    "Malformed counter fields moved to the shard's counts:bad hash instead of Postgres",
)
FLUSH_DURATION = Histogram(
    "linkedge_aggregator_flush_duration_seconds",
    "Time to move one shard's batch (snapshot, Postgres transaction, delete)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
ERRORS = Counter(
    "linkedge_aggregator_errors_total", "Failed shard flushes, by the store that failed", ["store"]
)
LAG = Gauge(
    "linkedge_aggregator_lag_seconds",
    "Seconds since the aggregator last finished a pass over every shard (grows during an outage)",
)
BUILD_INFO = Gauge("linkedge_aggregator_build_info", "Build information", ["version"])
BUILD_INFO.labels(version=__version__).set(1)
