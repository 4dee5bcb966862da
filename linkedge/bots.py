"""Why a click is a bot click: one classification for the edge counters and for analytics.

The reason travels in the click event's ``bot`` field and decides the counter field (``h`` or
``b``), so Postgres and ClickHouse agree on the human/bot split by construction. Reasons, first
match wins:

- ``"head"``: a ``HEAD`` request (link checkers, unfurlers probing the target).
- ``"prefetch"``: the browser fetched the link speculatively, not on a click: ``Purpose: prefetch``,
  ``Sec-Purpose: prefetch`` (also ``prefetch;prerender``), ``X-Purpose: preview`` (Safari) or
  ``X-Moz: prefetch`` (Firefox).
- ``"crawler"``: the user agent is on crawlerdetect's maintained list (Googlebot, bingbot, curl,
  python-requests, Slackbot, facebookexternalhit...), or the user agent is empty. Every browser
  sends one; a request without it is a script or a scanner, and counting it as a person would
  inflate ``human_clicks``.
- ``""``: a human.

Crawler lookups are regex scans of a few hundred patterns (0.1-0.5 ms each), so results are cached
per user-agent string in a bounded LRU; real traffic has few distinct user agents.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

from crawlerdetect import CrawlerDetect

HUMAN = ""
HEAD = "head"
PREFETCH = "prefetch"
CRAWLER = "crawler"

USER_AGENT_MAX = 512  # longer user agents are cut to this before caching and storing

# Lower-cased header name -> test of its lower-cased, stripped value.
_PREFETCH_HEADERS: dict[str, Callable[[str], bool]] = {
    "purpose": lambda value: value == "prefetch",
    "sec-purpose": lambda value: value.startswith("prefetch"),
    "x-purpose": lambda value: value in ("preview", "prefetch"),
    "x-moz": lambda value: value == "prefetch",
}
PREFETCH_HEADER_NAMES = frozenset(name.encode() for name in _PREFETCH_HEADERS)

_detector = CrawlerDetect()


def is_prefetch(name: str, value: str) -> bool:
    """True when the header ``name: value`` marks a speculative fetch (``name`` lower-cased)."""
    test = _PREFETCH_HEADERS.get(name)
    return test is not None and test(value.strip().lower())


@functools.lru_cache(maxsize=8192)
def is_crawler(user_agent: str) -> bool:
    """True for an empty user agent or one on crawlerdetect's list."""
    if not user_agent.strip():
        return True
    return bool(_detector.is_crawler(user_agent[:USER_AGENT_MAX]))


def reason(method: str, user_agent: str, *, prefetch: bool = False) -> str:
    """The bot reason of a request, ``""`` for a human."""
    if method == "HEAD":
        return HEAD
    if prefetch:
        return PREFETCH
    if is_crawler(user_agent[:USER_AGENT_MAX]):
        return CRAWLER
    return HUMAN


def warm() -> None:
    """Compile crawlerdetect's patterns now (~30 ms) rather than on the first classification."""
    _detector.is_crawler("linkedge-warmup")
