"""The link API against the real edge (Granian, two workers) and real Postgres: happy paths."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import asyncpg
import httpx

from edge.api.inputs import NewLink
from edge.api.problems import Problem
from edge.api.queries import insert_links
from tests.conftest import Account, Db, Edge, Stores, run

API = "/api/v1"


def create(edge: httpx.Client, who: Account, **body: Any) -> dict[str, Any]:
    response = edge.post(f"{API}/links", json=body, headers=who.headers)
    assert response.status_code == 201, response.text
    return response.json()  # type: ignore[no-any-return]


def test_create_returns_link_with_short_url_and_location(
    edge: httpx.Client, account: Callable[..., Account], shared_edge: Edge
) -> None:
    who = account()
    response = edge.post(
        f"{API}/links", json={"url": "https://example.com/a?b=1"}, headers=who.headers
    )
    assert response.status_code == 201, response.text
    link = response.json()
    code = link["code"]
    assert len(code) == 7 and code.isalnum()
    assert response.headers["location"] == f"{API}/links/{code}"
    assert link["short_url"].endswith(f"/{code}")
    assert link["url"] == "https://example.com/a?b=1"
    assert link["redirect_type"] == 302
    assert link["clicks"] == 0 and link["human_clicks"] == 0
    assert link["tags"] == [] and link["forward_query"] is False and link["expires_at"] is None
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-request-id"]
    assert edge.get(f"/{code}").headers["location"] == "https://example.com/a?b=1"


def test_create_with_every_option(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    who = account()
    link = create(
        edge,
        who,
        url="https://example.com/x",
        code=f"my-Code_{who.key_id}",
        redirect_type=308,
        expires_at="2031-02-03T04:05:06.789+01:00",
        expired_url="https://example.com/gone",
        forward_query=True,
        tags=["promo", "q1", "promo"],
    )
    assert link["code"] == f"my-Code_{who.key_id}"
    assert link["redirect_type"] == 308
    assert link["expires_at"] == "2031-02-03T03:05:06.789000Z"
    assert link["expired_url"] == "https://example.com/gone"
    assert link["forward_query"] is True
    assert link["tags"] == ["promo", "q1"]
    row = db.fetch(
        "SELECT redirect_type, forward_query, tags FROM links WHERE code = $1", link["code"]
    )[0]
    assert (row["redirect_type"], row["forward_query"], row["tags"]) == (308, True, ["promo", "q1"])


def test_get_patch_delete(edge: httpx.Client, account: Callable[..., Account], db: Db) -> None:
    who = account()
    code = create(edge, who, url="https://example.com/old", expires_at="2030-01-01T00:00:00Z")[
        "code"
    ]
    got = edge.get(f"{API}/links/{code}", headers=who.headers)
    assert got.status_code == 200 and got.json()["url"] == "https://example.com/old"
    assert edge.get(f"/{code}").headers["location"] == "https://example.com/old"

    patched = edge.patch(
        f"{API}/links/{code}",
        json={
            "url": "https://example.com/new",
            "redirect_type": 307,
            "expires_at": None,
            "tags": ["t"],
        },
        headers=who.headers,
    )
    assert patched.status_code == 200, patched.text
    body = patched.json()
    assert (body["url"], body["redirect_type"], body["expires_at"], body["tags"]) == (
        "https://example.com/new",
        307,
        None,
        ["t"],
    )
    assert edge.get(f"/{code}").headers["location"] == "https://example.com/new"

    deleted = edge.delete(f"{API}/links/{code}", headers=who.headers)
    assert deleted.status_code == 204 and deleted.content == b""
    assert edge.get(f"{API}/links/{code}", headers=who.headers).status_code == 404
    assert edge.get(f"/{code}").status_code == 404
    assert db.fetchval("SELECT deleted_at IS NOT NULL FROM links WHERE code = $1", code) is True
    # A deleted code is never handed out again.
    again = edge.post(
        f"{API}/links", json={"url": "https://example.com/", "code": code}, headers=who.headers
    )
    assert again.status_code == 409


def test_clicks_come_from_the_totals_tables(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    who = account()
    code = create(edge, who, url="https://example.com/")["code"]
    link_id = db.fetchval("SELECT id FROM links WHERE code = $1", code)
    db.execute(
        "INSERT INTO link_click_totals (link_id, clicks, human_clicks) VALUES ($1, 7, 5)", link_id
    )
    db.execute(
        """INSERT INTO link_daily_clicks (link_id, day, clicks, human_clicks)
           VALUES ($1, current_date, 4, 3), ($1, current_date - 2, 3, 2)""",
        link_id,
    )
    link = edge.get(f"{API}/links/{code}", headers=who.headers).json()
    assert (link["clicks"], link["human_clicks"]) == (7, 5)
    listed = edge.get(f"{API}/links", headers=who.headers).json()["items"]
    assert (listed[0]["clicks"], listed[0]["human_clicks"]) == (7, 5)

    stats = edge.get(f"{API}/links/{code}/stats?days=3", headers=who.headers)
    assert stats.status_code == 200, stats.text
    body = stats.json()
    assert (body["clicks"], body["human_clicks"]) == (7, 5)
    assert [(d["clicks"], d["human_clicks"]) for d in body["daily"]] == [(3, 2), (0, 0), (4, 3)]
    assert body["daily"][-1]["day"] == body["to"]


def test_list_pages_newest_first_and_filters_by_tag(
    edge: httpx.Client, account: Callable[..., Account]
) -> None:
    who = account()
    codes = [
        create(edge, who, url=f"https://example.com/{i}", tags=["odd"] if i % 2 else [])["code"]
        for i in range(7)
    ]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 3, **({"cursor": cursor} if cursor else {})}
        page = edge.get(f"{API}/links", params=params, headers=who.headers)
        assert page.status_code == 200, page.text
        seen += [item["code"] for item in page.json()["items"]]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert seen == codes[::-1]
    odd = edge.get(f"{API}/links", params={"tag": "odd"}, headers=who.headers).json()
    assert [item["code"] for item in odd["items"]] == [codes[5], codes[3], codes[1]]
    assert odd["next_cursor"] is None


def test_pagination_stays_correct_under_concurrent_inserts(
    edge: httpx.Client, account: Callable[..., Account], shared_edge: Edge
) -> None:
    # Every request counts against the key's burst of 60 (RATE_LIMIT_BURST): 20 links, at most 8
    # concurrent inserts, then ~7 pages of 4 with an insert between pages stays well under it.
    who = account()
    existing = [create(edge, who, url=f"https://example.com/{i}")["code"] for i in range(20)]
    stop = threading.Event()
    first_insert = threading.Event()
    inserted: list[str] = []

    def insert_while_paging() -> None:
        with shared_edge.client() as other:
            for _ in range(8):
                if stop.is_set():
                    return
                inserted.append(create(other, who, url="https://example.com/new")["code"])
                first_insert.set()
                stop.wait(0.02)

    writer = threading.Thread(target=insert_while_paging)
    writer.start()
    try:
        assert first_insert.wait(20)
        seen: list[str] = []
        cursor = None
        while True:
            params: dict[str, Any] = {"limit": 4, **({"cursor": cursor} if cursor else {})}
            body = edge.get(f"{API}/links", params=params, headers=who.headers).json()
            seen += [item["code"] for item in body["items"]]
            cursor = body["next_cursor"]
            if cursor is None:
                break
            inserted.append(create(edge, who, url="https://example.com/between-pages")["code"])
    finally:
        stop.set()
        writer.join()
    assert len(seen) == len(set(seen)), "a link appeared on two pages"
    assert set(existing) <= set(seen), "a link that existed before paging was skipped"


def test_bulk_creates_each_item_independently(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    who = account()
    taken = create(edge, who, url="https://example.com/", code=f"taken-{who.key_id}")["code"]
    items = [
        {"url": "https://example.com/1"},
        {"url": "javascript:alert(1)"},
        {"url": "https://example.com/3", "code": f"bulk-{who.key_id}", "tags": ["b"]},
        {"url": "https://example.com/4", "code": taken},
        {"url": "https://example.com/5", "code": "api"},
        {"url": "https://example.com/6", "code": f"bulk-{who.key_id}"},
        {"url": "https://example.com/7", "colour": "red"},
    ]
    response = edge.post(f"{API}/links/bulk", json={"links": items}, headers=who.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["status"] for r in body["results"]] == [201, 422, 201, 409, 422, 409, 422]
    assert [r["index"] for r in body["results"]] == list(range(7))
    assert (body["created"], body["failed"]) == (2, 5)
    assert body["results"][1]["problem"]["errors"][0]["field"] == "url"
    assert body["results"][6]["problem"]["errors"][0]["field"] == "colour"
    assert body["results"][2]["link"]["code"] == f"bulk-{who.key_id}"
    account_id = db.fetchval("SELECT account_id FROM api_keys WHERE id = $1", who.key_id)
    stored = db.fetch("SELECT url FROM links WHERE account_id = $1 ORDER BY id", account_id)
    assert [r["url"] for r in stored] == [
        "https://example.com/",
        "https://example.com/1",
        "https://example.com/3",
    ]
    first = body["results"][0]["link"]["code"]
    assert edge.get(f"/{first}").headers["location"] == "https://example.com/1"


def test_bulk_of_a_thousand(edge: httpx.Client, account: Callable[..., Account], db: Db) -> None:
    who = account()
    items = [{"url": f"https://example.com/{i}"} for i in range(1000)]
    response = edge.post(f"{API}/links/bulk", json={"links": items}, headers=who.headers)
    assert response.status_code == 200, response.text
    assert response.json()["created"] == 1000
    account_id = db.fetchval("SELECT account_id FROM api_keys WHERE id = $1", who.key_id)
    assert (
        db.fetchval("SELECT count(DISTINCT code) FROM links WHERE account_id = $1", account_id)
        == 1000
    )


def test_unicode_target_is_stored_as_punycode(
    edge: httpx.Client, account: Callable[..., Account]
) -> None:
    who = account()
    link = create(edge, who, url="http://bücher.example/straße?q=ü")
    assert link["url"] == "http://xn--bcher-kva.example/stra%C3%9Fe?q=%C3%BC"
    assert edge.get(f"/{link['code']}").headers["location"] == link["url"]


def test_generated_code_collisions_are_retried(
    stores: Stores, account: Callable[..., Account], db: Db
) -> None:
    """A generated code that is taken gets a fresh one; a custom code that is taken is a 409."""
    who = account()
    account_id = db.fetchval("SELECT account_id FROM api_keys WHERE id = $1", who.key_id)
    taken = f"tk{who.key_id:05d}"[-7:]
    db.execute(
        "INSERT INTO links (account_id, code, url) VALUES ($1, $2, 'https://example.com/')",
        account_id,
        taken,
    )
    fresh = f"fr{who.key_id:05d}"[-7:]
    offered = iter([taken, fresh])

    async def go() -> tuple[list[Any], list[Any]]:
        pool = await asyncpg.create_pool(stores.database_url, min_size=1, max_size=1)
        try:
            generated = await insert_links(
                pool,
                account_id,
                [NewLink(url="https://example.com/a")],
                frozenset(),
                lambda _: next(offered),
            )
            custom = await insert_links(
                pool, account_id, [NewLink(url="https://example.com/b", code=taken)], frozenset()
            )
            return generated, custom
        finally:
            await pool.close()

    [generated], [custom] = run(go())
    assert not isinstance(generated, Problem) and generated["code"] == fresh
    assert isinstance(custom, Problem) and custom.status == 409
    assert db.fetchval("SELECT count(*) FROM links WHERE account_id = $1", account_id) == 2
