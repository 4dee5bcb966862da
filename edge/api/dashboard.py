"""The dashboard at ``/dashboard/``: static files from ``edge/dashboard``, no build step.

Every file is read once, when the app is built. The assets are served under one fingerprint of
the whole directory (``/dashboard/assets/<digest>/app.js``), so an ES module's relative imports
resolve to files of the same version, and any change to any file gives every asset a new URL:
assets are cached for a year (``immutable``), the HTML is ``no-cache``. Every dashboard answer,
a 404 included, carries the security headers (a strict CSP: no inline script or style, nothing
from another origin).

The page talks only to ``/api/v1`` with the key the user types in; nothing here reads a key.
"""

from __future__ import annotations

import hashlib
import mimetypes
from pathlib import Path

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

ROOT = Path(__file__).resolve().parent.parent / "dashboard"
PREFIX = "/dashboard"
ASSETS_PLACEHOLDER = b"{{assets}}"

CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
ASSET_CACHE = "public, max-age=31536000, immutable"
TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".txt": "text/plain; charset=utf-8",
}


class Dashboard:
    """The dashboard's files, read from ``root`` once, and its routes."""

    def __init__(self, root: Path = ROOT) -> None:
        files = {
            path.relative_to(root).as_posix(): path.read_bytes()
            for path in sorted(root.rglob("*"))
            if path.is_file() and path.name != "index.html"
        }
        digest = hashlib.sha256()
        for name, body in files.items():
            digest.update(f"{name}\0{len(body)}\0".encode())
            digest.update(body)
        index = (root / "index.html").read_bytes()
        digest.update(index)
        self.version = digest.hexdigest()[:16]
        self.assets = files
        self.asset_base = f"{PREFIX}/assets/{self.version}"
        self.index = index.replace(ASSETS_PLACEHOLDER, self.asset_base.encode())

    def routes(self) -> list[Route]:
        return [
            Route(PREFIX, self.to_index, methods=["GET", "HEAD"]),
            Route(f"{PREFIX}/", self.page, methods=["GET", "HEAD"]),
            Route(
                f"{PREFIX}/assets/{{version}}/{{name:path}}", self.asset, methods=["GET", "HEAD"]
            ),
            Route(f"{PREFIX}/{{rest:path}}", self.not_found),
        ]

    async def to_index(self, request: Request) -> Response:
        return RedirectResponse(f"{PREFIX}/", status_code=308, headers=SECURITY_HEADERS)

    async def page(self, request: Request) -> Response:
        return Response(
            self.index,
            media_type="text/html; charset=utf-8",
            headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"},
        )

    async def not_found(self, request: Request) -> Response:
        return Response(
            b"not found\n",
            status_code=404,
            media_type="text/plain; charset=utf-8",
            headers={**SECURITY_HEADERS, "Cache-Control": "no-store"},
        )

    async def asset(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        body = self.assets.get(name)
        if body is None or request.path_params["version"] != self.version:
            # An old version's URL after an upgrade, or no such file: never cached.
            return await self.not_found(request)
        suffix = Path(name).suffix
        media_type = (
            TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"
        )
        return Response(
            body, media_type=media_type, headers={**SECURITY_HEADERS, "Cache-Control": ASSET_CACHE}
        )


def dashboard_routes() -> list[Route]:
    """The routes of ``/dashboard`` (mounted next to the probes, outside the API's middleware)."""
    return Dashboard().routes()
