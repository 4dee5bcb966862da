"""One definition of the click event: ``linkedge.events.encode`` of a ``Click``.

Hypothesis makes requests (any header bytes, invalid UTF-8, huge values, odd client addresses,
IPv6, X-Forwarded-For chains through trusted proxies, prefetch headers, UTM queries, GET and HEAD,
times across day boundaries, links with lone surrogates) and runs each through the C encoder and
the Python encoder, seeded alike. For every click:

- the C encoder's bytes, the Python encoder's bytes and ``encode`` of the ``Click`` the request
  stands for (``spec_click``, which reads the request the way the README and ``edge.clickinfo``
  describe it) are the same bytes, and ``decode`` gives that ``Click`` back;
- their counts are the same, one per click under ``counter_field(link, day, bot)``;
- a click that ``encode`` cannot write (a lone surrogate) is refused by both encoders with
  ``encode``'s own error, and changes nothing: no event, no count, no id taken.

The edge's templates (``EventEncoder``, ``encode_tail``, ``link_part``) are also held to
``encode`` for any ``Click`` at all, not only those a request can give.
"""

from __future__ import annotations

import dataclasses
from typing import Any
from urllib.parse import quote

import orjson
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from edge.clickencoder import Counts
from edge.clickinfo import FIELD_MAX, REFERER_MAX, client_ip, utm_params
from edge.records import LinkRecord
from linkedge import bots, events
from linkedge.events import Click, ClickIds

fast = pytest.importorskip("edge._clickfast", reason="the C module was not built")

from tests.test_clickencoder import SEED, TRUSTED, pair

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# Day boundaries (and the epoch, before which times are negative) that clicks are made around.
DAYS = [0, 1_767_225_600_000, 1_772_323_200_000, 4_102_444_800_000]

surrogate = st.integers(0xD800, 0xDFFF).map(chr)
text = st.text(max_size=40)
# Text that sometimes holds a lone surrogate, which JSON cannot carry.
odd_text = st.one_of(*[text] * 6, st.tuples(text, surrogate, text).map("".join))
header_value = st.one_of(
    st.binary(max_size=80),
    text.map(str.encode),
    st.sampled_from([b"", b"\xff\xfe\xfd", b"\xc3\x28", b'"\\\x00\x1f', "\u00e9\u2603".encode()]),
    st.tuples(st.sampled_from([b"a", "\u00e9".encode(), b"\xff"]), st.integers(0, 300_000)).map(
        lambda unit_count: unit_count[0] * unit_count[1]
    ),  # huge values, past every cut
)
address = st.one_of(
    st.ip_addresses().map(str),
    st.ip_addresses(network="10.0.0.0/8").map(str),  # trusted proxies
    st.ip_addresses(network="fd00::/8").map(str),
    st.ip_addresses(v=4).map(lambda ip: f"::ffff:{ip}"),
)
forwarded = st.lists(
    st.one_of(address, address, st.sampled_from(["garbage", "", " 203.0.113.9 ", "unknown"])),
    min_size=1,
    max_size=5,
).map(lambda hops: ", ".join(hops).encode("latin-1", "replace"))
utm_key = st.sampled_from(["utm_source", "UTM_Medium", "utm_campaign", "utm_term", "utm_content",
                           "utm_", "x", "utm_source"])  # fmt: skip
query = st.one_of(
    st.none(),
    st.binary(max_size=60),
    st.lists(st.tuples(utm_key, st.text(max_size=300)), max_size=6).map(
        lambda pairs: "&".join(f"{key}={quote(value)}" for key, value in pairs).encode()
    ),
)
prefetch = st.tuples(
    st.sampled_from(sorted(bots.PREFETCH_HEADER_NAMES)),
    st.sampled_from([b"prefetch", b" Prefetch ", b"preview", b"other", b"prerender", b"\xff"]),
)
CHROME = (
    b"Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    b"Chrome/120.0.0.0 Safari/537.36"
)
SAFARI = (
    b"Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like "
    b"Gecko) Version/17.0 Mobile/15E148 Safari/604.1"
)
FIREFOX = "Mozilla/5.0 (X11; Linux x86_64; rv:121.0) Gecko/20100101 Firefox/121.0 \u00e9".encode()
browser = st.sampled_from([CHROME, SAFARI, FIREFOX])
header = st.one_of(
    st.tuples(st.just(b"user-agent"), st.one_of(browser, browser, header_value)),
    st.tuples(
        st.sampled_from([b"user-agent", b"referer", b"accept-language", b"host"]), header_value
    ),
    st.tuples(st.just(b"x-forwarded-for"), forwarded),
    prefetch,
    st.tuples(st.binary(min_size=1, max_size=20), header_value),
    st.tuples(st.sampled_from([b"accept", b"cookie", b"x-moz"]), header_value),
)
client = st.one_of(
    st.none(),
    *[st.tuples(address, st.integers(0, 65535))] * 3,
    st.tuples(st.one_of(odd_text, st.just('1.2.3.4"\\')), st.integers(0, 65535)),
)
link = st.builds(
    LinkRecord,
    id=st.integers(1, 2**63 - 1),
    account_id=st.integers(1, 2**31),
    code=st.one_of(*[st.from_regex(r"[A-Za-z0-9_-]{1,64}", fullmatch=True)] * 3, odd_text),
    url=st.just("https://example.com/"),
)
location = st.one_of(
    st.just("https://example.com/"), st.text(max_size=200).map("https://t.example/".__add__),
    odd_text,
)  # fmt: skip
timestamp = st.tuples(st.sampled_from(DAYS), st.integers(-3_000, 3_000), st.integers(0, 999)).map(
    lambda parts: (parts[0] + parts[1] * 1000 + parts[2]) / 1000
)


@st.composite
def clicks(draw: st.DrawFn) -> tuple[float, LinkRecord, dict[str, Any], str]:
    headers = draw(st.lists(header, max_size=10))
    scope: dict[str, Any] = {
        "type": "http",
        "method": draw(st.sampled_from(["GET", "HEAD"])),
        "path": "/x",
        "query_string": draw(query),
        "headers": headers,
        "client": draw(client),
    }
    if draw(st.booleans()):  # as uvicorn builds it
        scope["headers"] = tuple(headers)
    return draw(timestamp), draw(link), scope, draw(location)


def spec_click(
    click_id: str, ts: float, link: LinkRecord, scope: dict[str, Any], location: str
) -> Click:
    """The ``Click`` a request stands for: the last line of each header the event keeps (user
    agent and referer as UTF-8, language and host as Latin-1, each cut to its length), the client
    address (the peer, or X-Forwarded-For through ``TRUSTED`` proxies), the UTM parameters of the
    query, and why it is a bot (HEAD, a prefetch header, a crawler's user agent)."""
    last: dict[bytes, bytes] = {}
    hops: list[str] = []
    is_prefetch = False
    for name, value in scope["headers"]:
        if name in (b"user-agent", b"referer", b"accept-language", b"host"):
            last[name] = value
        elif name == b"x-forwarded-for":
            hops.append(value.decode("latin-1"))
        elif name in bots.PREFETCH_HEADER_NAMES:
            is_prefetch = is_prefetch or bots.is_prefetch(name.decode(), value.decode("latin-1"))
    agent = last.get(b"user-agent", b"").decode("utf-8", "replace")[: bots.USER_AGENT_MAX]
    peer = str(scope["client"][0]) if scope["client"] else ""
    query_string = scope["query_string"]
    return Click(
        id=click_id,
        ts_ms=int(ts * 1000),
        link_id=link.id,
        account_id=link.account_id,
        code=link.code,
        target=location,
        ip=client_ip(peer, hops, TRUSTED) if hops else peer,
        user_agent=agent,
        referer=last.get(b"referer", b"").decode("utf-8", "replace")[:REFERER_MAX],
        accept_language=last.get(b"accept-language", b"").decode("latin-1")[:FIELD_MAX],
        host=last.get(b"host", b"").decode("latin-1")[:FIELD_MAX],
        utm=utm_params(query_string) if query_string else {},
        bot=bots.reason(scope["method"], agent, prefetch=is_prefetch),
    )


def attempt(
    encoder: Any, click: tuple[float, LinkRecord, dict[str, Any], str], counts: Counts
) -> bytes | type[BaseException]:
    out: list[bytes] = []
    before = dict(counts)
    try:
        encoder.add(*click, counts, out)
    except Exception as exc:  # noqa: BLE001 -- compared below: the same error, nothing changed
        assert out == [] and counts == before
        return type(exc)
    assert len(out) == 1
    return out[0]


@SETTINGS
@given(
    st.lists(clicks(), min_size=1, max_size=6),
    st.sampled_from([1, 2, 4096]),
    st.sampled_from([1, 65_536]),
)
def test_both_encoders_write_encode_s_bytes(
    requests: list[tuple[float, LinkRecord, dict[str, Any], str]], tails_kept: int, links_kept: int
) -> None:
    c, python = pair(tails_kept=tails_kept, links_kept=links_kept)
    ids = ClickIds()
    ids.seed(*SEED)
    c_counts: Counts = {}
    py_counts: Counts = {}
    spec_counts: Counts = {}
    accounts: dict[int, int] = {}  # a link's account never changes
    for ts, drawn, scope, location in requests:
        link = dataclasses.replace(
            drawn, account_id=accounts.setdefault(drawn.id, drawn.account_id)
        )
        request = (ts, link, scope, location)
        ts_ms = int(ts * 1000)
        candidate = spec_click("", ts, link, scope, location)
        try:
            events.encode(candidate)
        except orjson.JSONEncodeError:
            expected: bytes | type[BaseException] = orjson.JSONEncodeError
        else:
            spec = dataclasses.replace(candidate, id=ids.new(ts_ms))
            expected = events.encode(spec)
            field = events.counter_field(link.id, events.utc_day(ts_ms), spec.bot != bots.HUMAN)
            spec_counts[field] = spec_counts.get(field, 0) + 1
        event("refused" if expected is orjson.JSONEncodeError else f"bot={candidate.bot!r}")
        if candidate.utm:
            event("utm")
        if scope["client"] and candidate.ip != str(scope["client"][0]):
            event("ip from X-Forwarded-For")
        got_c = attempt(c, request, c_counts)
        got_python = attempt(python, request, py_counts)
        assert got_c == got_python == expected, request
        if isinstance(expected, bytes):
            assert events.decode(got_c) == spec  # type: ignore[arg-type]
    assert c_counts == py_counts == spec_counts


any_click = st.builds(
    Click,
    id=st.just(""),
    ts_ms=st.integers(-(2**62), 2**62),
    link_id=st.integers(-(2**63), 2**64 - 1),
    account_id=st.integers(-(2**63), 2**64 - 1),
    code=text,
    target=text,
    ip=text,
    user_agent=text,
    referer=text,
    accept_language=text,
    host=text,
    utm=st.dictionaries(text, text, max_size=4),
    bot=st.sampled_from(["", "head", "prefetch", "crawler"]),
)


@SETTINGS
@given(st.lists(any_click, min_size=1, max_size=4))
def test_the_templates_write_encode_s_bytes_for_any_click(many: list[Click]) -> None:
    encoder = events.EventEncoder(links_kept=2)
    accounts: dict[int, int] = {}  # a link's account never changes (EventEncoder keeps its part)
    for drawn in many:
        click = dataclasses.replace(
            drawn, account_id=accounts.setdefault(drawn.link_id, drawn.account_id)
        )
        tail = events.encode_tail(
            click.user_agent, click.referer, click.accept_language, click.host, click.utm, click.bot
        )
        raw = encoder.encode(
            click.ts_ms, click.link_id, click.account_id, click.code, click.target, click.ip, tail
        )
        expected = dataclasses.replace(click, id=events.decode(raw).id)
        assert raw == events.encode(expected)
        assert events.decode(raw) == expected
        assert events.link_part(click.link_id, click.account_id, click.code, click.target) in raw


def test_the_layout_is_cut_from_encode() -> None:
    """What the C encoder compiles in is what ``encode`` writes around the values."""
    click = Click(id="ID", ts_ms=42, link_id=1, account_id=2, code="c", target="t", ip="IP")
    raw = events.encode(click)
    head, after_id, after_ts, before_ip, after_ip = events.EVENT_LAYOUT
    assert raw.startswith(head + b"ID" + after_id + b"42" + after_ts + b'"l":1,')
    assert before_ip + b'"IP"' + after_ip + b'"ua":' in raw
