-- Click counts moved from Redis by the aggregator. Kept apart from `links` so that counting a
-- viral link never waits on (or blocks) an API edit of the same row.
CREATE TABLE link_daily_clicks (
    link_id       bigint NOT NULL,
    day           date NOT NULL,
    clicks        bigint NOT NULL DEFAULT 0,   -- every recorded click, bots included
    human_clicks  bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (link_id, day)
);

CREATE TABLE link_click_totals (
    link_id       bigint PRIMARY KEY,
    clicks        bigint NOT NULL DEFAULT 0,
    human_clicks  bigint NOT NULL DEFAULT 0
);

-- One row per applied aggregator batch: the batch id is unique, so replaying a batch after a
-- crash finds its row and writes nothing.
CREATE TABLE aggregator_batches (
    batch_id    text PRIMARY KEY,
    shard       integer NOT NULL,
    fields      integer NOT NULL,
    clicks      bigint NOT NULL,
    applied_at  timestamptz NOT NULL DEFAULT now()
);
