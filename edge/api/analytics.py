"""The analytics routes of ``/api/v1``: queries over the account's clicks in ClickHouse.

- ``POST /analytics/query``: a query body (``linkedge.analyticsquery``), over the key's account.
- ``GET /links/{code}/analytics?metrics=&dimensions=&date_range=&timezone=&filters=&order_by=
  &limit=&offset=``: the same query as query parameters, restricted to one link of the account
  (404 for a code the account does not have). Lists are comma-separated; ``filters`` and
  ``order_by`` are JSON; ``date_range`` is a name or ``FROM,TO``.

Both need scope ``stats:read`` and answer JSON, or CSV with ``Accept: text/csv`` or ``format=csv``.

Where a query runs (``runner_for``): with an ``http(s)://`` ClickHouse, here, through
clickhouse-connect in a thread; with the embedded ``chdb://`` engine, which only the analytics
process can open, in analytics: the checked query goes to ``ANALYTICS_URL``/internal/query with
``ANALYTICS_TOKEN``. Either way ClickHouse unreachable, failing or slower than
``QUERY_TIMEOUT_S`` is a 503 problem, never a 500.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any, Protocol

import asyncpg
import httpx
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from edge.api import queries, validation
from edge.api.auth import require
from edge.api.deps import ApiResources
from edge.api.inputs import json_body
from edge.api.problems import Problem, invalid
from linkedge import analyticsquery, analyticssql
from linkedge.analyticsquery import Query, QueryError
from linkedge.analyticssql import Scope
from linkedge.clickhouse import connect
from linkedge.settings import Settings

log = logging.getLogger("linkedge.api")

QUERY_TIMEOUT_S = 10.0
_GRACE_S = 5.0  # on top of the query timeout, for the round trip
_TAGGED_LINKS = """
SELECT id, tags FROM links WHERE account_id = $1 AND cardinality(tags) > 0 ORDER BY id"""
_LIST_PARAMS = ("metrics", "dimensions")
_JSON_PARAMS = ("filters", "order_by")
_INT_PARAMS = ("limit", "offset")


def _unavailable(detail: str) -> Problem:
    return Problem(503, detail, headers={"Retry-After": "5"})


class Runner(Protocol):
    async def run(self, query: Query, scope: Scope) -> dict[str, Any]:
        """The answer of ``query`` within ``scope``; a 503 ``Problem`` when it cannot be had."""


class ClickHouseRunner:
    """Runs queries against an ``http(s)://`` ClickHouse (a read-only user is enough)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._client: Any = None
        self._lock = threading.Lock()

    def _query(self, query: Query, scope: Scope) -> dict[str, Any]:
        with self._lock:
            if self._client is None:
                self._client = connect(
                    self.url,
                    connect_timeout=5,
                    send_receive_timeout=QUERY_TIMEOUT_S + _GRACE_S,
                    autogenerate_session_id=False,  # one client, concurrent queries
                )
            client = self._client
        return analyticssql.run(client, query, scope, timeout_s=QUERY_TIMEOUT_S)

    async def run(self, query: Query, scope: Scope) -> dict[str, Any]:
        try:
            return await asyncio.wait_for(
                asyncio.to_thread(self._query, query, scope), QUERY_TIMEOUT_S + _GRACE_S
            )
        except Exception as exc:  # noqa: BLE001 - unreachable, failing or too slow: a 503
            log.warning("analytics query failed: %s: %s", type(exc).__name__, exc)
            raise _unavailable("ClickHouse did not answer the query; retry shortly") from None


class AnalyticsPortRunner:
    """Sends checked queries to the analytics process, which holds the embedded engine."""

    def __init__(self, analytics_url: str, token: str) -> None:
        self.endpoint = analytics_url.rstrip("/") + "/internal/query"
        self.headers = {"Authorization": f"Bearer {token}"}

    async def run(self, query: Query, scope: Scope) -> dict[str, Any]:
        body = {
            "account_id": scope.account_id,
            "link_id": scope.link_id,
            "tags": [[link_id, list(tags)] for link_id, tags in scope.tags],
            "query": query.canonical(),
        }
        try:
            async with httpx.AsyncClient(timeout=QUERY_TIMEOUT_S + _GRACE_S) as client:
                response = await client.post(self.endpoint, json=body, headers=self.headers)
        except httpx.HTTPError as exc:
            log.warning("analytics at %s did not answer: %r", self.endpoint, exc)
            raise _unavailable("the analytics service did not answer; retry shortly") from None
        if response.status_code == 200:
            answer: dict[str, Any] = response.json()
            return answer
        if response.status_code == 422:
            problem = response.json()
            raise Problem(422, problem.get("detail", "invalid query"), errors=problem["errors"])
        if response.status_code == 401:
            log.error("analytics refused ANALYTICS_TOKEN: give the edge the analytics process's")
        else:
            log.warning("analytics answered %d: %s", response.status_code, response.text[:300])
        raise _unavailable("the analytics service could not answer the query; retry shortly")


class NoRunner:
    """No ClickHouse this edge can reach: every query is a 503 saying what to configure."""

    def __init__(self, detail: str) -> None:
        self.detail = detail

    async def run(self, query: Query, scope: Scope) -> dict[str, Any]:
        raise _unavailable(self.detail)


def runner_for(settings: Settings) -> Runner:
    url = settings.clickhouse_url.get()
    if url.startswith(("http://", "https://")):
        return ClickHouseRunner(url)
    if url.startswith("chdb:") and settings.analytics_url:
        return AnalyticsPortRunner(settings.analytics_url, settings.analytics_token.get())
    if url.startswith("chdb:"):
        return NoRunner("analytics queries need ANALYTICS_URL with the embedded ClickHouse engine")
    return NoRunner("analytics queries need CLICKHOUSE_URL")


def _parse(body: object) -> Query:
    try:
        return analyticsquery.parse(body)
    except QueryError as exc:
        raise Problem(422, str(exc), errors=exc.errors) from None


def _params_body(request: Request) -> dict[str, Any]:
    """The query parameters of the per-link route as a query body."""
    params = request.query_params
    body: dict[str, Any] = {}
    for name in params:
        if name == "format":
            continue
        raw = params[name]
        if name in _LIST_PARAMS:
            body[name] = [part.strip() for part in raw.split(",") if part.strip()]
        elif name in _JSON_PARAMS:
            try:
                body[name] = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise invalid(name, 'must be JSON, e.g. [["is", "country", ["FR"]]]') from None
        elif name in _INT_PARAMS:
            if not (raw.isascii() and raw.isdigit()):
                raise invalid(name, "must be a whole number")
            body[name] = int(raw)
        elif name == "date_range" and "," in raw:
            body[name] = [part.strip() for part in raw.split(",")]
        else:
            body[name] = raw
    return body


def _wants_csv(request: Request) -> bool:
    requested = request.query_params.get("format")
    if requested is not None and requested not in ("csv", "json"):
        raise invalid("format", "must be csv or json")
    if requested is not None:
        return requested == "csv"
    return "text/csv" in request.headers.get("accept", "")


class AnalyticsRoutes:
    def __init__(self, resources: ApiResources, runner: Runner | None = None) -> None:
        self.pg: asyncpg.Pool = resources.pg
        self.runner = runner or runner_for(resources.settings)

    def routes(self) -> list[Route]:
        return [
            Route("/analytics/query", self.query, methods=["POST"]),
            Route("/links/{code}/analytics", self.link, methods=["GET"]),
        ]

    async def query(self, request: Request) -> Response:
        key = require(request, "stats:read")
        csv = _wants_csv(request)
        query = _parse(await json_body(request))
        return await self._answer(query, key.account_id, None, csv)

    async def link(self, request: Request) -> Response:
        key = require(request, "stats:read")
        code = validation.path_code(request.path_params["code"])
        csv = _wants_csv(request)
        query = _parse(_params_body(request))
        row = await queries.fetch_link(self.pg, key.account_id, code)
        if row is None:
            raise Problem(404, f"no link with code {code!r} in this account")
        return await self._answer(query, key.account_id, int(row["id"]), csv)

    async def _answer(
        self, query: Query, account_id: int, link_id: int | None, csv: bool
    ) -> Response:
        tags: list[tuple[int, list[str]]] = []
        if "tag" in query.dimensions or any(f.dimension == "tag" for f in query.filters):
            rows = await self.pg.fetch(_TAGGED_LINKS, account_id)
            tags = [(int(row["id"]), list(row["tags"])) for row in rows]
        answer = await self.runner.run(query, Scope(account_id, link_id, tags))
        if csv:
            return Response(analyticssql.to_csv(answer), media_type="text/csv; charset=utf-8")
        return Response(orjson.dumps(answer), media_type="application/json")
