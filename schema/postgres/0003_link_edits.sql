-- Every change to a link row moves its updated_at, whoever makes it (the API, or SQL by hand), to
-- the time of the change rather than of its transaction's start: each edge worker polls
-- `updated_at` for edits (edge/linkstore.py, watch_edits), so an edit reaches every worker within
-- CACHE_TTL_S even when the Redis invalidation that normally carries it was refused.
CREATE OR REPLACE FUNCTION links_touch() RETURNS trigger AS $$
BEGIN
    NEW.updated_at := clock_timestamp();
    RETURN NEW;
END;
$$ LANGUAGE plpgsql;

CREATE TRIGGER links_touch BEFORE UPDATE ON links FOR EACH ROW EXECUTE FUNCTION links_touch();

CREATE INDEX links_updated_at_idx ON links (updated_at);
