"""Every Redis key, stream, channel and group name linkedge uses, in one screen.

Click counters and streams are split into ``CLICK_SHARDS`` shards. Every key of one shard carries
the same hash tag ``{c<shard>}``, so one Lua call can touch all of them on Redis Cluster too, and
several aggregators or analytics consumers can each take a share of the shards.
"""

PREFIX = "lk"


# Link records written back from Postgres (JSON), one key per code.
def link(code: str) -> str:
    return f"{PREFIX}:link:{code}"


# Published after every edit or delete of a link; the message is the code. Every edge worker
# subscribes and drops the code from its local cache.
INVALIDATE_CHANNEL = f"{PREFIX}:invalidate"


# API rate limiting, one GCRA key per API key id.
def rate_limit(key_id: int) -> str:
    return f"{PREFIX}:rl:{key_id}"


# API key lookups that missed a worker's cache, one GCRA key per client IP.
def auth_lookups(client_ip: str) -> str:
    return f"{PREFIX}:rl:ip:{client_ip}"


# ---- click pipeline, per shard -------------------------------------------------------------
def shard_tag(shard: int) -> str:
    return f"{{c{shard}}}"


# Clicks not yet moved to Postgres. The edge writes one field per flush, "~<flush id>" -> its
# counters, one "<link_id>:<YYYYMMDD>:<h|b> <clicks>" per line (``events.counter_items``); a field
# "<link_id>:<YYYYMMDD>:<h|b>" -> clicks (HINCRBY, as edges before that wrote) is read the same.
def counts(shard: int) -> str:
    return f"{PREFIX}:{shard_tag(shard)}:counts"


# The counters the aggregator has taken (RENAMEd) and not yet finished writing to Postgres.
def counts_snapshot(shard: int) -> str:
    return f"{PREFIX}:{shard_tag(shard)}:counts:snapshot"


# The batch id of that snapshot; present exactly while the snapshot exists.
def counts_batch(shard: int) -> str:
    return f"{PREFIX}:{shard_tag(shard)}:counts:batch"


# Malformed counter fields the aggregator set aside (field -> count), for a human to inspect.
def counts_bad(shard: int) -> str:
    return f"{PREFIX}:{shard_tag(shard)}:counts:bad"


# The click events, consumed by analytics: one entry per edge flush, its events one per line
# (``events.join_entry``).
def clicks_stream(shard: int) -> str:
    return f"{PREFIX}:{shard_tag(shard)}:clicks"


# Marks an edge flush as applied so that a retried flush is a no-op (expires after a day).
def flush_marker(shard: int, flush_id: str) -> str:
    return f"{PREFIX}:{shard_tag(shard)}:flush:{flush_id}"


FLUSH_MARKER_TTL_S = 86_400

# Consumer group of the analytics process on every clicks stream.
ANALYTICS_GROUP = "analytics"
