"""Bot classification: HEAD, prefetch headers, crawler user agents (crawlerdetect), humans."""

from __future__ import annotations

import pytest

from linkedge import bots

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)
IPHONE_SAFARI = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
    "Version/17.0 Mobile/15E148 Safari/604.1"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0"


@pytest.mark.parametrize(
    "user_agent",
    [
        "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)",
        "Mozilla/5.0 (compatible; bingbot/2.0; +http://www.bing.com/bingbot.htm)",
        "curl/8.5.0",
        "python-requests/2.31.0",
        "python-httpx/0.27.0",
        "facebookexternalhit/1.1 (+http://www.facebook.com/externalhit_uatext.php)",
        "Slackbot-LinkExpanding 1.0 (+https://api.slack.com/robots)",
        "",
        "   ",
    ],
)
def test_crawler_user_agents(user_agent: str) -> None:
    assert bots.reason("GET", user_agent) == bots.CRAWLER


@pytest.mark.parametrize("user_agent", [CHROME, IPHONE_SAFARI, FIREFOX])
def test_browsers_are_human(user_agent: str) -> None:
    assert bots.reason("GET", user_agent) == bots.HUMAN


def test_head_wins_over_everything() -> None:
    assert bots.reason("HEAD", CHROME) == bots.HEAD
    assert bots.reason("HEAD", "curl/8.5.0", prefetch=True) == bots.HEAD


def test_prefetch_beats_user_agent() -> None:
    assert bots.reason("GET", CHROME, prefetch=True) == bots.PREFETCH


@pytest.mark.parametrize(
    ("name", "value", "expected"),
    [
        ("purpose", "prefetch", True),
        ("purpose", " Prefetch ", True),
        ("sec-purpose", "prefetch", True),
        ("sec-purpose", "prefetch;prerender", True),
        ("x-purpose", "preview", True),
        ("x-moz", "prefetch", True),
        ("purpose", "navigate", False),
        ("sec-purpose", "", False),
        ("x-moz", "something", False),
        ("referer", "prefetch", False),
    ],
)
def test_prefetch_headers(name: str, value: str, expected: bool) -> None:
    assert bots.is_prefetch(name, value) is expected
    assert (name.encode() in bots.PREFETCH_HEADER_NAMES) is (name != "referer")


def test_crawler_cache_is_bounded_and_used() -> None:
    info = bots.is_crawler.cache_info()
    assert info.maxsize is not None and info.maxsize > 0
    agent = CHROME + " linkedge-cache-test"
    bots.is_crawler(agent)
    hits = bots.is_crawler.cache_info().hits
    assert bots.is_crawler(agent) is False
    assert bots.is_crawler.cache_info().hits == hits + 1


def test_long_user_agent_is_cut_before_classification() -> None:
    long_browser = CHROME + " " + "x" * 5000
    assert bots.reason("GET", long_browser) == bots.HUMAN
    assert bots.reason("GET", "Googlebot/2.1 " + "x" * 5000) == bots.CRAWLER
