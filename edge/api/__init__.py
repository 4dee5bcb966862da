"""The Starlette app behind every non-redirect path: probes, metrics and the ``/api/v1`` API.

Middleware (pure ASGI, outermost first) sits on the ``/api/v1`` mount only, never in front of the
probes or the redirect: request context (id, log line, metrics), API key auth, per-key rate limit,
body cap, then the problem+json exception handlers.
"""

from __future__ import annotations

import orjson
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.exceptions import ExceptionMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from edge.api import openapi, problems
from edge.api.analytics import AnalyticsRoutes
from edge.api.auth import AuthMiddleware
from edge.api.dashboard import dashboard_routes
from edge.api.deps import ApiResources
from edge.api.gcra import Limiter
from edge.api.health import HealthRoutes
from edge.api.links import LinkRoutes
from edge.api.middleware import BodyLimitMiddleware, RequestContextMiddleware
from edge.api.ratelimit import RateLimitMiddleware
from edge.clickinfo import trusted_networks

API_PREFIX = "/api/v1"
PUBLIC_PATHS = frozenset({"/openapi.json"})


def api_routes(resources: ApiResources, reserved: frozenset[str]) -> list[Route]:
    """The routes of the ``/api/v1`` mount (relative paths)."""
    document = orjson.dumps(openapi.spec(API_PREFIX))

    async def openapi_json(request: Request) -> Response:
        return Response(document, media_type="application/json")

    return [
        *LinkRoutes(resources, reserved).routes(),
        *AnalyticsRoutes(resources).routes(),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]


def build_api(resources: ApiResources, reserved: frozenset[str]) -> Starlette:
    """The app ``edge.app`` sends every path that is not a short code to."""
    settings = resources.settings
    routes = api_routes(resources, reserved)
    handlers = {
        problems.Problem: problems.handle_problem,
        HTTPException: problems.handle_http_exception,
        **{error: problems.handle_store_unavailable for error in problems.STORE_ERRORS},
    }
    mount = Mount(
        API_PREFIX,
        routes=routes,
        middleware=[
            Middleware(RequestContextMiddleware, prefix=API_PREFIX, routes=routes),
            Middleware(
                AuthMiddleware,
                pg=resources.pg,
                public=PUBLIC_PATHS,
                lookups=Limiter(
                    resources.redis,
                    settings.auth_lookups_per_minute,
                    settings.auth_lookup_burst,
                ),
                trusted=trusted_networks(settings.trusted_proxies),
            ),
            Middleware(
                RateLimitMiddleware,
                redis=resources.redis,
                per_minute=settings.rate_limit_per_minute,
                burst=settings.rate_limit_burst,
            ),
            Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes),
            Middleware(ExceptionMiddleware, handlers=handlers),
        ],
    )
    return Starlette(
        routes=[*HealthRoutes(resources).routes(), *dashboard_routes(), mount],
        exception_handlers={HTTPException: problems.handle_http_exception},
    )
