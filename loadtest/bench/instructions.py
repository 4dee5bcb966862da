"""Instructions per hot redirect, counted by callgrind: ``python -m loadtest.bench.instructions``.

Time on these shared 2-core machines wanders by tens of percent between runs; the number of
instructions a redirect takes does not (callgrind counts them, whatever else the machine does).
This runs the edge app in-process, from its ASGI entry to the two ``send`` calls (a no-op), for
a Zipf mix of ``CODES`` links in the local cache, with the click recorder encoding every click
into its batch (nothing is flushed: the Redis client is never connected), and the same for a bare
ASGI app answering a constant 302 (``reference_app``'s shape) as the reference. Each is run under
``valgrind --tool=callgrind`` twice, with ``SMALL`` and ``LARGE`` requests; the difference over
``LARGE - SMALL`` is the per-request count, start-up excluded.

It does not see what costs time without costing instructions (caches, the kernel, Granian's
threads): the A/B tool (``loadtest.bench.ab``) measures that. Optional arguments: source trees
(directories, as ``ab`` takes them) to count instead of this one. Needs valgrind.
"""

from __future__ import annotations

import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CODES = 10_000
SCOPES = 50_000
SMALL, LARGE = 20_000, 60_000
UA = (
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/120.0.0.0 Safari/537.36"
)


def _scopes() -> list[dict[str, Any]]:
    rng = random.Random(1)
    codes = rng.choices(range(CODES), weights=[1 / (rank + 1) for rank in range(CODES)], k=SCOPES)
    return [
        {
            "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "scheme": "http",
            "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 40000 + i % 64),
            "method": "GET", "root_path": "", "path": f"/bn{code:06d}", "raw_path": b"",
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8000"), (b"user-agent", UA),
                        (b"accept-language", b"en-US,en;q=0.9")],
        }
        for i, code in enumerate(codes)
    ]  # fmt: skip


def _edge_app() -> Any:
    """The edge app with its resources in memory: CODES links cached, clicks recorded."""
    import redis.asyncio as aioredis

    from edge.app import RESERVED, EdgeApp
    from edge.cache import Clock
    from edge.clicks import ClickRecorder

    try:
        from edge.resources import settle_gc
    except ImportError:  # trees from before the recorder was split by idea
        from edge.clicks import settle_gc  # type: ignore[attr-defined,no-redef]
    from edge.linkstore import LinkStore
    from edge.records import LinkRecord
    from edge.redirect import RedirectHandler, Target
    from linkedge.settings import Settings

    settings = Settings.from_env(
        {"REDIS_URL": "redis://127.0.0.1:1/0", "DATABASE_URL": "postgresql://x@127.0.0.1:1/x"}
    )
    redis = aioredis.Redis(port=1)  # never connected: nothing is looked up or flushed
    resources = type("Resources", (), {})()
    resources.clock = Clock()
    resources.links = LinkStore(
        redis, None, settings,
        lambda link: Target.of(link, permanent_max_age_s=3600), clock=resources.clock,
    )  # fmt: skip
    resources.clicks = ClickRecorder(settings, redis)
    encoder: Any = getattr(resources.clicks, "_encoder", None)
    if hasattr(encoder, "limit"):  # revisions with an open batch in the encoder: keep it open
        encoder.limit = 10**9
    resources.every_second = lambda _function: None
    for i in range(CODES):
        link = LinkRecord(id=i + 1, account_id=1, code=f"bn{i:06d}", url=f"https://example.com/{i}")
        resources.links.cache.put(link.code, resources.links.prepare(link))
    app = EdgeApp(settings)
    app.redirect = RedirectHandler(resources)
    if hasattr(app.redirect, "hot_path"):
        app.answer = app.redirect.hot_path(RESERVED)
    settle_gc()
    return app


async def _reference(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await send(_START)
        await send(_BODY)


_START = {"type": "http.response.start", "status": 302,
          "headers": [(b"location", b"https://example.com/landing/page"), (b"content-length", b"0")]}  # fmt: skip
_BODY = {"type": "http.response.body", "body": b""}


def _serve(which: str, count: int) -> None:
    """The inner run: ``count`` requests through ``which`` (``edge`` or ``reference``)."""
    app = _edge_app() if which == "edge" else _reference
    scopes = _scopes()

    async def send(message: dict[str, Any]) -> None:
        return None

    async def main() -> None:
        for i in range(count):
            coroutine = app(scopes[i % SCOPES], None, send)
            try:
                coroutine.send(None)
            except StopIteration:
                pass

    asyncio.run(main())


def _count(tree: Path, which: str, requests: int, tmp: Path) -> int:
    out = tmp / f"callgrind-{which}-{requests}"
    done = subprocess.run(
        ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
         str(Path(__file__).resolve()), "--serve", which, str(requests)],  # the tree's edge
        cwd=tree, env={**os.environ, "PYTHONPATH": str(tree), "PYTHONHASHSEED": "0"},  # same dicts
        capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    found = re.search(r"Collected : (\d+)", done.stderr)
    if done.returncode != 0 or found is None:
        raise SystemExit(f"instructions: callgrind run failed:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def per_request(tree: Path, which: str) -> float:
    with tempfile.TemporaryDirectory(prefix="linkedge-ir-") as tmp:
        small = _count(tree, which, SMALL, Path(tmp))
        large = _count(tree, which, LARGE, Path(tmp))
    return (large - small) / (LARGE - SMALL)


def main(argv: list[str]) -> int:
    if argv[:1] == ["--serve"]:
        _serve(argv[1], int(argv[2]))
        return 0
    if shutil.which("valgrind") is None:
        print("instructions: valgrind not found (apt-get install valgrind): nothing counted")
        return 0
    here = Path(__file__).resolve().parents[2]
    reference = per_request(here, "reference")
    print(f"{'bare ASGI app (reference)':32s} {reference:9,.0f} instructions per request")
    for tree in [Path(arg).resolve() for arg in argv] or [here]:
        edge = per_request(tree, "edge")
        print(f"{'edge ' + str(tree):32s} {edge:9,.0f} instructions per request "
              f"({edge / reference:.2f} x the reference)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
