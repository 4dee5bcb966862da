"""Reference (1): the ceiling for any Granian app here.

A bare raw-ASGI app that answers every request with a constant 302: no routing, no I/O, headers
built once at import. Served by the same Granian flags as the edge, one worker on the edge's core.
"""

from __future__ import annotations

from typing import Any

_START = {
    "type": "http.response.start",
    "status": 302,
    "headers": [
        (b"location", b"https://example.com/landing/page"),
        (b"content-length", b"0"),
    ],
}
_BODY = {"type": "http.response.body", "body": b""}


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send(_START)
        await send(_BODY)
    elif scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await send({"type": "lifespan.shutdown.complete"})
                return
