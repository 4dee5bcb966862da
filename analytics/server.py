"""The analytics HTTP port: /metrics, /healthz, /readyz and the fixed read queries.

A small HTTP/1.1 server on asyncio streams (GET and HEAD, one request per connection): the traffic
is a Prometheus scrape, probes and the odd ``linkedge reconcile``, and it must run in the same
process as the embedded ClickHouse engine. There is no SQL passthrough: every route runs one
fixed, parameterised query.

- ``GET /internal/daily-counts?since=YYYY-MM-DD``: per link per UTC day, distinct clicks and human
  clicks (what ``linkedge reconcile`` compares with Postgres).
- ``GET /internal/link-counts?link_id=N``: one link counted every way (rows, FINAL, distinct,
  hourly rollup), for checking that replays did not duplicate anything.
- ``GET /internal/hourly?link_id=N&since=YYYY-MM-DD``: the hourly series of a link from the rollup.

Bad input answers an RFC 9457 problem document, never a 500.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from analytics.writer import ClickHouseWriter

log = logging.getLogger("linkedge.analytics")

Reply = tuple[int, str, bytes]
_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    413: "Content Too Large",
    503: "Service Unavailable",
}
_MAX_HEAD = 16 * 1024
_QUERY_TIMEOUT_S = 30.0


class BadRequest(ValueError):
    pass


def problem(status: int, detail: str) -> Reply:
    body = {
        "type": "about:blank",
        "title": _REASONS.get(status, "Error"),
        "status": status,
        "detail": detail,
    }
    return status, "application/problem+json", orjson.dumps(body)


def _json(data: Any, status: int = 200) -> Reply:
    return status, "application/json", orjson.dumps(data)


def _one(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name)
    if not values or len(values) != 1:
        raise BadRequest(f"query parameter {name!r} is required once")
    return values[0]


def _date(query: dict[str, list[str]], name: str) -> datetime.date:
    raw = _one(query, name)
    try:
        return datetime.date.fromisoformat(raw)
    except ValueError as exc:
        raise BadRequest(f"{name} must be a date YYYY-MM-DD, got {raw!r}") from exc


def _link_id(query: dict[str, list[str]]) -> int:
    raw = _one(query, "link_id")
    if not raw.isdigit() or int(raw) >= 2**63:
        raise BadRequest(f"link_id must be a non-negative integer, got {raw!r}")
    return int(raw)


class AnalyticsServer:
    def __init__(
        self, writer: ClickHouseWriter, redis_ready: Callable[[], Awaitable[bool]]
    ) -> None:
        self.writer = writer
        self.redis_ready = redis_ready
        self._server: asyncio.Server | None = None
        self.port = 0
        self._routes: dict[str, Callable[[dict[str, list[str]]], Awaitable[Reply]]] = {
            "/metrics": self._metrics,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/internal/daily-counts": self._daily_counts,
            "/internal/link-counts": self._link_counts,
            "/internal/hourly": self._hourly,
        }

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.start_server(self._handle, host, port, limit=_MAX_HEAD)
        self.port = int(self._server.sockets[0].getsockname()[1])
        log.info("analytics listening on http://%s:%d", host, self.port, extra={"port": self.port})
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        method = "GET"
        try:
            try:
                head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            except asyncio.LimitOverrunError:
                reply = problem(413, "request head too large")
            else:
                try:
                    method, target = _request_line(head)
                except BadRequest as exc:
                    reply = problem(400, str(exc))
                else:
                    reply = await self._dispatch(method, target)
            _write(writer, reply, head_only=method == "HEAD")
            await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
            pass  # the client went away or sent garbage: nothing to answer
        finally:
            writer.close()

    async def _dispatch(self, method: str, target: str) -> Reply:
        url = urlsplit(target)
        route = self._routes.get(url.path)
        if route is None:
            return problem(404, f"no route {url.path}")
        if method not in {"GET", "HEAD"}:
            return problem(405, "only GET and HEAD")
        try:
            return await route(parse_qs(url.query, keep_blank_values=True))
        except BadRequest as exc:
            return problem(400, str(exc))
        except Exception as exc:  # noqa: BLE001 - ClickHouse down or failing: say so, not a 500
            log.warning("analytics query %s failed: %s: %s", url.path, type(exc).__name__, exc)
            return problem(503, f"ClickHouse query failed: {type(exc).__name__}")

    async def _query(self, func: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.wait_for(asyncio.to_thread(func, *args), _QUERY_TIMEOUT_S)

    async def _metrics(self, query: dict[str, list[str]]) -> Reply:
        return 200, CONTENT_TYPE_LATEST, generate_latest()

    async def _healthz(self, query: dict[str, list[str]]) -> Reply:
        return _json({"status": "ok"})

    async def _readyz(self, query: dict[str, list[str]]) -> Reply:
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
        return _json(
            {"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503
        )

    async def _daily_counts(self, query: dict[str, list[str]]) -> Reply:
        since = _date(query, "since")
        rows = await self._query(self.writer.daily_counts, since)
        return _json({"since": since.isoformat(), "rows": rows})

    async def _link_counts(self, query: dict[str, list[str]]) -> Reply:
        link_id = _link_id(query)
        return _json({"link_id": link_id, **await self._query(self.writer.link_counts, link_id)})

    async def _hourly(self, query: dict[str, list[str]]) -> Reply:
        link_id, since = _link_id(query), _date(query, "since")
        series = await self._query(self.writer.hourly, link_id, since)
        return _json({"link_id": link_id, "since": since.isoformat(), "series": series})


def _request_line(head: bytes) -> tuple[str, str]:
    line = head.split(b"\r\n", 1)[0].decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/"):
        raise BadRequest("malformed request line")
    return parts[0].upper(), parts[1]


def _write(writer: asyncio.StreamWriter, reply: Reply, *, head_only: bool) -> None:
    status, content_type, body = reply
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
        f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    writer.write(head.encode("latin-1") + (b"" if head_only else body))
