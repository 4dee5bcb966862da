"""Bot classification: HEAD, prefetch headers, crawler user agents (crawlerdetect on RE2), humans."""

from __future__ import annotations

import importlib
import random
import re
import string
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

import pytest
from crawlerdetect import CrawlerDetect
from crawlerdetect.providers.crawlers import data as CRAWLER_PATTERNS
from crawlerdetect.providers.exclusions import data as EXCLUSION_PATTERNS
from hypothesis import given, settings
from hypothesis import strategies as st

from linkedge import bots
from linkedge.bots import USER_AGENT_MAX

re_parser: Any = importlib.import_module("re._parser")  # parse trees: examples and widths

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


# --- RE2 classification: crawlerdetect's answer for every user agent ---------------------------
#
# crawlerdetect ships no fixture file of user agents, so the corpus is generated: browser user
# agents, an example of every crawler pattern (derived from the pattern) in several settings,
# random ASCII and Unicode text, and 512-character runs (the inputs Python's `re` backtracks on).

_REFERENCE = CrawlerDetect()


def _reference(user_agent: str) -> bool:
    return bool(_REFERENCE.is_crawler(user_agent))


def _browser_user_agents(count: int, seed: int = 12) -> list[str]:
    rng = random.Random(seed)
    systems = [
        "Windows NT 10.0; Win64; x64",
        "Windows NT 6.1; WOW64",
        "Macintosh; Intel Mac OS X 10_15_7",
        "X11; Linux x86_64",
        "X11; Ubuntu; Linux i686",
        "Linux; Android 14; SM-S918B",
        "Linux; Android 10; K",
        "iPhone; CPU iPhone OS 17_4 like Mac OS X",
        "iPad; CPU OS 16_6 like Mac OS X",
    ]

    def version() -> str:
        return ".".join(str(rng.randrange(0, 140)) for _ in range(rng.randrange(1, 5)))

    templates: list[Callable[[str], str]] = [
        lambda s: (
            f"Mozilla/5.0 ({s}) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{version()} Safari/537.36"
        ),
        lambda s: (
            f"Mozilla/5.0 ({s}) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{version()} Mobile Safari/537.36 Edg/{version()}"
        ),
        lambda s: f"Mozilla/5.0 ({s}; rv:{version()}) Gecko/20100101 Firefox/{version()}",
        lambda s: (
            f"Mozilla/5.0 ({s}) AppleWebKit/605.1.15 (KHTML, like Gecko) "
            f"Version/{version()} Mobile/15E148 Safari/604.1"
        ),
        lambda s: (
            f"Mozilla/5.0 ({s}) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 "
            f"[FBAN/FBIOS;FBAV/{version()};FBBV/{rng.randrange(10**8)}]"
        ),
        lambda s: (
            f"Mozilla/5.0 ({s}) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"SamsungBrowser/{version()} Chrome/{version()} Mobile Safari/537.36"
        ),
        lambda s: f"Opera/9.80 ({s}) Presto/2.12.388 Version/{version()}",
        lambda s: (
            f"Mozilla/5.0 ({s}) AppleWebKit/537.36 (KHTML, like Gecko) "
            f"Chrome/{version()} Safari/537.36 OPR/{version()}"
        ),
        lambda s: f"Mozilla/4.0 (compatible; MSIE {version()}; {s}; .NET CLR 2.0.50727)",
        lambda s: f"Dalvik/{version()} (Linux; U; Android 11; Build/{version()})",
    ]
    return [rng.choice(templates)(rng.choice(systems)) for _ in range(count)]


def _example(pattern: str) -> str:
    """A string that the crawler ``pattern`` matches, derived from its parse tree."""
    return "".join(_emit(re_parser.parse(pattern, re.IGNORECASE)))


def _emit(items: Any) -> list[str]:
    out: list[str] = []
    for op, av in items:
        name = str(op)
        if name == "LITERAL":
            out.append(chr(av))
        elif name == "NOT_LITERAL":
            out.append("~" if av != ord("~") else "!")
        elif name == "ANY":
            out.append("x")
        elif name == "IN":
            out.append(_class_member(av))
        elif name in ("MAX_REPEAT", "MIN_REPEAT"):
            low, _high, body = av
            out.extend(_emit(body) * max(low, 1))
        elif name == "SUBPATTERN":
            out.extend(_emit(av[-1]))
        elif name == "BRANCH":
            out.extend(_emit(av[1][0]))
        elif name == "ASSERT":
            out.extend(_emit(av[1]))
        elif name not in ("AT", "ASSERT_NOT"):
            raise ValueError(f"no example for {name}")
    return out


def _class_member(items: Any) -> str:
    negate = any(str(op) == "NEGATE" for op, _ in items)
    for op, av in items:
        name = str(op)
        if negate:
            break
        if name == "LITERAL":
            return chr(av)
        if name == "RANGE":
            return chr(av[0])
        if name == "CATEGORY" and "DIGIT" in str(av):
            return "7"
    return "~"


def _crawler_examples() -> list[str]:
    rng = random.Random(34)
    chrome = _browser_user_agents(1)[0]
    examples = []
    for pattern in CRAWLER_PATTERNS:
        example = _example(pattern)
        assert re.search(pattern, example, re.IGNORECASE), (pattern, example)
        examples += [
            example,
            example.upper(),
            example.swapcase(),
            f"Mozilla/5.0 (compatible; {example}/2.1; +http://example.com/bot.html)",
            f"{chrome} {example}",
            example + "\n",
            example + "\nLinux",  # Python's $ matches before a last newline
            # Unicode letters that Python's `re` folds to ASCII ones, and non-ASCII digits.
            example.replace("i", "\u0130").replace("s", "\u017f").replace("k", "\u212a"),
            example.replace("i", "\u0131").translate(str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")),
            # An exclusion (a browser token) inside the example: deleted before the search.
            _split_with(example, rng.choice(["Linux", "Safari/537", " Chrome/1.2", "x64"]), rng),
        ]
    return examples


def _split_with(text: str, token: str, rng: random.Random) -> str:
    cut = rng.randrange(len(text) + 1)
    return text[:cut] + token + text[cut:]


def _random_strings(count: int, seed: int = 56) -> list[str]:
    rng = random.Random(seed)
    alphabets = [
        string.printable,
        string.ascii_letters + string.digits + "/.;() -_",
        "".join(map(chr, range(0x20, 0x250))) + "\u0130\u0131\u017f\u212a٠١٢\u200b\ufffd\ud800",
    ]
    out = []
    for _ in range(count):
        alphabet = rng.choice(alphabets)
        # Long runs of letters are Python's slow case: _long_runs has those.
        length = rng.randrange(0, 120 if alphabet is alphabets[1] else 600)
        out.append("".join(rng.choice(alphabet) for _ in range(length)))
    return out


def _long_runs() -> list[str]:
    chars = string.printable + "\u0130\u0131\u017f\u212a٠\u00e9\ufffd"
    runs = [char * USER_AGENT_MAX for char in chars]
    for token in ("bot", "Mozilla/5.0 ", "CPU OS 1", "Opera Mini/1.1.", "b0t\n", "a-", "x86_"):
        runs.append((token * USER_AGENT_MAX)[:USER_AGENT_MAX])
    return runs


def _assert_same(corpus: list[str]) -> int:
    differences = [ua for ua in corpus if bots.classify(ua) != _reference(ua)]
    assert differences == [], differences[:10]
    return sum(map(_reference, corpus))


def test_classification_runs_on_re2() -> None:
    assert bots.ENGINE == "re2"


def test_browsers_classify_as_crawlerdetect_does() -> None:
    corpus = _browser_user_agents(3000)
    assert _assert_same(corpus) < len(corpus) // 10  # a few templates hold crawler tokens


def test_crawler_examples_classify_as_crawlerdetect_does() -> None:
    corpus = _crawler_examples()
    assert len(corpus) >= 10 * len(CRAWLER_PATTERNS)
    assert _assert_same(corpus) > len(corpus) // 2


def test_random_text_classifies_as_crawlerdetect_does() -> None:
    _assert_same(_random_strings(1200))


def test_long_runs_classify_as_crawlerdetect_does_quickly() -> None:
    corpus = _long_runs()
    _assert_same(corpus)
    bots.is_crawler.cache_clear()
    started = time.perf_counter()
    for i in range(200):
        bots.is_crawler(f"{i:04d}" + "a" * USER_AGENT_MAX)  # Python's `re`: tens of ms each
    assert time.perf_counter() - started < 2.0


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from(CRAWLER_PATTERNS).flatmap(lambda p: st.from_regex(p)),
    st.text(max_size=40),
    st.text(max_size=40),
)
def test_generated_matches_classify_as_crawlerdetect_does(
    example: str, before: str, after: str
) -> None:
    user_agent = before + example + after
    assert bots.classify(user_agent) == _reference(user_agent)


@given(st.text(max_size=USER_AGENT_MAX))
def test_any_text_classifies_as_crawlerdetect_does(user_agent: str) -> None:
    assert bots.classify(user_agent) == _reference(user_agent)


def test_no_pattern_matches_the_empty_string() -> None:
    # "any alternative matches" equals crawlerdetect's "the match is not empty", and RE2 deletes
    # the same exclusion spans as Python, only while no pattern can match empty.
    for pattern in [*CRAWLER_PATTERNS, *EXCLUSION_PATTERNS]:
        assert re_parser.parse(pattern).getwidth()[0] > 0, pattern


def test_only_lookaheads_are_left_to_python() -> None:
    assert bots.PYTHON_PATTERNS == ("Yandex(?!Search)",)
    assert all(bots.fold_safe(p) for p in [*CRAWLER_PATTERNS, *EXCLUSION_PATTERNS])


def test_stand_ins_cover_every_character() -> None:
    # The non-ASCII characters that Python's IGNORECASE matches to ASCII ones are CASE_FOLDS.
    folds_to_ascii = re.compile(r"[\x00-\x7f]", re.IGNORECASE).fullmatch
    found = {chr(c) for c in range(0x80, 0x110000) if folds_to_ascii(chr(c))}
    assert found == set(bots.CASE_FOLDS)
    for char, letter in bots.CASE_FOLDS.items():
        assert re.fullmatch(letter, char, re.IGNORECASE)
    # Python's \d is str.isdecimal; the stand-ins are uncased.
    digit = re.compile(r"\d").fullmatch
    assert all(bool(digit(chr(c))) == chr(c).isdecimal() for c in range(0x110000))
    assert bots.DECIMAL_STAND_IN.isdecimal() and not bots.OTHER_STAND_IN.isdecimal()
    for stand_in in (bots.DECIMAL_STAND_IN, bots.OTHER_STAND_IN):
        assert stand_in.lower() == stand_in.upper() == stand_in
        assert not folds_to_ascii(stand_in)


@pytest.mark.parametrize(
    "pattern",
    ["caf\u00e9", r"\w+bot", r"\bbot", r"\sbot", r"(a)\1", r"(?i)bot", r"\x41", r"(?P=a)"],
)
def test_fold_unsafe_patterns_are_refused(pattern: str) -> None:
    assert not bots.fold_safe(pattern)
    with pytest.raises(ValueError):
        bots.to_re2(pattern, search_only=True)


@pytest.mark.parametrize("pattern", [r"a{,3}", r"a{b", r"[]a]", r"(?=a)b", r"(?<!a)b"])
def test_what_re2_reads_otherwise_is_refused(pattern: str) -> None:
    with pytest.raises(ValueError):
        bots.to_re2(pattern, search_only=True)


def test_dollar_is_translated_only_for_a_search() -> None:
    assert bots.to_re2(r"b0t$", search_only=True) == "b0t\\n?$"
    assert bots.to_re2(r"Go [\d\.]*", search_only=True) == "Go [0-9\u0660\\.]*"
    assert bots.to_re2(r"\d{1,2}x{3}", search_only=False) == "[0-9\u0660]{1,2}x{3}"
    with pytest.raises(ValueError):
        bots.to_re2(r"b0t$", search_only=False)


def test_without_re2_crawlerdetect_classifies_with_a_warning() -> None:
    code = (
        "import sys, logging; sys.modules['re2'] = None; logging.basicConfig(); "
        "from linkedge import bots; print(bots.ENGINE, bots.is_crawler('curl/8'))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.split() == ["crawlerdetect", "True"]
    assert "google-re2 is not installed" in result.stderr
