"""The edge's per-click encoder: the C one (``edge._clickfast``) against the Python one.

Both are fed the same clicks (scopes as Granian and uvicorn build them, hostile values, X-Forwarded-
For behind trusted proxies, prefetch headers, UTM queries, second and day boundaries, caches small
enough to be cleared) from the same id seed; their events and counters must be the same bytes and
numbers, and those events must decode to what the request said.
"""

from __future__ import annotations

import ipaddress
import random
import shutil
from typing import Any

import orjson
import pytest

from edge import clickencoder
from edge.clickencoder import ClickEncoder, Counts, new_encoder
from edge.clickinfo import request_tail
from edge.records import LinkRecord
from linkedge import bots, events
from linkedge.settings import ConfigError, Settings

try:
    from edge import _clickfast as fast
except ImportError:
    if shutil.which("cc") or shutil.which("gcc"):  # it should have been built: say so, loudly
        raise ImportError("edge._clickfast was not built: `pip install -e .` shows why") from None
    pytest.skip("no C compiler here: edge._clickfast not built", allow_module_level=True)

TRUSTED = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
CHROME = (
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/120.0.0.0 Safari/537.36"
)
AGENTS = [CHROME, b"curl/8.5.0", b"", b"Googlebot/2.1 (+http://www.google.com/bot.html)",
          "Mozilla/5.0 \u00e9\u2603".encode(), b"\xff\xfe broken utf-8 \x00\x1f\"\\"]  # fmt: skip
REFERERS = [b"https://news.example/a?b=c", b'https://x.example/"quoted"\\', b"\xc3\x28", b""]
LINKS = [
    LinkRecord(id=1, account_id=7, code="abc", url="https://example.com/"),
    LinkRecord(id=2**40, account_id=1, code="x_-Y", url="https://example.com/p?q=1#f"),
    LinkRecord(id=3, account_id=2, code="c", url='https://example.com/"\\\u00e9'),
]
SEED = (0x2ABCDEF, 0x123456789ABC)


def pair(
    tails_kept: int = clickencoder.TAILS_CACHED,
    links_kept: int = clickencoder.LINKS_CACHED,
    tails_bytes: int = clickencoder.TAILS_BYTES,
) -> tuple[Any, ClickEncoder]:
    """A C encoder and a Python reference encoder, seeded alike."""
    python = ClickEncoder(
        TRUSTED, tails_kept=tails_kept, tails_bytes=tails_bytes, links_kept=links_kept
    )
    fallback = ClickEncoder(TRUSTED)
    fallback.seed(*SEED[::-1])  # its own ids, seeded too: a replay of the same clicks matches
    c = fast.Encoder(
        fallback=fallback.add,
        request_tail=request_tail,
        client_ip=python.client_ip,
        prefetch_header=clickencoder.prefetch_header,
        prefetch_names=tuple(sorted(bots.PREFETCH_HEADER_NAMES)),
        link_part=events.link_part,
        utc_day=events.utc_day,
        counter_field=events.counter_field,
        dumps=orjson.dumps,
        layout=events.EVENT_LAYOUT,
        tails_kept=tails_kept,
        tails_bytes=tails_bytes,
        tail_cuts=clickencoder.TAIL_CUTS,
        tail_overhead=clickencoder.TAIL_OVERHEAD,
        links_kept=links_kept,
    )
    c.seed(*SEED)
    python.seed(*SEED)
    return c, python


def random_scope(rng: random.Random) -> dict[str, Any]:
    headers: list[tuple[bytes, bytes]] = [(b"host", rng.choice([b"sho.rt", b"sho.rt:8443", b""]))]
    if rng.random() < 0.9:
        headers.append((b"user-agent", rng.choice(AGENTS)))
    if rng.random() < 0.5:
        headers.append((b"referer", rng.choice(REFERERS)))
    if rng.random() < 0.7:
        headers.append((b"accept-language", rng.choice([b"en-US,en;q=0.9", b"fr", b"\xe9"])))
    if rng.random() < 0.3:
        headers.append((b"x-forwarded-for", rng.choice([b"203.0.113.9", b"198.51.100.1, 10.1.2.3",
                                                        b"garbage, 10.0.0.1", b"2001:db8::7"])))  # fmt: skip
    if rng.random() < 0.1:
        headers.append((b"x-forwarded-for", b"192.0.2.44"))  # a second header line
    if rng.random() < 0.15:
        name = rng.choice([b"purpose", b"sec-purpose", b"x-purpose", b"x-moz"])
        headers.append((name, rng.choice([b"prefetch", b" Prefetch ", b"preview", b"other"])))
    headers += [(b"accept", b"*/*"), (b"connection", b"keep-alive")][: rng.randrange(3)]
    rng.shuffle(headers)
    if rng.random() < 0.1:
        headers.append((b"user-agent", b"a later user-agent line wins"))
    query = rng.choice(
        [b"", b"utm_source=news&utm_medium=mail", b"x=1&UTM_Campaign=%E2%98%83", b"a"]
    )
    client = rng.choice(
        [("127.0.0.1", 5000), ("10.9.8.7", 1), ("fd00::1", 2), ("::ffff:10.0.0.2", 3), None,
         ('1.2.3.4"\\', 4), ("2001:db8::1", 443)]
    )  # fmt: skip
    return {
        "type": "http",
        "method": rng.choice(["GET", "GET", "GET", "HEAD"]),
        "path": "/abc",
        "query_string": query,
        "headers": headers,
        "client": client,
    }


def run_both(
    c: Any, python: ClickEncoder, clicks: list[tuple[float, LinkRecord, dict[str, Any], str]]
) -> tuple[list[bytes], Counts]:
    c_events: list[bytes] = []
    c_counts: Counts = {}
    py_events: list[bytes] = []
    py_counts: Counts = {}
    for ts, link, scope, location in clicks:
        c.add(ts, link, scope, location, c_counts, c_events)
        python.add(ts, link, scope, location, py_counts, py_events)
    assert c_events == py_events
    assert c_counts == py_counts
    return c_events, c_counts


def test_c_and_python_encoders_agree_byte_for_byte() -> None:
    rng = random.Random(11)
    start = 1_767_225_599.0  # 2025-12-31T23:59:59Z: the clicks cross a day and many seconds
    clicks: list[tuple[float, LinkRecord, dict[str, Any], str]] = []
    while len(clicks) < 3000:
        link = rng.choice(LINKS)
        ts = start + len(clicks) * rng.choice([0.0, 0.0004, 0.0011, 0.3])
        scope = random_scope(rng)
        for _ in range(rng.choice([1, 1, 2, 3])):  # runs of one request, as under load
            if rng.random() < 0.5:  # the same values in new objects, as a server builds them
                scope = {
                    **scope,
                    "headers": [
                        (bytes(bytearray(n)), bytes(bytearray(v))) for n, v in scope["headers"]
                    ],
                }
            clicks.append((ts, link, scope, rng.choice([link.url, link.url + "&utm=x"])))
    clicks = clicks[:3000]
    c, python = pair()
    c_events, counts = run_both(c, python, clicks)
    assert len(c_events) == 3000 and sum(counts.values()) == 3000
    parsed = [events.parse_counter_field(field) for field in counts]
    assert {day for _, day, _ in parsed} == {"20251231", "20260101"}
    assert {bot for _, _, bot in parsed} == {True, False}
    decoded = [events.decode(raw) for raw in c_events]
    assert len({click.id for click in decoded}) == 3000  # ids unique
    assert {click.ip for click in decoded} >= {"198.51.100.1", "10.0.0.1", "fd00::1", '1.2.3.4"\\'}


def test_caches_cleared_when_full_change_nothing() -> None:
    rng = random.Random(5)
    clicks = [(1_767_000_000.0 + i, rng.choice(LINKS), random_scope(rng), "https://t.example/")
              for i in range(500)]  # fmt: skip
    run_both(*pair(tails_kept=2, links_kept=1), clicks)


def test_header_sets_past_the_cuts_or_the_byte_bound_change_nothing() -> None:
    """Values longer than ``TAIL_CUTS`` (not remembered) and a byte bound small enough to be
    reached every few clicks give the same bytes in both encoders, cut as ``request_tail`` cuts."""
    rng = random.Random(11)
    cuts = clickencoder.TAIL_CUTS
    clicks = []
    for i in range(400):
        scope = random_scope(rng)
        agent = rng.choice([b"A" * (cuts[0] + rng.choice([-1, 0, 1, 5000])), CHROME,
                            "\u00e9".encode() * (cuts[0] // 2 + rng.choice([-1, 0, 1]))])  # fmt: skip
        scope["headers"] += [
            (b"user-agent", agent),
            (b"referer", b"https://r.example/" + b"r" * rng.choice([10, cuts[1], cuts[1] + 3])),
            (b"accept-language", b"l" * rng.choice([2, cuts[2], cuts[2] + 1])),
            (b"host", b"h" * rng.choice([5, cuts[3], cuts[3] + 1])),
        ]
        scope["query_string"] = b"utm_source=" + b"q" * rng.choice([1, cuts[4] - 11, cuts[4]])
        clicks.append((1_767_000_000.0 + i, rng.choice(LINKS), scope, "https://t.example/"))
    c_events, _ = run_both(*pair(tails_bytes=20_000), clicks)
    decoded = [events.decode(raw) for raw in c_events]
    assert max(len(click.user_agent) for click in decoded) == bots.USER_AGENT_MAX
    assert max(len(click.utm["utm_source"]) for click in decoded) == 256


def test_each_click_decodes_to_what_its_request_said() -> None:
    c, _ = pair()
    scope = {
        "type": "http",
        "method": "GET",
        "query_string": b"utm_source=news&utm_term=a%20b",
        "headers": [
            (b"host", b"sho.rt"),
            (b"user-agent", CHROME),
            (b"referer", b"https://news.example/"),
            (b"accept-language", b"de-CH"),
            (b"x-forwarded-for", b"203.0.113.5, 10.0.0.3"),
        ],
        "client": ("10.0.0.2", 41000),
    }
    out: list[bytes] = []
    counts: Counts = {}
    c.add(1_767_225_600.5, LINKS[2], scope, "https://example.com/%22", counts, out)
    click = events.decode(out[0])
    assert (click.ts_ms, click.link_id, click.account_id, click.code) == (
        1_767_225_600_500,
        3,
        2,
        "c",
    )
    assert click.target == "https://example.com/%22"
    assert click.ip == "203.0.113.5"  # the right-most untrusted hop
    assert (click.user_agent, click.referer, click.accept_language, click.host) == (
        CHROME.decode(),
        "https://news.example/",
        "de-CH",
        "sho.rt",
    )
    assert click.utm == {"utm_source": "news", "utm_term": "a b"}
    assert click.bot == ""
    ms = 1_767_225_600_500
    assert click.id.startswith(f"{ms >> 16:08x}-{ms & 0xFFFF:04x}-7")  # UUIDv7 of that millisecond
    assert counts == {"3:20260101:h": 1}


def test_a_scope_it_does_not_expect_goes_to_the_python_encoder() -> None:
    c, _ = pair()
    odd: list[dict[str, Any]] = [
        {"headers": [("user-agent", "str names")], "client": ("1.2.3.4", 1)},  # not bytes
        {"headers": iter([(b"user-agent", b"a generator")]), "client": None},  # not a list
        {"headers": [(b"host", b"h", b"three")]},  # not a pair
    ]
    out: list[bytes] = []
    counts: Counts = {}
    c.add(1_767_000_000.0, LINKS[0], odd[0], "https://e.example/", counts, out)
    c.add(1_767_000_000.0, LINKS[0], odd[1], "https://e.example/", counts, out)
    assert [events.decode(raw).user_agent for raw in out] == ["", "a generator"]
    assert [events.decode(raw).bot for raw in out] == ["crawler", ""]
    with pytest.raises(ValueError):  # the Python encoder's own error: the recorder counts it
        c.add(1_767_000_000.0, LINKS[0], odd[2], "https://e.example/", counts, out)
    assert len(out) == 2 and counts == {"1:20251229:b": 1, "1:20251229:h": 1}


def test_a_click_that_cannot_be_encoded_changes_nothing() -> None:
    c, _ = pair()
    out: list[bytes] = []
    counts: Counts = {}
    bad_link = LinkRecord(id=9, account_id=1, code="lone \ud800 surrogate", url="https://e/")
    scope = {"headers": [(b"user-agent", CHROME)], "client": ("1.2.3.4", 1)}
    with pytest.raises(Exception):  # noqa: B017 -- orjson's own error type; the recorder counts it
        c.add(1_767_000_000.0, bad_link, scope, "https://e/", counts, out)
    assert out == [] and counts == {}
    c.add(1_767_000_000.0, LINKS[0], scope, "https://e/", counts, out)
    assert len(out) == 1 and counts == {"1:20251229:h": 1}


def replay_with_add(encoder: Any, entry: bytes, scopes: list[tuple[LinkRecord, Any, str]]) -> Any:
    """(counters, entry) that ``add`` gives for the clicks whose events ``entry`` holds."""
    out: list[bytes] = []
    counts: Counts = {}
    for raw, (link, scope, location) in zip(events.split_entry(entry), scopes, strict=True):
        ts = (events.decode(raw).ts_ms + 0.5) / 1000  # record() read the clock: use its reading
        encoder.add(ts, link, scope, location, counts, out)
    return events.join_counters(counts).encode(), events.join_entry(out)


@pytest.mark.parametrize("kind", ["c", "python"])
def test_record_and_take_give_what_add_gives(kind: str) -> None:
    """``record`` (the clock read in the encoder, the event written onto the open batch's entry)
    and ``take`` give the bytes ``add`` and ``join_entry``/``join_counters`` give for the same
    clicks, the C encoder's odd scopes (through the Python add) included; ``take`` starts a new
    batch and ``record`` says when ``limit`` is reached."""
    rng = random.Random(3)
    clicks = [(rng.choice(LINKS), random_scope(rng), rng.choice(["https://t/", "https://t/?a=1"]))
              for _ in range(1500)]  # fmt: skip
    clicks[7] = (LINKS[0], {"headers": [("user-agent", "str names")], "client": None}, "https://t/")
    encoder: Any = pair()[0 if kind == "c" else 1]
    encoder.limit = 1000
    full = [encoder.record(*click) for click in clicks[:1000]]
    assert full == [False] * 999 + [True] and encoder.pending == 1000
    first = encoder.take()
    assert encoder.take() is None and encoder.pending == 0
    assert [encoder.record(*click) for click in clicks[1000:]] == [False] * 500
    second = encoder.take()
    assert first[0] == 1000 and second[0] == 500
    assert sum(int(line.split()[1]) for line in first[1].splitlines()) == 1000
    replay = pair()[0 if kind == "c" else 1]
    assert (first[1], first[2]) == replay_with_add(replay, first[2], clicks[:1000])
    assert (second[1], second[2]) == replay_with_add(replay, second[2], clicks[1000:])
    assert events.decode(events.split_entry(first[2])[7]).user_agent == ""  # the odd scope


def test_record_of_a_click_that_cannot_be_encoded_changes_nothing() -> None:
    c, _ = pair()
    scope = {"headers": [(b"user-agent", CHROME)], "client": ("1.2.3.4", 1)}
    c.record(LINKS[0], scope, "https://e/")
    bad_link = LinkRecord(id=9, account_id=1, code="lone \ud800 surrogate", url="https://e/")
    with pytest.raises(Exception):  # noqa: B017 -- orjson's own error type; the recorder counts it
        c.record(bad_link, scope, "https://e/")
    with pytest.raises(ValueError):  # the Python add's error, for a scope C hands it
        c.record(LINKS[0], {"headers": [(b"host", b"h", b"three")]}, "https://e/")
    clicks, counters, entry = c.take()
    assert clicks == 1 and len(events.split_entry(entry)) == 1
    assert counters.decode().endswith(" 1") and counters.startswith(b"1:")


def test_new_encoder_follows_click_encoder() -> None:
    assert isinstance(new_encoder(TRUSTED, "auto"), fast.Encoder)
    assert isinstance(new_encoder(TRUSTED, "c"), fast.Encoder)
    assert isinstance(new_encoder(TRUSTED, "python"), ClickEncoder)
    with pytest.raises(ConfigError, match="CLICK_ENCODER"):
        new_encoder(TRUSTED, "rust")
    assert Settings.from_env({"CLICK_ENCODER": "python"}).click_encoder == "python"
    with pytest.raises(ConfigError, match="CLICK_ENCODER: one of auto, c, python"):
        Settings.from_env({"CLICK_ENCODER": "C"})


def test_reseed_gives_the_c_encoder_and_its_fallback_their_own_ids() -> None:
    encoder = new_encoder(TRUSTED)
    clickencoder.reseed(encoder)
    out: list[bytes] = []
    scope = {"headers": [(b"user-agent", CHROME)], "client": ("1.2.3.4", 1)}
    encoder.add(1_767_000_000.0, LINKS[0], scope, "https://e/", {}, out)
    encoder.add(1_767_000_000.0, LINKS[0], {"headers": [("x", "y")]}, "https://e/", {}, out)
    first, second = (events.decode(raw).id for raw in out)
    assert first[:19] != second[:19]  # different random bits, not just the next counter value


def test_auto_without_the_c_module_warns_and_says_why(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(clickencoder, "_clickfast", None)
    monkeypatch.setattr(clickencoder, "C_MISSING", "edge._clickfast cannot be imported (gone)")
    with caplog.at_level("WARNING", logger="linkedge.edge"):
        encoder = new_encoder(TRUSTED, "auto")
    assert clickencoder.kind_of(encoder) == "python"
    (record,) = [r for r in caplog.records if "CLICK_ENCODER=auto" in r.getMessage()]
    assert record.levelname == "WARNING" and "(gone)" in record.reason  # type: ignore[attr-defined]
    caplog.clear()
    with caplog.at_level("WARNING", logger="linkedge.edge"):
        assert clickencoder.kind_of(new_encoder(TRUSTED, "python")) == "python"
    assert not caplog.records  # asked for by name: nothing to warn about


def test_a_click_in_the_second_before_the_epoch_counts_on_its_day() -> None:
    """ts -1.0 is 1969-12-31T23:59:59: the Python encoder once took its second for the 'nothing
    seen yet' sentinel and counted the click under an empty day (found by Hypothesis)."""
    scope = {"headers": [(b"user-agent", CHROME)], "client": ("1.2.3.4", 1)}
    _, counts = run_both(*pair(), [(-1.0, LINKS[0], scope, "https://e/")])
    assert counts == {"1:19691231:h": 1}
