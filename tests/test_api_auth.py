"""API keys, scopes and tenancy against the real edge."""

from __future__ import annotations

import time
from collections.abc import Callable

import asyncpg
import httpx
import pytest

from linkedge import apikeys
from tests.conftest import Account, Db, Stores, run
from tests.test_api_errors import assert_problem

API = "/api/v1"


def revoke(stores: Stores, key: str) -> int:
    async def go() -> int:
        conn = await asyncpg.connect(stores.database_url, timeout=10)
        try:
            return await apikeys.revoke_key(conn, key)
        finally:
            await conn.close()

    return int(run(go()))


@pytest.mark.parametrize(
    "authorization",
    [
        None,
        "",
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "lk_abc",
        "Bearer lk_not-a-real-key",
        "Bearer not-even-prefixed",
        "Bearer lk_" + "x" * 5000,
        "Bearer lk_\u00e9",
    ],
)
def test_missing_or_wrong_keys_are_401(edge: httpx.Client, authorization: str | None) -> None:
    """Raw bytes on the wire, UTF-8 included: never a 500."""
    headers = {} if authorization is None else {b"Authorization": authorization.encode()}
    response = edge.get(f"{API}/links", headers=headers)
    body = assert_problem(response, 401)
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert "Bearer lk_" in body["detail"] or "create-key" in body["detail"]


def test_revoked_key_is_refused_within_seconds(
    edge: httpx.Client, account: Callable[..., Account], stores: Stores
) -> None:
    who = account()
    for _ in range(4):  # warm both workers' key caches
        assert edge.get(f"{API}/links", headers=who.headers).status_code == 200
    assert revoke(stores, who.key) == 1
    deadline = time.monotonic() + 20
    statuses: set[int] = set()
    while time.monotonic() < deadline:
        statuses = {edge.get(f"{API}/links", headers=who.headers).status_code for _ in range(4)}
        if statuses == {401}:
            break
        time.sleep(0.25)
    assert statuses == {401}


def test_key_revoked_before_use_is_refused(
    edge: httpx.Client, account: Callable[..., Account], stores: Stores
) -> None:
    who = account()
    revoke(stores, apikeys.display_prefix(who.key))
    assert_problem(edge.get(f"{API}/links", headers=who.headers), 401)


def test_missing_scopes_are_403_naming_the_scope(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    writer = account()
    code = edge.post(
        f"{API}/links", json={"url": "https://example.com/"}, headers=writer.headers
    ).json()["code"]
    reader = account(scopes=("links:read",), name=writer.name)
    assert edge.get(f"{API}/links/{code}", headers=reader.headers).status_code == 200
    assert edge.get(f"{API}/links", headers=reader.headers).status_code == 200
    for response in [
        edge.post(f"{API}/links", json={"url": "https://example.com/x"}, headers=reader.headers),
        edge.post(
            f"{API}/links/bulk",
            json={"links": [{"url": "https://example.com/"}]},
            headers=reader.headers,
        ),
        edge.patch(
            f"{API}/links/{code}", json={"url": "https://example.com/y"}, headers=reader.headers
        ),
        edge.delete(f"{API}/links/{code}", headers=reader.headers),
    ]:
        assert "links:write" in assert_problem(response, 403)["detail"]
    assert (
        "stats:read"
        in assert_problem(edge.get(f"{API}/links/{code}/stats", headers=reader.headers), 403)[
            "detail"
        ]
    )
    stats_only = account(scopes=("stats:read",), name=writer.name)
    assert edge.get(f"{API}/links/{code}/stats", headers=stats_only.headers).status_code == 200
    assert (
        "links:read"
        in assert_problem(edge.get(f"{API}/links/{code}", headers=stats_only.headers), 403)[
            "detail"
        ]
    )
    assert (
        db.fetchval(
            "SELECT count(*) FROM links l JOIN accounts a ON a.id = l.account_id"
            " WHERE a.name = $1 AND l.code <> $2",
            writer.name,
            code,
        )
        == 0
    )
    assert db.fetchval("SELECT url FROM links WHERE code = $1", code) == "https://example.com/"


def test_another_accounts_links_are_not_found(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    owner, stranger = account(), account()
    code = edge.post(
        f"{API}/links",
        json={"url": "https://example.com/mine", "code": f"own-{owner.key_id}"},
        headers=owner.headers,
    ).json()["code"]
    missing = f"nil-{owner.key_id}"

    def same_as_missing(method: str, suffix: str = "", body: object = None) -> None:
        theirs = edge.request(
            method, f"{API}/links/{code}{suffix}", headers=stranger.headers, json=body
        )
        nothing = edge.request(
            method, f"{API}/links/{missing}{suffix}", headers=stranger.headers, json=body
        )
        assert_problem(theirs, 404)
        assert theirs.text.replace(code, "CODE") == nothing.text.replace(missing, "CODE")

    same_as_missing("GET")
    same_as_missing("GET", "/stats")
    same_as_missing("PATCH", body={"url": "https://evil.example/"})
    same_as_missing("DELETE")
    assert edge.get(f"{API}/links", headers=stranger.headers).json()["items"] == []
    row = db.fetch("SELECT url, deleted_at FROM links WHERE code = $1", code)[0]
    assert (row["url"], row["deleted_at"]) == ("https://example.com/mine", None)
    assert edge.get(f"{API}/links/{code}", headers=owner.headers).status_code == 200


def test_openapi_needs_no_key(edge: httpx.Client) -> None:
    response = edge.get(f"{API}/openapi.json")
    assert response.status_code == 200 and response.json()["openapi"].startswith("3.1")
