"""What the API app needs of the worker's resources, said once for every route.

``edge.resources.Resources`` (built in the lifespan) has all of it; tests hand in their own
objects. The API never looks a link up for a redirect: of the link store it only needs the
invalidation that follows a committed write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import asyncpg
import redis.asyncio as aioredis

from edge.records import LinkRecord
from linkedge.settings import Settings


class LinkInvalidation(Protocol):
    async def invalidate(self, code: str) -> None: ...

    async def invalidate_many(
        self, codes: list[str], records: Sequence[LinkRecord] = ()
    ) -> None: ...


class ApiResources(Protocol):
    @property
    def settings(self) -> Settings: ...

    @property
    def pg(self) -> asyncpg.Pool: ...

    @property
    def redis(self) -> aioredis.Redis: ...

    @property
    def links(self) -> LinkInvalidation: ...
