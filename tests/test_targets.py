"""Redirect targets: the API's target policy (public hosts, no disguised numeric hosts, no
mixed-script labels; ``ALLOW_PRIVATE_TARGETS``), and the edge's refusal of a stored record the API
could not have written."""

from __future__ import annotations

import secrets
from collections.abc import Callable

import httpx
import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from edge.api import validation
from edge.api.problems import Problem
from edge.records import LinkRecord
from linkedge import keys
from linkedge.settings import ConfigError, Settings
from tests.conftest import Account, Db, Edge
from tests.test_api_errors import assert_problem, links_of

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


API = "/api/v1"

# Target -> what the refusal says, with the default policy.
PRIVATE = {
    "http://127.0.0.1/": "loopback",
    "http://[::1]/": "loopback",
    "http://[::ffff:127.0.0.1]/": "loopback",  # IPv4-mapped
    "http://[2002:7f00:1::]/": "loopback",  # 6to4 around 127.0.0.1
    "http://10.0.0.1/": "private",
    "http://172.16.5.4:8080/": "private",
    "http://192.168.1.1./": "private",
    "http://[fd00::1]/": "private",
    "http://[64:ff9b::a00:1]/": "private",  # NAT64 around 10.0.0.1
    "http://169.254.169.254/latest/meta-data/": "link-local",
    "http://[fe80::1]/": "link-local",
    "http://0.0.0.0/": "unspecified",
    "http://[::]/": "unspecified",
    "http://224.0.0.1/": "multicast",
    "http://240.0.0.1/": "reserved",
    "http://100.64.0.1/": "non-public",
    "http://localhost/": "local name",
    "http://LOCALHOST.:8000/": "local name",
    "http://api.localhost/": "local name",
    "http://printer.local/": "local name",
    "http://db.internal/": "local name",
    "http://nas.home.arpa/": "local name",
    "http://intranet/": "single-label",
}
# Refused whatever ALLOW_PRIVATE_TARGETS says.
DISGUISED = {
    "http://0x7f.1/": "numeric host",
    "http://2130706433/": "numeric host",
    "http://0x7f000001/": "numeric host",
    "http://017.0.0.1/": "numeric host",
    "http://127.1/": "numeric host",
    "http://1.2.3.4.5/": "numeric host",
    "http://example.123/": "numeric host",
    "http://ex\u0430mple.com/": "mixes Cyrillic and Latin",
    "https://xn--exmple-4nf.com/": "mixes Cyrillic and Latin",  # the same, sent as punycode
    "https://p\u0430ypal.com/": "mixes Cyrillic and Latin",
    "https://g\u03bfogle.com/": "mixes Greek and Latin",
    "https://xn--zz.com/": "not a valid internationalised label",
}
PUBLIC = {
    "https://example.com/": "https://example.com/",
    "http://93.184.215.14/x": "http://93.184.215.14/x",
    "http://[2606:4700:4700::1111]/": "http://[2606:4700:4700::1111]/",
    "https://1e100.net/": "https://1e100.net/",
    "https://123.example/": "https://123.example/",
    "http://b\u00fccher.example/": "http://xn--bcher-kva.example/",
    "http://\u043c\u043e\u0441\u043a\u0432\u0430.\u0440\u0444/": "http://xn--80adxhks.xn--p1ai/",
    "http://\u4f8b\u3048.\u30c6\u30b9\u30c8/": "http://xn--r8jz45g.xn--zckzah/",  # Han+Hiragana
    "http://\ud55c\uad6dabc.kr/": "http://xn--abc-lt8lk11n.kr/",  # Hangul with Latin
}


@pytest.mark.parametrize(("url", "says"), sorted(PRIVATE.items()))
def test_private_hosts_are_refused_by_default(url: str, says: str) -> None:
    for field in ["url", "expired_url"]:
        with pytest.raises(Problem) as caught:
            validation.target_url(url, field)
        assert caught.value.errors[0]["field"] == field
        assert says in caught.value.detail and "public hosts only" in caught.value.detail
    assert validation.target_url(url, allow_private=True).startswith("http://")


@pytest.mark.parametrize(("url", "says"), sorted(DISGUISED.items()))
def test_disguised_hosts_are_refused_whatever_the_setting(url: str, says: str) -> None:
    for allow_private in [False, True]:
        with pytest.raises(Problem) as caught:
            validation.target_url(url, allow_private=allow_private)
        assert says in caught.value.detail


@pytest.mark.parametrize(("url", "stored"), sorted(PUBLIC.items()))
def test_public_hosts_are_allowed(url: str, stored: str) -> None:
    assert validation.target_url(url) == stored


def test_the_setting_is_read_from_the_environment() -> None:
    assert Settings().allow_private_targets is False
    assert Settings.from_env({"ALLOW_PRIVATE_TARGETS": "true"}).allow_private_targets is True
    with pytest.raises(ConfigError, match="ALLOW_PRIVATE_TARGETS"):
        Settings.from_env({"ALLOW_PRIVATE_TARGETS": "maybe"})


def test_the_api_refuses_private_targets_everywhere(
    edge: httpx.Client, account: Callable[..., Account], db: Db
) -> None:
    who = account()
    for url in [
        "http://0x7f.1/",
        "http://2130706433/",
        "http://[::1]/",
        "http://10.0.0.1/",
        "http://localhost/",
        "http://ex\u0430mple.com/",
    ]:
        problem = assert_problem(
            edge.post(f"{API}/links", json={"url": url}, headers=who.headers), 422
        )
        assert [e["field"] for e in problem["errors"]] == ["url"]
        problem = assert_problem(
            edge.post(
                f"{API}/links",
                json={"url": "https://example.com/", "expired_url": url},
                headers=who.headers,
            ),
            422,
        )
        assert [e["field"] for e in problem["errors"]] == ["expired_url"]
    bulk = edge.post(
        f"{API}/links/bulk",
        json={"links": [{"url": "http://127.0.0.1/"}, {"url": "https://example.com/"}]},
        headers=who.headers,
    )
    assert [r["status"] for r in bulk.json()["results"]] == [422, 201]
    code = bulk.json()["results"][1]["link"]["code"]
    before = db.fetch("SELECT * FROM links WHERE code = $1", code)
    assert_problem(
        edge.patch(f"{API}/links/{code}", json={"url": "http://[::1]/"}, headers=who.headers),
        422,
    )
    assert db.fetch("SELECT * FROM links WHERE code = $1", code) == before
    assert links_of(db, who) == 1


def test_allow_private_targets_lets_an_intranet_edge_store_them(
    start_edge: Callable[..., Edge], account: Callable[..., Account]
) -> None:
    who = account()
    edge = start_edge(workers=1, ALLOW_PRIVATE_TARGETS="true")
    with edge.client() as client:
        for url in ["http://10.0.0.1/", "http://localhost:8080/x", "http://[::1]/", "http://wiki/"]:
            response = client.post(f"{API}/links", json={"url": url}, headers=who.headers)
            assert response.status_code == 201, response.text
            assert client.get(f"/{response.json()['code']}").headers["location"] == url
        assert_problem(
            client.post(f"{API}/links", json={"url": "http://0x7f.1/"}, headers=who.headers), 422
        )


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
