"""The click event's wire format and ids: the edge's fast paths against the reference forms."""

from __future__ import annotations

import dataclasses
import random
import time
import uuid

import orjson
import pytest

from linkedge import events
from linkedge.events import Click, ClickIds, decode, encode

CHROME = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36"
)

CLICKS = [
    Click(
        id="0190f5c0-0000-7000-8000-000000000001",
        ts_ms=1_764_000_000_123,
        link_id=1,
        account_id=2,
        code="abc",
        target="https://example.com/",
        ip="203.0.113.7",
    ),
    Click(
        id=str(uuid.uuid4()),
        ts_ms=0,
        link_id=2**53,
        account_id=0,
        code="x_-Y",
        target="https://example.com/p?q=1&utm_source=a#frag",
        ip="2001:db8::1",
        user_agent=CHROME,
        referer='https://ref.example/\u00e9"quoted"\\',
        accept_language="fr-CH, fr;q=0.9",
        host="sho.rt:8443",
        utm={"utm_source": "news", "utm_campaign": "\u2603 \n\t"},
        bot="crawler",
    ),
    Click(
        id="i",
        ts_ms=1,
        link_id=3,
        account_id=4,
        code="c",
        target="t",
        ip="",
        user_agent="\x00\x1f\u2028\ufffd",
        referer="",
        accept_language="",
        host="",
        utm={},
        bot="head",
    ),
]


def encode_like_the_edge(encoder: events.EventEncoder, click: Click) -> tuple[bytes, Click]:
    """``click`` through the edge's path (``EventEncoder`` + ``encode_tail``), and the ``Click``
    it stands for (the encoder makes its own id)."""
    tail = events.encode_tail(
        click.user_agent, click.referer, click.accept_language, click.host, click.utm, click.bot
    )
    raw = encoder.encode(
        click.ts_ms, click.link_id, click.account_id, click.code, click.target, click.ip, tail
    )
    return raw, dataclasses.replace(click, id=decode(raw).id)


@pytest.mark.parametrize("click", CLICKS)
def test_the_edge_encoding_is_byte_identical_to_encode(click: Click) -> None:
    raw, expected = encode_like_the_edge(events.EventEncoder(), click)
    assert raw == encode(expected)
    assert decode(raw) == expected


def test_the_edge_encoding_is_byte_identical_on_random_values() -> None:
    rng = random.Random(7)
    alphabet = "aZ09 \"\\/\x00\x01\x1f\x7f\n\r\t\u00e9\u2028\u2029\ufeff\U0001f600<>&'"

    def text() -> str:
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 40)))

    encoder = events.EventEncoder(links_kept=8)  # small: link parts are dropped and rebuilt
    for _ in range(500):
        link_id = rng.randrange(0, 20)
        click = Click(
            id="",
            ts_ms=rng.randrange(0, 2**48),
            link_id=link_id,
            account_id=link_id + 1,  # a link's account never changes
            code=text(),
            target=text(),
            ip=text(),
            user_agent=text(),
            referer=text(),
            accept_language=text(),
            host=text(),
            utm={text(): text() for _ in range(rng.randrange(0, 3))},
            bot=text(),
        )
        raw, expected = encode_like_the_edge(encoder, click)
        assert raw == encode(expected)


def test_the_edge_encoding_refuses_what_encode_refuses() -> None:
    surrogate = dataclasses.replace(CLICKS[0], user_agent="lone surrogate \ud800")  # not UTF-8
    with pytest.raises(orjson.JSONEncodeError):
        encode_like_the_edge(events.EventEncoder(), surrogate)
    with pytest.raises(orjson.JSONEncodeError):
        encode(surrogate)


def _reference_uuid7(ts_ms: int, rand: int) -> str:
    """The UUIDv7 of 48-bit ``ts_ms`` and 74 random bits, built the slow, obvious way."""
    value = (
        ((ts_ms & ((1 << 48) - 1)) << 80)
        | (0x7 << 76)
        | ((rand >> 62) << 64)
        | (0b10 << 62)
        | (rand & ((1 << 62) - 1))
    )
    return str(uuid.UUID(int=value))


def test_click_ids_match_the_uuid_module() -> None:
    ids = ClickIds()
    high, low = ids._high, ids._low
    for n, ts_ms in enumerate(
        [0, 1, 1_764_000_000_123, (1 << 48) - 1, int(time.time() * 1000)] * 200, 1
    ):
        rand = (high << 48) | ((low + n) & ((1 << 48) - 1))
        assert ids.new(ts_ms) == _reference_uuid7(ts_ms, rand)


def test_click_ids_are_version_7_unique_and_time_ordered() -> None:
    ids = ClickIds()
    ids._low = (1 << 48) - 500  # the counter part wraps around within this run
    now = int(time.time() * 1000)
    made = [ids.new(now + n // 100) for n in range(2000)]
    parsed = [uuid.UUID(made_id) for made_id in made]
    assert all(u.version == 7 and u.variant == uuid.RFC_4122 for u in parsed)
    assert [str(u) for u in parsed] == made  # canonical lower-case form
    assert len(set(made)) == len(made)
    assert all(u.int >> 80 == now + n // 100 for n, u in enumerate(parsed))
    # Ordered by time across milliseconds (within one millisecond the counter orders them unless
    # the 48-bit counter part wraps, which it does once here, on purpose).
    assert made[:100] == sorted(made[:100])
    by_ms = [made[n] for n in range(0, 2000, 100)]
    assert by_ms == sorted(by_ms)


def test_reseeded_generators_do_not_collide() -> None:
    first, second = ClickIds(), ClickIds()
    second.reseed()
    assert (first._high, first._low) != (second._high, second._low)
    assert not {first.new(5) for _ in range(1000)} & {second.new(5) for _ in range(1000)}


def test_utc_day() -> None:
    assert events.utc_day(0) == "19700101"
    assert events.utc_day(1_764_028_799_999) == "20251124"
    assert events.utc_day(1_764_028_800_000) == "20251125"
    assert CLICKS[0].day == events.utc_day(CLICKS[0].ts_ms)


def test_an_entry_holds_its_events_in_order_and_splits_back() -> None:
    encoded = [encode(click) for click in CLICKS]
    entry = events.join_entry(encoded)
    assert events.split_entry(entry) == encoded
    assert [decode(raw) for raw in events.split_entry(entry)] == CLICKS
    assert events.split_entry(encoded[0]) == [encoded[0]]  # a one-event entry is the event itself
    assert events.split_entry(entry.decode()) == encoded
    assert events.split_entry(b"") == []


def test_no_encoded_event_holds_the_entry_separator() -> None:
    hostile = Click(
        id="0190f5c0-0000-7000-8000-0000000000ff",
        ts_ms=1,
        link_id=1,
        account_id=1,
        code="nl",
        target="https://example.com/\n",
        ip="203.0.113.9",
        user_agent="a\nb\r\nc\u2028",
        referer="\n",
        utm={"utm_source": "x\ny"},
    )
    raw = encode(hostile)
    assert events.ENTRY_SEPARATOR not in raw
    assert events.split_entry(events.join_entry([raw, raw])) == [raw, raw]


def test_event_encoder_ids_are_unique_and_ordered() -> None:
    encoder = events.EventEncoder()
    tail = events.encode_tail("", "", "", "", {}, "")
    made = [
        decode(
            encoder.encode(1_764_000_000_000 + n // 50, 1, 1, "c", "https://e.com/", "::1", tail)
        ).id
        for n in range(1000)
    ]
    assert len(set(made)) == len(made)
    assert made == sorted(made)
