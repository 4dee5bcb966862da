"""The OpenAPI document describes every route of the mount, with bodies and problem responses."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import httpx
import redis.asyncio as aioredis

from edge.api import API_PREFIX, api_routes
from linkedge.settings import Settings

API = "/api/v1"


def resolve(document: dict[str, Any], node: Any) -> None:
    """Fail on any $ref that does not point into the document."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        if ref is not None:
            target: Any = document
            for part in ref.removeprefix("#/").split("/"):
                target = target[part]
        for value in node.values():
            resolve(document, value)
    elif isinstance(node, list):
        for value in node:
            resolve(document, value)


def test_every_route_is_described(edge: httpx.Client) -> None:
    document = edge.get(f"{API}/openapi.json").json()
    assert document["openapi"] == "3.1.0"
    assert document["servers"] == [{"url": API_PREFIX}]
    resources = SimpleNamespace(settings=Settings(), pg=None, redis=aioredis.Redis())
    routes = api_routes(resources, frozenset({"api"}))
    assert routes
    for route in routes:
        path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route.path)
        described = document["paths"].get(path)
        assert described is not None, f"{path} is not in openapi.json"
        for method in (route.methods or set()) - {"HEAD"}:
            assert method.lower() in described, f"{method} {path} is not in openapi.json"
    resolve(document, document)


def test_operations_carry_bodies_and_problems(edge: httpx.Client) -> None:
    document = edge.get(f"{API}/openapi.json").json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters" or path == "/openapi.json":
                continue
            responses = operation["responses"]
            for status in ("401", "403", "429"):
                assert "application/problem+json" in responses[status]["content"], (
                    method,
                    path,
                    status,
                )
            assert any(status.startswith("2") for status in responses)
            if method in {"post", "patch"}:
                assert operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
                for status in ("413", "415", "422"):
                    assert status in responses, (method, path, status)
    link = document["components"]["schemas"]["Link"]["properties"]
    assert {"clicks", "human_clicks", "short_url", "code", "url"} <= set(link)
    problem = document["components"]["schemas"]["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "instance"}
