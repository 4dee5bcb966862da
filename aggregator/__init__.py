"""``linkedge aggregator``: moves click counters from Redis to Postgres, exactly once."""
