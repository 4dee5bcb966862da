"""One Redis URL, one node or a Redis Cluster: which client a process should talk through.

``REDIS_URL`` names one node either way. ``cluster_enabled`` asks that node (``INFO cluster``);
on a cluster node a process uses ``redis.asyncio.RedisCluster``, which routes each command to the
slot owner. Nothing else changes: every click-pipeline key of a shard carries the hash tag
``{c<shard>}`` (``linkedge.keys``), so each script call stays on one slot, and a cluster
broadcasts ``PUBLISH`` to every node, so a plain client subscribed to the URL's node hears every
invalidation.
"""

from __future__ import annotations

import logging
from typing import Any, TypeAlias

from redis.asyncio import Redis, RedisCluster

log = logging.getLogger("linkedge.redis")

AnyRedis: TypeAlias = Redis | RedisCluster
CLUSTER_DETECTED = "Redis Cluster detected"  # logged once per client; tests look for it


async def is_cluster(node: Redis) -> bool:
    """Whether ``node`` runs in cluster mode. Raises the driver's error if it cannot be asked."""
    info = await node.info("cluster")
    return bool(info.get("cluster_enabled"))


async def cluster_enabled(url: str, *, timeout: float) -> bool:
    """``is_cluster`` for the node at ``url``, on a connection of its own, closed after."""
    probe = Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
    try:
        return await is_cluster(probe)
    finally:
        await probe.aclose()


def cluster_client(url: str, who: str, **options: Any) -> RedisCluster:
    """A ``RedisCluster`` started from the URL's node (it learns the others from it)."""
    log.info("%s: %s, routing commands by slot", who, CLUSTER_DETECTED, extra={"client_of": who})
    return RedisCluster.from_url(url, **options)
