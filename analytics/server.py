"""The analytics HTTP port: /metrics, /healthz, /readyz and the fixed read queries.

A Starlette app served in-process (``linkedge.httpserve``): it must run in the same process as an
embedded ClickHouse engine. There is no SQL passthrough: every query is fixed text (the analytics
query's from the fixed maps of ``linkedge.analyticssql``) with bound parameters.

- ``GET /internal/daily-counts?since=YYYY-MM-DD``: per link per UTC day, distinct clicks and human
  clicks (what ``linkedge reconcile`` compares with Postgres).
- ``GET /internal/link-counts?link_id=N``: one link counted every way (rows, FINAL, distinct,
  hourly rollup), for checking that replays did not duplicate anything.
- ``GET /internal/hourly?link_id=N&since=YYYY-MM-DD``: the hourly series of a link from the rollup.
- ``POST /internal/query``: an analytics query for the edge's API when ClickHouse is the embedded
  engine: ``{"account_id", "link_id" (or null), "tags": [[link_id, [tag, ...]], ...], "query"}``,
  the query checked again here (``linkedge.analyticsquery``), answered as the API answers it.

Every ``/internal/*`` route requires ``Authorization: Bearer ANALYTICS_TOKEN`` (401 otherwise, and
always when the token is empty); ``/metrics``, ``/healthz`` and ``/readyz`` are open.

Bad input answers a 400 problem document (a refused analytics query a 422 one listing the fields),
a failing ClickHouse a 503 one, never a 500.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.datastructures import QueryParams
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from analytics.writer import ClickHouseWriter
from linkedge import analyticsquery, analyticssql
from linkedge.httpserve import BearerToken, HttpServer, json_response, probe_app, problem

log = logging.getLogger("linkedge.analytics")

QUERY_TIMEOUT_S = 30.0
ANALYTICS_QUERY_TIMEOUT_S = 10.0  # the API's queries: the edge waits a little longer than this
Handler = Callable[[QueryParams], Awaitable[Any]]


class BadRequest(ValueError):
    pass


def _one(query: QueryParams, name: str) -> str:
    values = query.getlist(name)
    if len(values) != 1:
        raise BadRequest(f"query parameter {name!r} is required once")
    return values[0]


def _date(query: QueryParams, name: str) -> datetime.date:
    raw = _one(query, name)
    try:
        return datetime.date.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a date YYYY-MM-DD, got {raw!r}") from exc


def _link_id(query: QueryParams) -> int:
    raw = _one(query, "link_id")
    if not (raw.isascii() and raw.isdigit()) or int(raw) >= 2**63:
        raise BadRequest(f"link_id must be a non-negative integer, got {raw!r}")
    return int(raw)


class AnalyticsServer:
    def __init__(
        self,
        writer: ClickHouseWriter,
        redis_ready: Callable[[], Awaitable[bool]],
        *,
        token: str,
    ) -> None:
        self.writer = writer
        self.redis_ready = redis_ready
        self.port = 0
        self._http: HttpServer | None = None
        internal = [
            Route("/daily-counts", self._reader(self._daily_counts), methods=["GET"]),
            Route("/link-counts", self._reader(self._link_counts), methods=["GET"]),
            Route("/hourly", self._reader(self._hourly), methods=["GET"]),
            Route("/query", self._analytics_query, methods=["POST"]),
        ]
        self.app = probe_app(
            self._readyz,
            [
                Mount(
                    "/internal", routes=internal, middleware=[Middleware(BearerToken, token=token)]
                )
            ],
        )

    async def start(self, host: str, port: int) -> int:
        self._http = HttpServer(self.app, host, port)
        self.port = await self._http.start()
        log.info("analytics listening on http://%s:%d", host, self.port, extra={"port": self.port})
        return self.port

    async def close(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _reader(self, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        """A route running ``handler``: 400 on bad parameters, 503 when ClickHouse fails."""

        async def endpoint(request: Request) -> Response:
            try:
                return json_response(await handler(request.query_params))
            except BadRequest as exc:
                return problem(400, str(exc))
            except Exception as exc:  # noqa: BLE001 - ClickHouse down or failing: say so, not a 500
                name = type(exc).__name__
                log.warning("analytics query %s failed: %s: %s", request.url.path, name, exc)
                return problem(503, f"ClickHouse query failed: {name}")

        return endpoint

    async def _query(self, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wait_for(asyncio.to_thread(func, *args), QUERY_TIMEOUT_S)

    async def _readyz(self, request: Request) -> Response:
        redis_ok = await self.redis_ready()
        try:
            clickhouse_ok = bool(await asyncio.wait_for(asyncio.to_thread(self.writer.ping), 5))
        except TimeoutError:
            clickhouse_ok = False
        checks = {
            "redis": "ok" if redis_ok else "down",
            "clickhouse": "ok" if clickhouse_ok else "down",
        }
        ready = redis_ok and clickhouse_ok
        return json_response(
            {"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503
        )

    async def _daily_counts(self, query: QueryParams) -> dict[str, Any]:
        since = _date(query, "since")
        rows = await self._query(self.writer.daily_counts, since)
        return {"since": since.isoformat(), "rows": rows}

    async def _link_counts(self, query: QueryParams) -> dict[str, Any]:
        link_id = _link_id(query)
        return {"link_id": link_id, **await self._query(self.writer.link_counts, link_id)}

    async def _hourly(self, query: QueryParams) -> dict[str, Any]:
        link_id, since = _link_id(query), _date(query, "since")
        series = await self._query(self.writer.hourly, link_id, since)
        return {"link_id": link_id, "since": since.isoformat(), "series": series}

    async def _analytics_query(self, request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
            scope = _scope(body)
            query = analyticsquery.parse(body.get("query"))
        except (orjson.JSONDecodeError, BadRequest) as exc:
            return problem(400, f"not an analytics query request: {exc}")
        except analyticsquery.QueryError as exc:
            return problem(422, str(exc), errors=exc.errors)
        try:
            answer = await asyncio.wait_for(
                asyncio.to_thread(
                    analyticssql.run,
                    self.writer,
                    query,
                    scope,
                    timeout_s=ANALYTICS_QUERY_TIMEOUT_S,
                ),
                ANALYTICS_QUERY_TIMEOUT_S + 1,
            )
        except Exception as exc:  # noqa: BLE001 - ClickHouse failing or too slow: a 503
            log.warning("analytics query failed: %s: %s", type(exc).__name__, exc)
            return problem(503, f"ClickHouse query failed: {type(exc).__name__}")
        return json_response(answer)


def _scope(body: Any) -> analyticssql.Scope:
    """Whose clicks: the account (and link) the edge authenticated, with its links' tags."""
    if not isinstance(body, dict):
        raise BadRequest("the body is a JSON object")
    account, link, tags = body.get("account_id"), body.get("link_id"), body.get("tags", [])
    if type(account) is not int or account < 1:
        raise BadRequest("account_id must be a positive integer")
    if link is not None and (type(link) is not int or link < 1):
        raise BadRequest("link_id must be a positive integer or null")
    if not isinstance(tags, list) or not all(
        isinstance(item, list)
        and len(item) == 2
        and type(item[0]) is int
        and isinstance(item[1], list)
        and all(isinstance(tag, str) for tag in item[1])
        for item in tags
    ):
        raise BadRequest("tags must be a list of [link_id, [tag, ...]]")
    return analyticssql.Scope(account, link, [(item[0], item[1]) for item in tags])
