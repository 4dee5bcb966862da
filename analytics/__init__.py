"""Analytics: click events from the Redis streams, enriched, into ClickHouse; reconciliation."""
