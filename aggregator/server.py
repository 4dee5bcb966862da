"""A tiny HTTP server for probes and scrapes: ``/metrics``, ``/healthz``, ``/readyz``.

Plain ``asyncio.start_server``, one request per connection: the only clients are Prometheus and the
kubelet, so a framework would be all weight. Errors answer RFC 9457 problem+json.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import orjson
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

log = logging.getLogger("linkedge.aggregator")

_REASONS = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    503: "Service Unavailable",
}
_JSON = "application/json"
_PROBLEM = "application/problem+json"

ReadinessCheck = Callable[[], Awaitable[str | None]]  # None when ready, else the reason it is not


def _problem(status: int, detail: str) -> tuple[int, str, bytes]:
    body = {"type": "about:blank", "title": _REASONS[status], "status": status, "detail": detail}
    return status, _PROBLEM, orjson.dumps(body)


class ProbeServer:
    """Serves the three endpoints on ``host:port`` (0: a free port, reported by ``port``)."""

    def __init__(self, host: str, port: int, ready: ReadinessCheck) -> None:
        self.host = host
        self.port = port
        self.ready = ready
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._handle, self.host, self.port)
        self.port = int(self._server.sockets[0].getsockname()[1])
        return self.port

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            status, content_type, body = await self._answer(head)
            method = head.split(b" ", 1)[0]
            writer.write(
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
            )
            if method != b"HEAD":
                writer.write(body)
            await writer.drain()
        except (
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
            TimeoutError,
            ConnectionError,
        ):
            pass
        finally:
            writer.close()

    async def _answer(self, head: bytes) -> tuple[int, str, bytes]:
        parts = head.split(b"\r\n", 1)[0].split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/"):
            return _problem(400, "malformed request line")
        method, target = parts[0], parts[1].split(b"?", 1)[0]
        if target not in (b"/metrics", b"/healthz", b"/readyz"):
            return _problem(404, "only /metrics, /healthz and /readyz are served here")
        if method not in (b"GET", b"HEAD"):
            return _problem(405, "only GET and HEAD")
        if target == b"/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(REGISTRY)
        if target == b"/healthz":
            return 200, _JSON, b'{"status":"ok"}'
        reason = await self.ready()
        if reason is not None:
            return _problem(503, reason)
        return 200, _JSON, b'{"status":"ready"}'
