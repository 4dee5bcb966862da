"""``expires_at`` at the edges of what the stack can hold: POST, PATCH and bulk agree, a refused
instant is a 422 naming the field with nothing stored, and every accepted one reads back (get,
list, redirect) through the real edge and Postgres."""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import httpx
import pytest

from edge.api import validation
from edge.api.problems import Problem
from tests.conftest import Account, Db
from tests.test_api_errors import assert_problem, links_of

API = "/api/v1"

# (given, the instant in UTC as the API answers it, or None where it is refused)
INSTANTS: list[tuple[str, str | None]] = [
    ("2030-01-01T00:00:00-16:00", None),  # Postgres: time zone displacement out of range
    ("2030-01-01T00:00:00+16:00", None),
    ("2030-01-01T00:00:00-20:00", None),
    ("2030-01-01T00:00:00+23:59", None),
    ("2030-01-01T00:00:00+15:60", None),
    ("2030-01-01T00:00:00-15:59", "2030-01-01T15:59:00Z"),
    ("2030-01-01T00:00:00+15:59", "2029-12-31T08:01:00Z"),
    ("2030-01-01T00:00:00-00:00", "2030-01-01T00:00:00Z"),
    ("9999-12-31T23:59:59-15:00", None),  # year 10000 in UTC: stored, then unreadable
    ("9999-12-31T23:59:59-00:01", None),
    ("9999-12-31T23:59:59.999999Z", None),  # asyncpg's infinity
    ("9999-12-31T23:59:59.999999999Z", None),
    ("9999-12-31T23:59:59.999998Z", "9999-12-31T23:59:59.999998Z"),
    ("9999-12-31T08:00:59-15:59", "9999-12-31T23:59:59Z"),
    ("9999-12-31T23:59:59+15:59", "9999-12-31T08:00:59Z"),
    ("0001-01-01T00:00:00Z", None),  # asyncpg's -infinity
    ("0001-01-01T00:00:00.000001Z", "0001-01-01T00:00:00.000001Z"),
    ("0001-01-01T00:00:00+00:01", None),  # year 0 in UTC
    ("0001-01-01T00:00:00-15:59", "0001-01-01T15:59:00Z"),
    ("0000-12-31T23:59:59Z", None),
    ("2030-02-30T00:00:00Z", None),
    ("2030-12-31T23:59:60Z", None),
    ("2030-01-01T24:00:00Z", None),
]


@pytest.mark.parametrize(("given", "stored"), INSTANTS)
def test_one_function_decides(given: str, stored: str | None) -> None:
    if stored is None:
        with pytest.raises(Problem) as caught:
            validation.expires_at(given)
        assert caught.value.errors[0]["field"] == "expires_at"
    else:
        parsed = validation.expires_at(given)
        assert parsed.tzinfo is UTC and parsed == datetime.fromisoformat(stored)


def test_offset_error_names_the_bound() -> None:
    with pytest.raises(Problem) as caught:
        validation.expires_at("2030-01-01T00:00:00-16:00")
    assert "±15:59" in caught.value.detail and "-16:00" in caught.value.detail
    with pytest.raises(Problem) as caught:
        validation.expires_at("9999-12-31T23:59:59-15:00")
    assert "9999" in caught.value.detail and "UTC" in caught.value.detail


def _check_readable(edge: httpx.Client, who: Account, code: str, stored: str) -> None:
    one = edge.get(f"{API}/links/{code}", headers=who.headers)
    assert one.status_code == 200, one.text
    assert one.json()["expires_at"] == stored
    # the redirect: long gone (year 1) or far ahead, never a 5xx
    assert edge.get(f"/{code}").status_code in {302, 410}


@pytest.mark.parametrize(("given", "stored"), INSTANTS)
def test_post_patch_and_bulk_agree_and_what_is_stored_reads_back(
    edge: httpx.Client, account: Callable[..., Account], db: Db, given: str, stored: str | None
) -> None:
    who = account()
    post = edge.post(
        f"{API}/links",
        json={"url": "https://example.com/p", "expires_at": given},
        headers=who.headers,
    )
    bulk = edge.post(
        f"{API}/links/bulk",
        json={
            "links": [
                {"url": "https://example.com/b0"},
                {"url": "https://example.com/b1", "expires_at": given},
                {"url": "https://example.com/b2", "expires_at": "2030-01-01T00:00:00Z"},
            ]
        },
        headers=who.headers,
    )
    assert bulk.status_code == 200, bulk.text
    results = bulk.json()["results"]
    assert [r["status"] for r in results] == [201, 201 if stored else 422, 201]
    patched_code = edge.post(
        f"{API}/links",
        json={"url": "https://example.com/patch", "expires_at": "2030-01-01T00:00:00Z"},
        headers=who.headers,
    ).json()["code"]
    patch = edge.patch(
        f"{API}/links/{patched_code}", json={"expires_at": given}, headers=who.headers
    )
    if stored is None:
        for problem in [
            assert_problem(post, 422),
            assert_problem(patch, 422),
            results[1]["problem"],
        ]:
            assert problem["status"] == 422
            assert [e["field"] for e in problem["errors"]] == ["expires_at"]
        assert links_of(db, who) == 3  # two bulk siblings and the link to patch
        _check_readable(edge, who, patched_code, "2030-01-01T00:00:00Z")
    else:
        assert post.status_code == 201, post.text
        assert patch.status_code == 200, patch.text
        for link in [post.json(), results[1]["link"], patch.json()]:
            assert link["expires_at"] == stored
            _check_readable(edge, who, link["code"], stored)
    listed = edge.get(f"{API}/links", params={"limit": 200}, headers=who.headers)
    assert listed.status_code == 200, listed.text
    assert len(listed.json()["items"]) == links_of(db, who)


def test_bulk_with_one_bad_offset_stores_its_siblings(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    who = account()
    items: list[dict[str, Any]] = [
        {"url": "https://example.com/1", "expires_at": "2030-01-01T00:00:00Z"},
        {"url": "https://example.com/2", "expires_at": "2030-01-01T00:00:00-16:00"},
        {"url": "https://example.com/3"},
    ]
    response = edge.post(f"{API}/links/bulk", json={"links": items}, headers=who.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert [r["status"] for r in body["results"]] == [201, 422, 201]
    assert (body["created"], body["failed"]) == (2, 1)
    problem = body["results"][1]["problem"]
    assert problem["errors"] == [
        {"field": "expires_at", "message": problem["errors"][0]["message"]}
    ]
    assert "±15:59" in problem["detail"]
    assert links_of(db, who) == 2


def test_patch_with_minus_twenty_hours_changes_nothing(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    who = account()
    code = edge.post(
        f"{API}/links",
        json={"url": "https://example.com/", "expires_at": "2030-06-01T00:00:00Z"},
        headers=who.headers,
    ).json()["code"]
    before = db.fetch("SELECT * FROM links WHERE code = $1", code)
    problem = assert_problem(
        edge.patch(
            f"{API}/links/{code}",
            json={"expires_at": "2030-01-01T00:00:00-20:00"},
            headers=who.headers,
        ),
        422,
    )
    assert problem["errors"][0]["field"] == "expires_at"
    assert db.fetch("SELECT * FROM links WHERE code = $1", code) == before


def test_year_ten_thousand_is_refused_and_the_account_stays_readable(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    who = account()
    kept = edge.post(f"{API}/links", json={"url": "https://example.com/k"}, headers=who.headers)
    assert kept.status_code == 201
    problem = assert_problem(
        edge.post(
            f"{API}/links",
            json={"url": "https://example.com/", "expires_at": "9999-12-31T23:59:59-15:00"},
            headers=who.headers,
        ),
        422,
    )
    assert problem["errors"][0]["field"] == "expires_at"
    assert links_of(db, who) == 1
    listed = edge.get(f"{API}/links", headers=who.headers)
    assert listed.status_code == 200 and len(listed.json()["items"]) == 1


def test_infinite_instants_cannot_be_stored(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    """asyncpg stores exactly datetime.min/max (UTC) as -infinity and infinity, which no reader
    takes back: the API refuses those two instants, and Postgres (migration 0004, which moved
    rows stored earlier inside the range) refuses them from any writer."""
    who = account()
    code = edge.post(
        f"{API}/links", json={"url": "https://example.com/"}, headers=who.headers
    ).json()["code"]
    for value in ("infinity", "-infinity", "10000-01-01+00"):
        with pytest.raises(asyncpg.CheckViolationError):
            db.execute(f"UPDATE links SET expires_at = '{value}' WHERE code = $1", code)
    for value in ("9999-12-31T23:59:59.999999Z", "0001-01-01T00:00:00Z"):
        refused = edge.patch(f"{API}/links/{code}", json={"expires_at": value}, headers=who.headers)
        assert refused.status_code == 422, refused.text
    assert edge.get(f"{API}/links/{code}", headers=who.headers).json()["expires_at"] is None
    listed = edge.get(f"{API}/links", headers=who.headers)
    assert listed.status_code == 200 and len(listed.json()["items"]) == 1


def _oracle(text: str) -> datetime | None:
    """What the API should store for ``text`` (in UTC), or ``None`` if it must refuse it: worked
    out with plain arithmetic on timedeltas, not with the validation's own conversions."""
    text = text.removesuffix("Z") + "+00:00" if text.endswith("Z") else text
    date_part, time_part = text[:10], text[11:-6]
    sign, hours, minutes = text[-6], int(text[-5:-3]), int(text[-2:])
    if minutes > 59 or hours * 60 + minutes > 15 * 60 + 59:
        return None
    seconds, _, fraction = time_part.partition(".")
    try:
        naive = datetime.fromisoformat(f"{date_part}T{seconds}")
    except ValueError:
        return None
    micros = int(fraction[:6].ljust(6, "0")) if fraction else 0
    offset = timedelta(hours=hours, minutes=minutes) * (1 if sign == "+" else -1)
    since_min = naive - datetime.min + timedelta(microseconds=micros) - offset
    if not timedelta(0) < since_min < datetime.max - datetime.min:
        return None
    return (datetime.min + since_min).replace(tzinfo=UTC)


def _instant_near_a_limit(rng: random.Random) -> str:
    day = rng.choice(["0001-01-01", "0001-01-02", "9999-12-30", "9999-12-31"])
    clock = rng.choice(
        ["00:00:00", "23:59:59", f"{rng.randrange(24):02d}:{rng.randrange(60):02d}:00"]
    )
    fraction = rng.choice(["", ".0", ".000001", ".999999", ".999999999", ".5"])
    hours, minutes = rng.randrange(24), rng.choice([0, 1, 30, 59])
    offset = rng.choice(["Z", "+00:00", "-00:00", f"{rng.choice('+-')}{hours:02d}:{minutes:02d}"])
    return f"{day}T{clock}{fraction}{offset}"


def test_random_instants_near_the_limits_read_back_when_accepted(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    """Whatever the API accepts reads back, through get, list and the redirect."""
    rng = random.Random(13)
    texts = [_instant_near_a_limit(rng) for _ in range(300)]
    who = account()
    items = [{"url": f"https://example.com/{i}", "expires_at": t} for i, t in enumerate(texts)]
    response = edge.post(f"{API}/links/bulk", json={"links": items}, headers=who.headers)
    assert response.status_code == 200, response.text
    accepted: dict[str, datetime] = {}
    for text, result in zip(texts, response.json()["results"], strict=True):
        expected = _oracle(text)
        if expected is None:
            assert result["status"] == 422, (text, result)
            assert result["problem"]["errors"][0]["field"] == "expires_at"
        else:
            assert result["status"] == 201, (text, result)
            accepted[result["link"]["code"]] = expected
    assert len(accepted) > 50 and len(texts) - len(accepted) > 20  # both kinds were drawn
    assert links_of(db, who) == len(accepted)
    seen: dict[str, str] = {}
    cursor = None
    while True:
        params = {"limit": "200", **({"cursor": cursor} if cursor else {})}
        page = edge.get(f"{API}/links", params=params, headers=who.headers)
        assert page.status_code == 200, page.text
        seen.update({link["code"]: link["expires_at"] for link in page.json()["items"]})
        cursor = page.json()["next_cursor"]
        if cursor is None:
            break
    assert {code: datetime.fromisoformat(shown) for code, shown in seen.items()} == accepted
    for code in list(accepted)[:20]:
        assert edge.get(f"{API}/links/{code}", headers=who.headers).status_code == 200
        assert edge.get(f"/{code}").status_code in {302, 410}
