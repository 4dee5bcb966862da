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

The crawler test gives crawlerdetect's answer, but runs its patterns on RE2 (google-re2): linear in
the user agent's length, where Python's ``re`` backtracks (one pattern is quadratic in a run of
letters or digits), so a visitor cannot make a classification slow by choosing the user agent. How
the two engines are made to agree is in ``_Re2Crawlers``; results are also cached per user agent.
Without google-re2 (no wheel for the platform) crawlerdetect itself runs, with a warning.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable, Sequence
from typing import Any

from crawlerdetect import CrawlerDetect
from crawlerdetect.providers.crawlers import data as CRAWLER_PATTERNS
from crawlerdetect.providers.exclusions import data as EXCLUSION_PATTERNS

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

log = logging.getLogger(__name__)

# Python's `re` (IGNORECASE, str patterns) and RE2 read crawlerdetect's patterns alike on ASCII
# text; on other characters they differ (Python: `\d` is any decimal digit, `i` also matches
# U+0130 and U+0131, `s` U+017F, `k` U+212A). An ASCII-only pattern without `\w`, `\s`, `\b` or
# backreferences can tell a non-ASCII character only by those two properties, so each one is
# replaced by a stand-in with the same answers before matching: the ASCII letter it folds to, a
# non-ASCII decimal digit, or a character that only `.` and negated classes match.
CASE_FOLDS = {"\u0130": "i", "\u0131": "i", "\u017f": "s", "\u212a": "k"}
DECIMAL_STAND_IN = "\u0660"
OTHER_STAND_IN = "\x80"
_NON_ASCII = re.compile(r"[^\x00-\x7f]")
_TOKEN = re.compile(r"\\.|.", re.DOTALL)  # an escape or one character
_QUANTIFIER = re.compile(r"\{\d+(,\d*)?\}")


def fold_safe(pattern: str) -> bool:
    """Whether ``pattern`` answers the same on text and on its fold: ASCII only, and no escape
    that reads a character's Unicode properties (``\\w``, ``\\s``, ``\\b``...; ``\\d`` is kept by the
    stand-ins), no backreference, no inline flag."""
    tokens = _TOKEN.findall(pattern)
    for i, token in enumerate(tokens):
        if not token.isascii() or (len(token) == 2 and token[1].isalnum() and token != "\\d"):
            return False
        if token == "(" and tokens[i + 1 : i + 2] == ["?"]:
            after = "".join(tokens[i + 2 : i + 4])
            if after[:1] in set("aiLmsux-") or after == "P=":
                return False
    return True


def _stand_in(match: re.Match[str]) -> str:
    char = match.group()
    return CASE_FOLDS.get(char) or (DECIMAL_STAND_IN if char.isdecimal() else OTHER_STAND_IN)


def fold(text: str) -> str:
    """``text`` with each non-ASCII character replaced by its stand-in (see above)."""
    return text if text.isascii() else _NON_ASCII.sub(_stand_in, text)


def to_re2(pattern: str, *, search_only: bool) -> str:
    """``pattern`` in RE2 syntax, with Python's meaning over folded text; ``ValueError`` if it
    cannot be. ``search_only``: ``$`` may consume the newline Python lets it stand before (the
    answer of a search is the same; a substitution's would not be)."""
    if not fold_safe(pattern):
        raise ValueError(f"not fold-safe: {pattern!r}")
    digits = "0-9" + DECIMAL_STAND_IN
    out: list[str] = []
    in_class = False
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\":
            escape = pattern[i : i + 2]
            if escape == "\\d":
                out.append(digits if in_class else f"[{digits}]")
            else:
                out.append(escape)
            i += 2
            continue
        if in_class:
            in_class = char != "]"
        elif char == "[":
            in_class = True
            head = pattern[i + 1 : i + 3]
            if head.startswith("]") or head == "^]":
                raise ValueError(f"a class opening with ]: {pattern!r}")
        elif char == "{" and not _QUANTIFIER.match(pattern, i):
            raise ValueError(f"a brace RE2 reads otherwise: {pattern!r}")  # Python: {,3}, a{b
        elif char == "$":
            if not search_only:
                raise ValueError(f"$ in a substitution: {pattern!r}")
            char = "\\n?$"
        elif char == "(" and pattern.startswith("(?", i) and not pattern.startswith("(?:", i):
            raise ValueError(f"a group RE2 lacks: {pattern!r}")
        out.append(char)
        i += 1
    return "".join(out)


class _Re2Crawlers:
    """crawlerdetect's ``is_crawler`` with its patterns on RE2.

    crawlerdetect strips the user agent, deletes every match of the exclusions pattern (browser
    tokens), and searches the rest with one alternation of the crawler patterns. Here RE2 deletes
    the exclusions (leftmost-first like Python, and none of them matches the empty string, so the
    same spans go), and the search is "RE2 finds one of the alternatives it can take, or Python's
    ``re`` one of the others" (``Yandex(?!Search)``: RE2 has no lookahead). Both run on the folded
    text. tests/test_bots.py holds it to crawlerdetect, answer for answer."""

    def __init__(self, re2: Any, exclusions: Sequence[str], crawlers: Sequence[str]) -> None:
        options = re2.Options()
        options.case_sensitive = False
        options.never_capture = True
        options.log_errors = False
        # google-re2's own extension type: its Match gives spans without the Python layer of
        # re2.compile (which builds a match object per span: 2x the time on a browser agent).
        engine = re2._re2.RE2
        self._unanchored = engine.Anchor.UNANCHORED

        def compiled(pattern: str) -> Any:
            regexp = engine(pattern.encode(), options)
            if not regexp.ok():
                raise re2.error(regexp.error())
            return regexp

        self._exclusions = compiled(
            "|".join(to_re2(p, search_only=False) for p in exclusions)
        ).Match
        taken: list[str] = []
        others: list[str] = []
        for pattern in crawlers:
            if not fold_safe(pattern):
                raise ValueError(f"not fold-safe: {pattern!r}")
            try:
                translated = to_re2(pattern, search_only=True)
                compiled(translated)
            except (ValueError, re2.error):
                others.append(pattern)
            else:
                taken.append(translated)
        self._crawlers = compiled("|".join(taken)).Match
        self.python_patterns = tuple(others)
        self._others = re.compile("|".join(others), re.IGNORECASE).search if others else None
        self("linkedge-warmup")  # the extension's interface is the one used here

    def __call__(self, user_agent: str) -> bool:
        text = fold(user_agent.strip()).encode()
        if not text:
            return False
        size = len(text)
        pieces = []
        end = 0
        while True:
            begin, after = self._exclusions(self._unanchored, text, end, size)[0]
            if begin < 0:
                break
            pieces.append(text[end:begin])
            end = after
        rest = b"".join(pieces) + text[end:] if pieces else text
        if not rest:
            return False
        if self._crawlers(self._unanchored, rest, 0, len(rest))[0][0] >= 0:
            return True
        return self._others is not None and self._others(rest.decode()) is not None


def _classifier() -> tuple[str, Callable[[str], bool], tuple[str, ...]]:
    """The crawler test to use, its engine's name and the patterns it leaves to Python's ``re``:
    RE2's when it can give crawlerdetect's answers."""
    try:
        import re2
    except ImportError as error:
        log.warning(
            "google-re2 is not installed (%s): crawlerdetect classifies user agents, "
            "in time that grows with their length",
            error,
        )
    else:
        try:
            crawlers = _Re2Crawlers(re2, EXCLUSION_PATTERNS, CRAWLER_PATTERNS)
            return "re2", crawlers, crawlers.python_patterns
        except (ValueError, re2.error, AttributeError, TypeError) as error:
            log.warning(
                "crawlerdetect's patterns cannot run on RE2 here (%r): crawlerdetect "
                "classifies user agents, in time that grows with their length",
                error,
            )
    return "crawlerdetect", CrawlerDetect().is_crawler, tuple(CRAWLER_PATTERNS)


# classify: crawlerdetect's is_crawler (uncached; is_crawler below adds the cache and the empty case).
ENGINE, classify, PYTHON_PATTERNS = _classifier()


def is_prefetch(name: str, value: str) -> bool:
    """True when the header ``name: value`` marks a speculative fetch (``name`` lower-cased)."""
    test = _PREFETCH_HEADERS.get(name)
    return test is not None and test(value.strip().lower())


@functools.lru_cache(maxsize=8192)
def is_crawler(user_agent: str) -> bool:
    """True for an empty user agent or one on crawlerdetect's list."""
    if not user_agent.strip():
        return True
    return classify(user_agent[:USER_AGENT_MAX])


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
    """Compile the crawler patterns' automata now rather than on the first classification."""
    classify("linkedge-warmup")
