"""Bad input to the link API: the right RFC 9457 problem, never a 500, and nothing stored."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

import httpx
import pytest

from tests.conftest import Account, Db

API = "/api/v1"
PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["type"].startswith("https://") and body["title"] and body["detail"]
    assert unquote(body["instance"]) == unquote(
        response.request.url.raw_path.decode().split("?")[0]
    )
    return body


def links_of(db: Db, who: Account) -> int:
    return int(
        db.fetchval(
            """SELECT count(*) FROM links l JOIN api_keys k ON k.account_id = l.account_id
               WHERE k.id = $1""",
            who.key_id,
        )
    )


HOSTILE_URLS = [
    "javascript:alert(1)",
    "data:text/html;base64,PHNjcmlwdD4=",
    "http://exa mple.com",
    "http://example.com/\r\nSet-Cookie:x",
    "http:///path",
    "https://example.com/" + "a" * 3000,
    "//example.com",
    "https://example.com\t",
    "https://user:pass@example.com/",
    "https://example.com:70000/",
    "",
]


@pytest.mark.parametrize("url", HOSTILE_URLS)
def test_hostile_urls_are_422_and_store_nothing(
    edge: httpx.Client, account: Callable[..., Account], db: Db, url: str
) -> None:
    who = account()
    body = assert_problem(edge.post(f"{API}/links", json={"url": url}, headers=who.headers), 422)
    assert body["errors"][0]["field"] == "url"
    expired = edge.post(
        f"{API}/links",
        json={"url": "https://example.com/", "expired_url": url},
        headers=who.headers,
    )
    assert assert_problem(expired, 422)["errors"][0]["field"] == "expired_url"
    assert links_of(db, who) == 0


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "https://example.com/", "code": "ab"}, "code"),
        ({"url": "https://example.com/", "code": "bad/code"}, "code"),
        ({"url": "https://example.com/", "code": "a" * 65}, "code"),
        ({"url": "https://example.com/", "code": "healthz"}, "code"),
        ({"url": "https://example.com/", "code": "API"}, "code"),
        ({"url": "https://example.com/", "code": "favicon.ico"}, "code"),
        ({"url": "https://example.com/", "redirect_type": 303}, "redirect_type"),
        ({"url": "https://example.com/", "redirect_type": "301"}, "redirect_type"),
        ({"url": "https://example.com/", "expires_at": "next week"}, "expires_at"),
        ({"url": "https://example.com/", "expires_at": "2030-01-01T00:00:00"}, "expires_at"),
        ({"url": "https://example.com/", "forward_query": "yes"}, "forward_query"),
        ({"url": "https://example.com/", "tags": "promo"}, "tags"),
        ({"url": "https://example.com/", "tags": ["a\u0000b"]}, "tags"),
        ({"url": "https://example.com/", "tags": [1, 2]}, "tags"),
        ({"url": "https://example.com/", "unknown": 1}, "unknown"),
        ({"url": 12}, "url"),
        ({}, "url"),
        ([], "body"),
        ("https://example.com/", "body"),
        (0, "body"),
    ],
)
def test_bad_fields_are_422_naming_the_field(
    edge: httpx.Client, account: Callable[..., Account], db: Db, body: Any, field: str
) -> None:
    who = account()
    problem = assert_problem(edge.post(f"{API}/links", json=body, headers=who.headers), 422)
    assert field in [error["field"] for error in problem["errors"]]
    assert links_of(db, who) == 0


@pytest.mark.parametrize(
    "raw",
    [
        b"{",
        b'{"url": "https://example.com/",}',
        b"\xff\xfe",
        b'{"url": NaN}',
        b"[" * 5000,
        b'{"url": "https://example.com/", "redirect_type": 99999999999999999999999}',
        b"",
    ],
)
def test_malformed_json_is_422(
    edge: httpx.Client, account: Callable[..., Account], db: Db, raw: bytes
) -> None:
    who = account()
    response = edge.post(
        f"{API}/links", content=raw, headers={**who.headers, "Content-Type": "application/json"}
    )
    assert_problem(response, 422)
    assert links_of(db, who) == 0


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded"])
def test_non_json_content_type_is_415(
    edge: httpx.Client, account: Callable[..., Account], db: Db, content_type: str | None
) -> None:
    who = account()
    headers = dict(who.headers, **({"Content-Type": content_type} if content_type else {}))
    response = edge.post(
        f"{API}/links", content=b'{"url": "https://example.com/"}', headers=headers
    )
    assert "application/json" in assert_problem(response, 415)["detail"]
    assert links_of(db, who) == 0


def test_oversized_bodies_are_413(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    who = account()
    big = b'{"url": "https://example.com/", "tags": ["' + b"x" * (5 * 1024 * 1024) + b'"]}'
    headers = {**who.headers, "Content-Type": "application/json"}
    assert_problem(edge.post(f"{API}/links", content=big, headers=headers), 413)

    def chunks() -> Any:  # no Content-Length: the cap applies while reading the stream
        for start in range(0, len(big), 64 * 1024):
            yield big[start : start + 64 * 1024]

    assert_problem(edge.post(f"{API}/links", content=chunks(), headers=headers), 413)
    assert links_of(db, who) == 0


def test_a_flood_of_unknown_fields_gets_a_small_answer(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    """330,000 unknown keys (3.3 MB) once got a 45 MB answer: now 20 errors and a count."""
    who = account()
    unknown = 330_000
    keys = b",".join(b'"%x":0' % i for i in range(unknown))
    body = b'{"url": "https://example.com/", ' + keys + b"}"
    headers = {**who.headers, "Content-Type": "application/json"}
    created = edge.post(f"{API}/links", content=body, headers=headers)
    bulk = edge.post(f"{API}/links/bulk", content=b'{"links": [' + body + b"]}", headers=headers)
    assert bulk.status_code == 200, bulk.text[:500]
    for response, problem in [
        (created, assert_problem(created, 422)),
        (bulk, bulk.json()["results"][0]["problem"]),
    ]:
        assert len(response.content) < 10_000
        assert len(problem["errors"]) == 20
        assert {e["message"] for e in problem["errors"]} == {"unknown field"}
        assert problem["errors_omitted"] == unknown - 20
        assert "329995 more" in problem["detail"]
        assert "allowed fields: url, code" in problem["detail"]
    code = edge.post(f"{API}/links", json={"url": "https://example.com/"}, headers=who.headers)
    patch = edge.patch(
        f"{API}/links/{code.json()['code']}",
        content=b'{"url": "javascript:x", ' + keys + b"}",
        headers=headers,
    )
    assert len(patch.content) < 10_000
    problem = assert_problem(patch, 422)
    assert problem["errors"][0]["field"] == "url"  # bad values before unknown names
    assert (len(problem["errors"]), problem["errors_omitted"]) == (20, unknown + 1 - 20)
    assert links_of(db, who) == 1


def test_errors_are_bounded_per_bulk_item(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    who = account()
    item = {"url": "https://example.com/", **{f"x{i}": i for i in range(25)}}
    items = [item, {"url": "https://example.com/ok"}]
    response = edge.post(f"{API}/links/bulk", json={"links": items}, headers=who.headers)
    assert response.status_code == 200, response.text
    first, second = response.json()["results"]
    assert (len(first["problem"]["errors"]), first["problem"]["errors_omitted"]) == (20, 5)
    assert second["status"] == 201
    assert links_of(db, who) == 1


def test_duplicate_custom_code_is_409(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    who, other = account(), account()
    code = f"dup-{who.key_id}"
    first = edge.post(
        f"{API}/links", json={"url": "https://example.com/1", "code": code}, headers=who.headers
    )
    assert first.status_code == 201
    for taker in (who, other):
        again = edge.post(
            f"{API}/links",
            json={"url": "https://example.com/2", "code": code},
            headers=taker.headers,
        )
        assert code in assert_problem(again, 409)["detail"]
    assert db.fetchval("SELECT url FROM links WHERE code = $1", code) == "https://example.com/1"
    assert links_of(db, other) == 0


def test_unknown_codes_routes_and_methods(
    edge: httpx.Client, account: Callable[..., Account]
) -> None:
    who = account()
    assert_problem(edge.get(f"{API}/links/nosuchcode", headers=who.headers), 404)
    assert_problem(edge.get(f"{API}/links/no.such", headers=who.headers), 404)
    assert_problem(
        edge.patch(
            f"{API}/links/nosuchcode", json={"url": "https://example.com/"}, headers=who.headers
        ),
        404,
    )
    assert_problem(edge.delete(f"{API}/links/nosuchcode", headers=who.headers), 404)
    assert_problem(edge.get(f"{API}/links/nosuchcode/stats", headers=who.headers), 404)
    assert_problem(edge.get(f"{API}/nothing-here", headers=who.headers), 404)
    for raw_code in ["%ff", "%00", "a%0d%0ab", "%e2%80%ae", "x" * 65]:
        for suffix in ("", "/stats"):
            response = edge.get(f"{API}/links/{raw_code}{suffix}", headers=who.headers)
            assert response.status_code == 404
            instance = response.json()["instance"]
            assert instance.isascii() and instance.isprintable() and " " not in instance
    assert_problem(edge.get("/no/such/path"), 404)
    not_allowed = assert_problem(edge.put(f"{API}/links/abc", headers=who.headers), 405)
    assert "PATCH" in not_allowed["detail"]
    assert_problem(edge.delete(f"{API}/links", headers=who.headers), 405)


def test_bad_patches_change_nothing(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    who = account()
    created = edge.post(
        f"{API}/links", json={"url": "https://example.com/keep"}, headers=who.headers
    )
    code = created.json()["code"]
    before = db.fetch("SELECT * FROM links WHERE code = $1", code)
    for body in [
        {},
        {"url": "javascript:x"},
        {"code": "other"},
        {"redirect_type": 200},
        {"url": "https://example.com/new", "tags": "x"},
        {"nope": 1},
    ]:
        assert_problem(edge.patch(f"{API}/links/{code}", json=body, headers=who.headers), 422)
    assert_problem(
        edge.patch(
            f"{API}/links/{code}",
            content=b"{",
            headers={**who.headers, "Content-Type": "application/json"},
        ),
        422,
    )
    assert_problem(edge.patch(f"{API}/links/{code}", content=b"url=x", headers=who.headers), 415)
    assert db.fetch("SELECT * FROM links WHERE code = $1", code) == before


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "0"},
        {"limit": "201"},
        {"limit": "ten"},
        {"limit": "\u00b2"},
        {"limit": "\u0663"},
        {"cursor": "garbage"},
        {"cursor": "djE6LTE"},
        {"tag": "x" * 65},
        {"tag": "a\x00"},
    ],
)
def test_bad_list_parameters_are_422(
    edge: httpx.Client, account: Callable[..., Account], params: dict[str, str]
) -> None:
    assert_problem(edge.get(f"{API}/links", params=params, headers=account().headers), 422)


def test_bad_bulk_requests(edge: httpx.Client, account: Callable[..., Account], db: Db) -> None:
    who = account()
    for body in [
        {},
        {"links": []},
        {"links": "x"},
        [],
        {"links": [{"url": "https://example.com/"}], "x": 1},
        {"links": [{"url": "https://example.com/"}] * 1001},
    ]:
        assert_problem(edge.post(f"{API}/links/bulk", json=body, headers=who.headers), 422)
    assert links_of(db, who) == 0


def test_stats_days_parameter(edge: httpx.Client, account: Callable[..., Account]) -> None:
    who = account()
    code = edge.post(
        f"{API}/links", json={"url": "https://example.com/"}, headers=who.headers
    ).json()["code"]
    for days in ["0", "367", "x"]:
        assert_problem(
            edge.get(f"{API}/links/{code}/stats", params={"days": days}, headers=who.headers), 422
        )
    stats = edge.get(f"{API}/links/{code}/stats", params={"days": "366"}, headers=who.headers)
    assert stats.status_code == 200 and len(stats.json()["daily"]) == 366
