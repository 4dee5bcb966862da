"""The link routes of ``/api/v1``: create, read, edit, delete, list, bulk create, stats.

Every handler names the scope it needs first (``require``), reads only its own account's links,
and, after a write has committed, invalidates the code in every edge worker's cache
(``resources.links.invalidate_many``, which never raises: a failure there is logged and counted by
the link store, and caches then expire by TTL). A created or edited link's record goes into Redis
with it, so that every worker finds the new link there without Postgres (whose lookups of codes
Redis does not know are budgeted per worker: ``edge.budget``).

Bulk create answers 200 with one result per item, in order: ``{"index", "status": 201, "link"}``
or ``{"index", "status": 4xx, "problem"}``. Items are independent: a bad item stores nothing and
does not stop the others.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge.api import inputs, queries, validation
from edge.api.auth import require
from edge.api.deps import ApiResources
from edge.api.problems import Problem, invalid
from edge.records import LinkRecord

Endpoint = Callable[[Request], Awaitable[Response]]
DEFAULT_PAGE = 50
MAX_PAGE = 200
DEFAULT_STATS_DAYS = 30
MAX_STATS_DAYS = 366
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def _timestamp(value: datetime | None) -> str | None:
    if value is None:
        return None
    if value.tzinfo is None:  # asyncpg's -infinity/infinity (datetime.min/max): never local time
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps(body), status_code=status, headers=headers, media_type="application/json"
    )


def link_record(row: asyncpg.Record, account_id: int) -> LinkRecord:
    """A committed row as the edge reads it from Postgres (``edge.linkstore.SELECT_LINKS``): the
    same epoch seconds for ``expires_at``, and ``updated_at`` in microseconds as its version."""
    expires = row["expires_at"]
    if expires is not None and expires.tzinfo is None:
        expires = expires.replace(tzinfo=UTC)
    return LinkRecord(
        id=row["id"],
        account_id=account_id,
        code=row["code"],
        url=row["url"],
        redirect_type=row["redirect_type"],
        expires_at=None if expires is None else expires.timestamp(),
        expired_url=row["expired_url"],
        forward_query=row["forward_query"],
        disabled=row["disabled"],
        version=(row["updated_at"] - _EPOCH) // _MICROSECOND,
    )


def _not_found(code: str) -> Problem:
    return Problem(404, f"no link with code {code!r} in this account")


def encode_cursor(last_id: int) -> str:
    return base64.urlsafe_b64encode(f"v1:{last_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
        version, _, last_id = raw.partition(":")
        if version == "v1" and last_id.isdigit() and 0 < int(last_id) <= queries.MAX_ID:
            return int(last_id)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        pass
    raise invalid(
        "cursor", "is not a cursor this API returned; pass next_cursor from the last page"
    )


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    raw = request.query_params.get(name)
    if raw is None:
        return default
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise invalid(name, f"must be a whole number from {low} to {high}")
    return int(raw)


def _by_method(**handlers: Endpoint) -> Endpoint:
    if "GET" in handlers:
        handlers["HEAD"] = handlers["GET"]

    async def endpoint(request: Request) -> Response:
        return await handlers[request.method](request)

    return endpoint


class LinkRoutes:
    def __init__(self, resources: ApiResources, reserved: frozenset[str]) -> None:
        self.resources = resources
        self.pg: asyncpg.Pool = resources.pg
        self.reserved = frozenset(word.lower() for word in reserved)
        self.base_url: str = resources.settings.base_url
        self.allow_private: bool = resources.settings.allow_private_targets

    def routes(self) -> list[Route]:
        """One route per path, so that a 405 lists every method the path allows."""
        return [
            Route("/links", _by_method(GET=self.list, POST=self.create), methods=["GET", "POST"]),
            Route("/links/bulk", self.bulk, methods=["POST"]),
            Route(
                "/links/{code}",
                _by_method(GET=self.get, PATCH=self.patch, DELETE=self.delete),
                methods=["GET", "PATCH", "DELETE"],
            ),
            Route("/links/{code}/stats", self.stats, methods=["GET"]),
        ]

    def link_json(self, row: asyncpg.Record) -> dict[str, Any]:
        return {
            "code": row["code"],
            "short_url": f"{self.base_url}/{row['code']}",
            "url": row["url"],
            "redirect_type": row["redirect_type"],
            "expires_at": _timestamp(row["expires_at"]),
            "expired_url": row["expired_url"],
            "forward_query": row["forward_query"],
            "tags": list(row["tags"]),
            "disabled": row["disabled"],
            "clicks": row["clicks"],
            "human_clicks": row["human_clicks"],
            "created_at": _timestamp(row["created_at"]),
            "updated_at": _timestamp(row["updated_at"]),
        }

    async def _invalidate(self, codes: list[str]) -> None:
        """After a delete committed: every worker forgets the codes (never raises)."""
        if len(codes) == 1:
            await self.resources.links.invalidate(codes[0])
        elif codes:
            await self.resources.links.invalidate_many(codes)

    async def _publish(self, rows: list[asyncpg.Record], account_id: int) -> None:
        """After a create or an edit committed: every worker forgets the codes, and their records
        go into Redis (never raises)."""
        if rows:
            records = [link_record(row, account_id) for row in rows]
            await self.resources.links.invalidate_many([r.code for r in records], records)

    async def create(self, request: Request) -> Response:
        key = require(request, "links:write")
        link = inputs.new_link(
            await inputs.json_body(request), self.reserved, allow_private_targets=self.allow_private
        )
        [result] = await queries.insert_links(self.pg, key.account_id, [link], self.reserved)
        if isinstance(result, Problem):
            raise result
        await self._publish([result], key.account_id)
        location = f"{request.scope.get('root_path', '')}/links/{result['code']}"
        return json_response(self.link_json(result), 201, {"Location": location})

    async def bulk(self, request: Request) -> Response:
        key = require(request, "links:write")
        items = inputs.bulk_items(await inputs.json_body(request))
        results: list[dict[str, Any] | None] = [None] * len(items)
        valid: list[tuple[int, inputs.NewLink]] = []
        for index, item in enumerate(items):
            try:
                link = inputs.new_link(
                    item, self.reserved, allow_private_targets=self.allow_private
                )
                valid.append((index, link))
            except Problem as problem:
                results[index] = self._item_problem(index, problem, request)
        stored = await queries.insert_links(
            self.pg, key.account_id, [link for _, link in valid], self.reserved
        )
        created: list[asyncpg.Record] = []
        for (index, _), outcome in zip(valid, stored, strict=True):
            if isinstance(outcome, Problem):
                results[index] = self._item_problem(index, outcome, request)
            else:
                created.append(outcome)
                results[index] = {"index": index, "status": 201, "link": self.link_json(outcome)}
        await self._publish(created, key.account_id)
        return json_response(
            {"created": len(created), "failed": len(items) - len(created), "results": results}
        )

    @staticmethod
    def _item_problem(index: int, problem: Problem, request: Request) -> dict[str, Any]:
        body = problem.body(f"{request.url.path}#/links/{index}")
        return {"index": index, "status": problem.status, "problem": body}

    async def get(self, request: Request) -> Response:
        key = require(request, "links:read")
        code = validation.path_code(request.path_params["code"])
        row = await queries.fetch_link(self.pg, key.account_id, code)
        if row is None:
            raise _not_found(code)
        return json_response(self.link_json(row))

    async def patch(self, request: Request) -> Response:
        key = require(request, "links:write")
        code = validation.path_code(request.path_params["code"])
        values = inputs.link_patch(
            await inputs.json_body(request), allow_private_targets=self.allow_private
        )
        row = await queries.update_link(self.pg, key.account_id, code, values)
        if row is None:
            raise _not_found(code)
        await self._publish([row], key.account_id)
        return json_response(self.link_json(row))

    async def delete(self, request: Request) -> Response:
        key = require(request, "links:write")
        code = validation.path_code(request.path_params["code"])
        if not await queries.delete_link(self.pg, key.account_id, code):
            raise _not_found(code)
        await self._invalidate([code])
        return Response(status_code=204)

    async def list(self, request: Request) -> Response:
        key = require(request, "links:read")
        limit = _int_param(request, "limit", DEFAULT_PAGE, 1, MAX_PAGE)
        cursor = request.query_params.get("cursor")
        before_id = decode_cursor(cursor) if cursor else None
        tag = request.query_params.get("tag")
        if tag is not None:
            tag = validation.tag(tag)
        rows = await queries.list_links(self.pg, key.account_id, limit + 1, before_id, tag)
        page = rows[:limit]
        next_cursor = encode_cursor(page[-1]["id"]) if len(rows) > limit else None
        return json_response(
            {"items": [self.link_json(row) for row in page], "next_cursor": next_cursor}
        )

    async def stats(self, request: Request) -> Response:
        key = require(request, "stats:read")
        code = validation.path_code(request.path_params["code"])
        days = _int_param(request, "days", DEFAULT_STATS_DAYS, 1, MAX_STATS_DAYS)
        row = await queries.fetch_link(self.pg, key.account_id, code)
        if row is None:
            raise _not_found(code)
        last = datetime.now(UTC).date()
        first: date = last - timedelta(days=days - 1)
        daily = await queries.daily_clicks(self.pg, row["id"], first, last)
        return json_response(
            {
                "code": code,
                "clicks": row["clicks"],
                "human_clicks": row["human_clicks"],
                "from": first.isoformat(),
                "to": last.isoformat(),
                "daily": [
                    {
                        "day": d["day"].isoformat(),
                        "clicks": d["clicks"],
                        "human_clicks": d["human_clicks"],
                    }
                    for d in daily
                ],
            }
        )
