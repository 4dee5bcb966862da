"""Redirect targets: the edge refuses a stored record the API could not have written."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import httpx
import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from edge.records import LinkRecord
from linkedge import keys

BAD_RECORDS = "linkedge_bad_link_records_total"


def edge_metric(edge: httpx.Client, name: str, **labels: str) -> float:
    """The value of one sample of the edge's /metrics (every worker summed), 0 when absent."""
    for family in text_string_to_metric_families(edge.get("/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def new_code() -> str:
    return "t" + secrets.token_hex(6)


# ---- records loaded from Redis or Postgres --------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"url": "javascript:alert(document.cookie)"}, "url"),
        ({"url": "data:text/html,<script>alert(1)</script>"}, "url"),
        ({"url": "https://bank.example@evil.example/"}, "url"),
        ({"url": "https://example.com/\r\nSet-Cookie: a=b"}, "url"),
        ({"url": "//evil.example/"}, "url"),
        ({"url": 12}, "url"),
        ({"url": "https://example.com/", "expired_url": "javascript:x"}, "expired_url"),
        ({"url": "https://example.com/", "redirect_type": 200}, "redirect_type"),
        ({"url": "https://example.com/", "expires_at": "soon"}, "expires_at"),
    ],
)
def test_a_bad_record_in_redis_is_a_404_and_counted(
    edge: httpx.Client, redis_client: redis.Redis, fields: dict[str, object], field: str
) -> None:
    code = new_code()
    record = {"id": 2**40, "account_id": 1, "code": code, **fields}
    redis_client.set(keys.link(code), orjson.dumps(record), ex=60)
    before = edge_metric(edge, BAD_RECORDS, store="redis", field=field)
    for method in ["GET", "HEAD"]:
        response = edge.request(method, f"/{code}")
        assert response.status_code == 404
        assert "location" not in response.headers
    assert edge_metric(edge, BAD_RECORDS, store="redis", field=field) > before


def test_a_good_record_in_redis_redirects(edge: httpx.Client, redis_client: redis.Redis) -> None:
    code = new_code()
    record = LinkRecord(id=2**40, account_id=1, code=code, url="https://example.com/r")
    redis_client.set(keys.link(code), record.to_json(), ex=60)
    response = edge.get(f"/{code}")
    assert response.status_code == 302
    assert response.headers["location"] == "https://example.com/r"


def test_a_bad_row_in_postgres_is_a_404_and_counted(
    edge: httpx.Client, make_link: Callable[..., str], redis_client: redis.Redis
) -> None:
    before = edge_metric(edge, BAD_RECORDS, store="postgres", field="url")
    code = make_link("javascript:alert(1)")
    response = edge.get(f"/{code}")
    assert response.status_code == 404 and "location" not in response.headers
    assert edge_metric(edge, BAD_RECORDS, store="postgres", field="url") == before + 1
    # the bad row is remembered as a miss, not written back to Redis as a record
    assert redis_client.get(keys.link(code)) in {None, b"-"}


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com",
        "http://example.com:8080/a?b=1#c",
        "HTTPS://Example.COM/",
        "http://[2001:db8::1]/",
        "https://xn--bcher-kva.example/caf\u00e9",  # non-ASCII path: escaped by the redirect
        "https://my_host.example/%20",
    ],
)
def test_records_the_api_writes_have_no_fault(url: str) -> None:
    assert LinkRecord(id=1, account_id=1, code="abc", url=url).fault() is None
