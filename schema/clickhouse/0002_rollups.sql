-- Rollups for the analytics query API (linkedge/analyticssql.py picks one when a query fits it):
-- per account, hour (clicks_by_hour) or UTC day (clicks_by_day) and ONE dimension value. Each
-- click lands once under dimension '' (value '') and once under each dimension of the ARRAY JOIN,
-- so an account-wide query by one of those dimensions, or by none, reads its account's rows of
-- that one dimension instead of every click of every account (`clicks` is sorted by link and
-- time, not by account). A query of one link needs no rollup: `clicks` is sorted by link first.
--
-- Exactness: clicks, human_clicks and visitors are uniqExact states (of click ids and visitor
-- hashes), so every count read with uniqExactMerge is exact, also when a click reached `clicks`
-- twice in differently composed batches, and when the backfill below overlaps inserts the views
-- already saw. The price: a state keeps every id of its bucket, and each click is aggregated
-- into 10 rows of each table at insert.
--
-- The views see only inserts made after they exist; the INSERT ... SELECT statements fill the
-- rollups from the clicks already stored.

CREATE TABLE IF NOT EXISTS clicks_by_hour (
    account_id    UInt64,
    dimension     LowCardinality(String),
    value         String,
    hour          DateTime('UTC'),
    clicks        AggregateFunction(uniqExact, UUID),
    human_clicks  AggregateFunction(uniqExact, UUID),
    visitors      AggregateFunction(uniqExact, FixedString(16))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(hour)
ORDER BY (account_id, dimension, value, hour)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE TABLE IF NOT EXISTS clicks_by_day (
    account_id    UInt64,
    dimension     LowCardinality(String),
    value         String,
    day           Date,
    clicks        AggregateFunction(uniqExact, UUID),
    human_clicks  AggregateFunction(uniqExact, UUID),
    visitors      AggregateFunction(uniqExact, FixedString(16))
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(day)
ORDER BY (account_id, dimension, value, day)
SETTINGS non_replicated_deduplication_window = 1000;

CREATE MATERIALIZED VIEW IF NOT EXISTS clicks_by_hour_mv TO clicks_by_hour AS
SELECT
    account_id, pair.1 AS dimension, pair.2 AS value, toStartOfHour(ts) AS hour,
    uniqExactState(click_id) AS clicks,
    uniqExactStateIf(click_id, is_bot = 0) AS human_clicks,
    uniqExactState(visitor_hash) AS visitors
FROM clicks
ARRAY JOIN [
    ('', ''), ('country', toString(country)), ('device', toString(device_type)),
    ('os', toString(os)), ('browser', toString(browser)),
    ('referrer_host', toString(referrer_host)), ('utm_source', toString(utm_source)),
    ('utm_medium', toString(utm_medium)), ('utm_campaign', toString(utm_campaign)),
    ('bot_reason', toString(bot_reason))
] AS pair
GROUP BY account_id, dimension, value, hour;

CREATE MATERIALIZED VIEW IF NOT EXISTS clicks_by_day_mv TO clicks_by_day AS
SELECT
    account_id, pair.1 AS dimension, pair.2 AS value, toDate(ts, 'UTC') AS day,
    uniqExactState(click_id) AS clicks,
    uniqExactStateIf(click_id, is_bot = 0) AS human_clicks,
    uniqExactState(visitor_hash) AS visitors
FROM clicks
ARRAY JOIN [
    ('', ''), ('country', toString(country)), ('device', toString(device_type)),
    ('os', toString(os)), ('browser', toString(browser)),
    ('referrer_host', toString(referrer_host)), ('utm_source', toString(utm_source)),
    ('utm_medium', toString(utm_medium)), ('utm_campaign', toString(utm_campaign)),
    ('bot_reason', toString(bot_reason))
] AS pair
GROUP BY account_id, dimension, value, day;

INSERT INTO clicks_by_hour
SELECT
    account_id, pair.1 AS dimension, pair.2 AS value, toStartOfHour(ts) AS hour,
    uniqExactState(click_id), uniqExactStateIf(click_id, is_bot = 0), uniqExactState(visitor_hash)
FROM clicks
ARRAY JOIN [
    ('', ''), ('country', toString(country)), ('device', toString(device_type)),
    ('os', toString(os)), ('browser', toString(browser)),
    ('referrer_host', toString(referrer_host)), ('utm_source', toString(utm_source)),
    ('utm_medium', toString(utm_medium)), ('utm_campaign', toString(utm_campaign)),
    ('bot_reason', toString(bot_reason))
] AS pair
GROUP BY account_id, dimension, value, hour;

INSERT INTO clicks_by_day
SELECT
    account_id, pair.1 AS dimension, pair.2 AS value, toDate(ts, 'UTC') AS day,
    uniqExactState(click_id), uniqExactStateIf(click_id, is_bot = 0), uniqExactState(visitor_hash)
FROM clicks
ARRAY JOIN [
    ('', ''), ('country', toString(country)), ('device', toString(device_type)),
    ('os', toString(os)), ('browser', toString(browser)),
    ('referrer_host', toString(referrer_host)), ('utm_source', toString(utm_source)),
    ('utm_medium', toString(utm_medium)), ('utm_campaign', toString(utm_campaign)),
    ('bot_reason', toString(bot_reason))
] AS pair
GROUP BY account_id, dimension, value, day;
