"""Prometheus metrics of the edge, shared by every Granian worker (multiprocess mode).

``linkedge edge`` sets ``PROMETHEUS_MULTIPROC_DIR`` (wiped at start) before the workers import
this module. The redirect path does not touch these per request: it counts in plain ints and
``edge.redirect`` folds them in on a timer (see ``HotCounters``).
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

REDIRECTS = Counter(
    "linkedge_redirects_total", "Redirect requests answered, by HTTP status", ["status"]
)
CACHE_LOOKUPS = Counter(
    "linkedge_link_lookups_total",
    "Short-code lookups by the tier that answered (local, local_miss, redis, postgres, none)",
    ["tier"],
)
CLICK_FLUSH_EVENTS = Histogram(
    "linkedge_click_flush_events",
    "Click events per flush to Redis",
    buckets=(1, 5, 10, 50, 100, 250, 500, 1000, 2500, 5000),
)
CLICK_FLUSH_ERRORS = Counter(
    "linkedge_click_flush_errors_total", "Click flushes to Redis that failed"
)
CLICKS_RECORDED = Counter("linkedge_clicks_recorded_total", "Clicks written to Redis")
CLICKS_SPOOLED = Counter("linkedge_clicks_spooled_total", "Clicks written to the local spool file")
CLICKS_DROPPED = Counter(
    "linkedge_clicks_dropped_total", "Clicks dropped because memory and spool were full", ["reason"]
)
CLICKS_PENDING = Gauge(
    "linkedge_clicks_pending",
    "Clicks held in worker memory, not yet in Redis",
    multiprocess_mode="livesum",
)
COLD_LOOKUPS_REFUSED = Counter(
    "linkedge_cold_lookups_refused_total",
    "Codes in neither the worker's cache nor Redis answered 404 without Postgres: the worker's "
    "budget of cold lookups (COLD_LOOKUPS_PER_SECOND) was spent",
)
INVALIDATIONS = Counter(
    "linkedge_cache_invalidations_total", "Link invalidations received over Redis"
)
API_REQUESTS = Counter(
    "linkedge_api_requests_total",
    "API requests by route template, method and status",
    ["route", "method", "status"],
)
API_LATENCY = Histogram("linkedge_api_request_duration_seconds", "API request latency", ["route"])
RATE_LIMITED = Counter("linkedge_rate_limited_total", "API requests rejected with 429")
LOOKUP_ERRORS = Counter(
    "linkedge_link_lookup_errors_total",
    "Link lookups or write-backs that failed, by store (the redirect still falls back where it can)",
    ["store"],
)
INVALIDATION_ERRORS = Counter(
    "linkedge_cache_invalidation_errors_total", "Invalidations that could not be sent to Redis"
)
UNSAFE_TARGETS = Counter(
    "linkedge_unsafe_targets_total",
    "Stored targets refused because they would not make a safe header",
)
BAD_LINK_RECORDS = Counter(
    "linkedge_bad_link_records_total",
    "Link records from Redis or Postgres refused as they entered a worker's cache (answered 404), "
    "by store and the first field at fault",
    ["store", "field"],
)
RATE_LIMIT_ERRORS = Counter(
    "linkedge_rate_limit_errors_total", "API requests let through unlimited because Redis failed"
)
BUILD_INFO = Gauge(
    "linkedge_build_info",
    "Build information: version, the click encoder and the redirect path of the edge's workers "
    "(c, or python when the C module is not built or not chosen); set by each worker at start",
    ["version", "encoder", "hot_path"],
    multiprocess_mode="max",
)
