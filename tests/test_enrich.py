"""Enrichment of a click event into its ClickHouse row (pure functions, no stores)."""

from __future__ import annotations

import time
import uuid

import pytest

from analytics.enrich import COLUMNS, Enricher, agent, country, daily_salt, referrer_host
from linkedge import bots
from linkedge.events import Click, ClickIds

IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
WINDOWS_CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
IPAD = (
    "Mozilla/5.0 (iPad; CPU OS 16_6 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/16.6 Mobile/15E148 Safari/604.1"
)
GOOGLEBOT = "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"
DAY_MS = 86_400_000
_ids = ClickIds()


def click(**changes: object) -> Click:
    ts_ms = int(changes.pop("ts_ms", int(time.time() * 1000)))  # type: ignore[call-overload]
    values: dict[str, object] = {
        "id": _ids.new(ts_ms),
        "ts_ms": ts_ms,
        "link_id": 7,
        "account_id": 3,
        "code": "abc",
        "target": "https://example.com/landing",
        "ip": "8.8.8.8",
        "user_agent": IPHONE,
        "referer": "https://www.news.example.org/article?id=1",
        "accept_language": "en-GB,en;q=0.9",
        "host": "go.example",
        "utm": {"utm_source": "newsletter", "utm_campaign": "spring"},
        "bot": "",
    }
    values.update(changes)
    return Click(**values)  # type: ignore[arg-type]


@pytest.fixture
def enricher() -> Enricher:
    return Enricher(b"test-secret")


def test_row_has_every_column_in_order(enricher: Enricher) -> None:
    c = click()
    row = enricher.as_dict(c)
    assert list(row) == list(COLUMNS)
    assert row["click_id"] == uuid.UUID(c.id)
    assert row["link_id"] == 7 and row["account_id"] == 3 and row["code"] == "abc"
    assert row["accept_language"] == "en-GB,en;q=0.9" and row["host"] == "go.example"


@pytest.mark.parametrize(
    ("user_agent", "device", "os_name", "browser"),
    [
        (IPHONE, "mobile", "iOS", "Mobile Safari"),
        (WINDOWS_CHROME, "desktop", "Windows", "Chrome"),
        (IPAD, "tablet", "iOS", "Mobile Safari"),
        (GOOGLEBOT, "bot", "", "Googlebot"),
        ("", "other", "", ""),
    ],
)
def test_device_os_browser(user_agent: str, device: str, os_name: str, browser: str) -> None:
    found = agent(user_agent)
    assert (found.device_type, found.os, found.browser) == (device, os_name, browser)


def test_bot_flag_and_reason_come_from_the_edge(enricher: Enricher) -> None:
    """The edge's reason is kept as is; analytics adds the spider's name, never re-decides."""
    crawler = enricher.as_dict(click(user_agent=GOOGLEBOT, bot=bots.reason("GET", GOOGLEBOT)))
    assert (crawler["is_bot"], crawler["bot_reason"], crawler["bot_name"]) == (
        1,
        "crawler",
        "Googlebot",
    )
    head = enricher.as_dict(click(user_agent=IPHONE, bot=bots.reason("HEAD", IPHONE)))
    assert (head["is_bot"], head["bot_reason"], head["device_type"]) == (1, "head", "mobile")
    prefetch = enricher.as_dict(click(bot=bots.reason("GET", IPHONE, prefetch=True)))
    assert (prefetch["is_bot"], prefetch["bot_reason"]) == (1, "prefetch")
    human = enricher.as_dict(click(bot=bots.reason("GET", IPHONE)))
    assert (human["is_bot"], human["bot_reason"], human["bot_name"]) == (0, "", "")


def test_country_from_the_offline_database(enricher: Enricher) -> None:
    assert country("8.8.8.8") == "US"
    assert country("2001:4860:4860::8888") == "US"
    assert country("81.2.69.160") == "GB"
    assert country("127.0.0.1") == "" and country("10.1.2.3") == "" and country("not an ip") == ""
    assert enricher.as_dict(click(ip="81.2.69.160"))["country"] == "GB"


def test_referrer_host_and_utm(enricher: Enricher) -> None:
    row = enricher.as_dict(click())
    assert row["referrer_host"] == "news.example.org"
    assert (row["utm_source"], row["utm_medium"], row["utm_campaign"]) == (
        "newsletter",
        "",
        "spring",
    )
    assert referrer_host("") == "" and referrer_host("not a url") == ""
    assert referrer_host("http://[::1]:8080/x") == "::1"
    assert referrer_host("android-app://com.slack/") == "com.slack"


def test_visitor_hash_stable_within_a_day_and_rotating_across_days(enricher: Enricher) -> None:
    noon = (int(time.time() * 1000) // DAY_MS) * DAY_MS + DAY_MS // 2
    morning, evening = (
        enricher.as_dict(click(ts_ms=noon - 3_600_000)),
        enricher.as_dict(click(ts_ms=noon + 3_600_000)),
    )
    next_day = enricher.as_dict(click(ts_ms=noon + DAY_MS))
    other_ip = enricher.as_dict(click(ts_ms=noon, ip="1.1.1.1"))
    other_ua = enricher.as_dict(click(ts_ms=noon, user_agent=WINDOWS_CHROME))
    assert morning["visitor_hash"] == evening["visitor_hash"]
    assert len(morning["visitor_hash"]) == 16
    assert next_day["visitor_hash"] != morning["visitor_hash"]
    assert other_ip["visitor_hash"] != morning["visitor_hash"] != other_ua["visitor_hash"]
    # Another secret, another hash: without the secret a hash cannot be tied back to an IP.
    assert Enricher(b"other").as_dict(click(ts_ms=noon))["visitor_hash"] != morning["visitor_hash"]
    assert daily_salt(b"s", "20260101") != daily_salt(b"s", "20260102")


def test_raw_ip_is_absent_unless_configured(enricher: Enricher) -> None:
    c = click(ip="203.0.113.9")
    row = enricher.row(c)
    assert enricher.as_dict(c)["ip"] == ""
    assert "203.0.113.9" not in [v for v in row if isinstance(v, str)]
    assert Enricher(b"test-secret", store_raw_ip=True).as_dict(c)["ip"] == "203.0.113.9"


def test_replayed_click_enriches_to_the_same_row(enricher: Enricher) -> None:
    """Deterministic rows are what lets ClickHouse deduplicate a replayed batch."""
    c = click()
    assert enricher.row(c) == Enricher(b"test-secret").row(c)


@pytest.mark.parametrize(
    "changes",
    [{"id": "not-a-uuid"}, {"link_id": -1}, {"account_id": 2**64}, {"ts_ms": 0}, {"ts_ms": 10**15}],
)
def test_unstorable_click_raises_value_error(
    enricher: Enricher, changes: dict[str, object]
) -> None:
    with pytest.raises(ValueError):
        enricher.row(click(**changes))
