"""Random bad input (fixed seed) to every write route: always a 4xx problem, never a 5xx."""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

import httpx

from tests.conftest import Account, Db
from tests.test_api_errors import links_of

API = "/api/v1"
FIELDS = [
    "url",
    "code",
    "redirect_type",
    "expires_at",
    "expired_url",
    "forward_query",
    "tags",
    "disabled",
    "links",
    "",
    "\u0000",
    "url\n",
]
NASTY: list[Any] = [
    None,
    True,
    0,
    -1,
    2**62,
    1.5,
    "",
    " ",
    "\u0000",
    "\r\n",
    "\ud7ff",
    "\u202e",
    "x" * 3000,
    "https://",
    "http://[",
    "http://[::1",
    "https://ex ample.com",
    "https://example.com:-1/",
    "https://example.com:65536/",
    "http://%00/",
    "http://a.b/\u0085",
    "\uff48ttp://example.com/",
    "2030-02-30T00:00:00Z",
    "2030-01-01T24:00:00Z",
    "9999-12-31T23:59:59-23:59",
    "0000-01-01T00:00:00Z",
    [],
    [None],
    [[]],
    {},
    {"a": 1},
    ["a"] * 40,
    ["\u0000"],
]


def random_value(rng: random.Random) -> Any:
    if rng.random() < 0.2:
        return {rng.choice(FIELDS): random_value(rng)}
    return rng.choice(NASTY)


def test_random_bad_bodies_never_give_5xx(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    rng = random.Random(20261124)
    who = account()
    code = f"fz-{who.key_id}"
    created = edge.post(
        f"{API}/links", json={"url": "https://example.com/", "code": code}, headers=who.headers
    )
    assert created.status_code == 201
    before = db.fetch("SELECT url, updated_at FROM links WHERE code = $1", code)
    statuses: set[int] = set()
    created_count, patched = 0, False
    for _ in range(80):
        body: dict[str, Any] = {
            rng.choice(FIELDS): random_value(rng) for _ in range(rng.randint(1, 4))
        }
        if rng.random() < 0.3:
            body.pop("url", None)
        else:
            body.setdefault("url", rng.choice(NASTY))
        for method, path, payload in [
            ("POST", f"{API}/links", body),
            ("PATCH", f"{API}/links/{code}", body),
            ("POST", f"{API}/links/bulk", {"links": [body] * rng.randint(1, 3)}),
        ]:
            response = edge.request(method, path, json=payload, headers=who.headers)
            assert response.status_code < 500, (method, payload, response.text)
            statuses.add(response.status_code)
            if response.status_code >= 400:
                assert response.headers["content-type"] == "application/problem+json"
            elif path.endswith("/bulk"):
                created_count += response.json()["created"]
            elif method == "POST":
                created_count += 1
            else:
                patched = True
    assert 422 in statuses
    # Refused requests stored nothing: the only changes are the ones answered with success.
    assert links_of(db, who) == 1 + created_count
    if not patched:
        assert db.fetch("SELECT url, updated_at FROM links WHERE code = $1", code) == before
