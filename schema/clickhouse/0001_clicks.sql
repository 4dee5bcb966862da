-- One row per click, written by `linkedge analytics` (analytics/writer.py).
--
-- Exactly-once: the sort key ends in the click id, so a click inserted twice (a replayed stream
-- entry) collapses to one row when parts merge (ReplacingMergeTree); queries that must be exact
-- before that use FINAL or uniqExact(click_id). On top of that the writer passes an
-- insert_deduplication_token per batch: a batch retried as is within the last
-- non_replicated_deduplication_window inserts is skipped whole, in this table and in the view.
CREATE TABLE IF NOT EXISTS clicks (
    click_id        UUID,
    ts              DateTime64(3, 'UTC'),
    link_id         UInt64,
    account_id      UInt64,
    code            String,
    target          String,
    is_bot          UInt8,
    bot_reason      LowCardinality(String),
    bot_name        LowCardinality(String),
    device_type     LowCardinality(String),
    os              LowCardinality(String),
    browser         LowCardinality(String),
    country         LowCardinality(String),
    referrer        String,
    referrer_host   LowCardinality(String),
    utm_source      LowCardinality(String),
    utm_medium      LowCardinality(String),
    utm_campaign    LowCardinality(String),
    utm_term        String,
    utm_content     String,
    accept_language LowCardinality(String),
    host            LowCardinality(String),
    visitor_hash    FixedString(16),
    ip              String
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(ts)
ORDER BY (link_id, ts, click_id)
SETTINGS non_replicated_deduplication_window = 1000;

-- Per link per hour. The counts are uniqExact states over click ids, not sums, so a click that
-- reaches `clicks` twice (in two differently composed batches, which the token cannot catch)
-- still counts once here: read with uniqExactMerge(clicks), uniqExactMerge(human_clicks).
CREATE TABLE IF NOT EXISTS clicks_hourly (
    link_id       UInt64,
    hour          DateTime('UTC'),
    clicks        AggregateFunction(uniqExact, UUID),
    human_clicks  AggregateFunction(uniqExact, UUID),
    visitors      AggregateFunction(uniq, FixedString(16))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (link_id, hour)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS clicks_hourly_mv TO clicks_hourly AS
SELECT
    link_id,
    toStartOfHour(ts) AS hour,
    uniqExactState(click_id) AS clicks,
    uniqExactStateIf(click_id, is_bot = 0) AS human_clicks,
    uniqState(visitor_hash) AS visitors
FROM clicks
GROUP BY link_id, hour;
