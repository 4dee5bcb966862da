"""The OpenAPI document describes every route of the mount, with bodies and problem responses."""

from __future__ import annotations

import re
from types import SimpleNamespace
from typing import Any

import httpx
import hypothesis
import orjson
import pytest
import redis.asyncio as aioredis
from hypothesis import strategies as st

from edge.api import API_PREFIX, api_routes, openapi, problems, validation
from edge.api.problems import Problem
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


def test_the_served_document_is_the_spec(edge: httpx.Client) -> None:
    """tests/test_schemathesis.py builds its tests from ``openapi.spec`` before any edge runs."""
    assert edge.get(f"{API}/openapi.json").json() == orjson.loads(orjson.dumps(openapi.spec(API)))


def test_operations_are_named_and_created_links_lead_on() -> None:
    document = openapi.spec(API)
    operations = [
        operation
        for item in document["paths"].values()
        for method, operation in item.items()
        if method != "parameters"
    ]
    names = [operation["operationId"] for operation in operations]
    assert len(set(names)) == len(names) == 10
    created = document["paths"]["/links"]["post"]["responses"]["201"]
    assert created["headers"]["Location"]["$ref"].endswith("/Location")
    assert {link["operationId"] for link in created["links"].values()} <= set(names)
    assert {"getLink", "updateLink", "deleteLink"} <= {
        link["operationId"] for link in created["links"].values()
    }
    problem = document["components"]["schemas"]["Problem"]["properties"]
    assert problem["errors"]["maxItems"] == problems.MAX_FIELD_ERRORS
    assert problem["errors_omitted"] == {
        "type": "integer",
        "minimum": 1,
        "description": problem["errors_omitted"]["description"],
    }


def test_the_character_classes_are_the_validations_own() -> None:
    """Every character but the surrogates (which no JSON text carries): the targets' and the
    tags' classes let through exactly what ``validation.has_refused_char`` does (a tag: and the
    space), and the non-ASCII class the same less ASCII."""
    target = re.compile(openapi._allowed_class())
    non_ascii = re.compile(openapi._allowed_class(ascii_too=False))
    tag = re.compile(openapi._allowed_class(space=True))
    for code in range(0x110000):
        if 0xD800 <= code <= 0xDFFF:
            continue
        ch = chr(code)
        allowed = not validation.has_refused_char(ch)
        assert bool(target.fullmatch(ch)) == allowed, hex(code)
        assert bool(non_ascii.fullmatch(ch)) == (allowed and code > 0x7F), hex(code)
        assert bool(tag.fullmatch(ch)) == (allowed or ch == " "), hex(code)


ACCEPTED_TARGETS = [
    "https://example.com",
    "HTTP://Example.COM/Path?x=1#frag",
    "http://bücher.example/",
    "https://BÜCHER.example/ä?q=ü#ö",
    "https://example.com:8443/a",
    "https://example.com:/a",
    "http://[2606:4700:4700::ABCD]:8080/",
    "http://93.184.215.14/x",
    "https://my_host.example/",
    "https://example.com./a%20b?",
    "https://例え.jp/パス",
    "https://" + ".".join(["a" * 63] * 3) + "." + "b" * 61 + "/",
]
REFUSED_FORMS = [
    "javascript:alert(1)",
    "//example.com",
    "https://example.com/\n",
    "https://example.com\n",
    "https://exa mple.com/",
    "https://user@example.com/",
    "https://" + "a" * 64 + ".com/",
    "https://" + ".".join(["a" * 63] * 4) + "/",
    "https://example.com/\u200b",
    "http://a..b/",
]


@pytest.mark.parametrize("target", ACCEPTED_TARGETS)
def test_every_accepted_target_matches_the_pattern(target: str) -> None:
    validation.target_url(target, allow_private=True)
    assert re.search(openapi.target_pattern(), target)


@pytest.mark.parametrize("target", REFUSED_FORMS)
def test_targets_the_pattern_refuses_are_refused(target: str) -> None:
    assert not re.search(openapi.target_pattern(), target)
    with pytest.raises(Problem):
        validation.target_url(target, allow_private=True)


_URLISH = st.builds(
    "".join,
    st.lists(
        st.one_of(
            st.sampled_from(["http", "HTTPS", "://", "/", ".", ":", "@", "[", "]", "?", "#"]),
            st.sampled_from(["a", "0", "-", "_", "ü", "例", "\u0301", "%", "\\", "80", "::1"]),
            st.text(max_size=3),
        ),
        max_size=12,
    ),
)


@hypothesis.settings(max_examples=300, deadline=None)
@hypothesis.given(suffix=_URLISH, scheme=st.sampled_from(["http://", "https://", "HtTp://", ""]))
def test_what_the_api_accepts_the_patterns_allow(scheme: str, suffix: str) -> None:
    """The document never refuses a target or tag the API accepts (schemathesis's check that
    invalid data is refused relies on it)."""
    value = scheme + suffix
    try:
        validation.target_url(value, allow_private=True)
    except Problem:
        pass
    else:
        assert re.search(openapi.target_pattern(), value), value
    try:
        validation.tag(suffix)
    except Problem:
        assert not re.search(openapi.tag_pattern(), suffix) or not 1 <= len(suffix) <= 64
    else:
        assert re.search(openapi.tag_pattern(), suffix), suffix


def test_expires_at_pattern_holds_the_offset_bound() -> None:
    pattern = re.compile(
        openapi.SCHEMAS["LinkCreate"]["properties"]["expires_at"]["anyOf"][0]["pattern"]
    )
    for value in [
        "2030-01-01T00:00:00Z",
        "2030-01-01 00:00:00.123456789-15:59",
        "2030-01-01t00:00:00z",
    ]:
        validation.expires_at(value)
        assert pattern.search(value)
    for value in [
        "2030-01-01T00:00:00-16:00",
        "2030-01-01T00:00:00+15:60",
        "2030-01-01T00:00:00Z\n",
    ]:
        with pytest.raises(Problem):
            validation.expires_at(value)
        assert not pattern.search(value)
