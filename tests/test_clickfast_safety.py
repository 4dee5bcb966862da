"""The C module when the Python it calls turns against it: callbacks that change the scope and its
header list under the walk, call the encoder again, or clear what ``Hot`` reads; objects never
initialised or initialised twice; a layout the module was not built for.

Each case must end without a crash and with a consistent result: the click the Python encoder
gives for the same calls (it walks the list as a ``for`` loop does, and so does C), or an
exception with the open batch as it was. tests/test_clickfast_sanitizers.py runs this file again
under AddressSanitizer, which sees a freed object that is read even when it does not crash.
"""

from __future__ import annotations

import collections
import gc
import math
from collections.abc import Callable
from typing import Any

import orjson
import pytest

from edge import clickencoder, clickinfo
from edge.clickencoder import ClickEncoder, Counts
from edge.records import LinkRecord
from linkedge import bots, events

fast = pytest.importorskip("edge._clickfast", reason="the C module was not built")

from tests.test_clickencoder import CHROME, LINKS, TRUSTED, pair

TS = 1_767_225_599.5


def fresh_headers() -> list[tuple[bytes, bytes]]:
    """Headers whose values are new objects, so that dropping them from the list frees them."""
    return [
        (b"host", bytes(bytearray(b"sho.rt"))),
        (b"user-agent", bytes(bytearray(CHROME))),
        (b"referer", bytes(bytearray(b"https://news.example/" + b"r" * 100))),
        (b"purpose", b"other"),  # a prefetch header that says no: prefetch_header is called
        (b"accept-language", bytes(bytearray(b"de-CH"))),
        (b"x-forwarded-for", b"203.0.113.5, 10.0.0.3"),
        (b"user-agent", bytes(bytearray(b"a later line " * 3))),
    ]


def c_encoder(python: ClickEncoder, **callbacks: Any) -> Any:
    """A C encoder seeded like ``python``, with some callbacks replaced."""
    args: dict[str, Any] = {
        "fallback": python.add,
        "request_tail": clickinfo.request_tail,
        "client_ip": python.client_ip,
        "prefetch_header": clickencoder.prefetch_header,
        "prefetch_names": tuple(sorted(bots.PREFETCH_HEADER_NAMES)),
        "link_part": events.link_part,
        "utc_day": events.utc_day,
        "counter_field": events.counter_field,
        "dumps": orjson.dumps,
        "layout": events.EVENT_LAYOUT,
        "tails_kept": clickencoder.TAILS_CACHED,
        "tails_bytes": clickencoder.TAILS_BYTES,
        "tail_cuts": clickencoder.TAIL_CUTS,
        "tail_overhead": clickencoder.TAIL_OVERHEAD,
        "links_kept": clickencoder.LINKS_CACHED,
        **callbacks,
    }
    encoder = fast.Encoder(**args)
    encoder.seed(0x2ABCDEF, 0x123456789ABC)
    return encoder


MUTATIONS: dict[str, Callable[[list[Any]], None]] = {
    "clear": lambda headers: headers.clear(),
    "shrink": lambda headers: headers.__delitem__(slice(0, len(headers) - 1)),
    "grow": lambda headers: headers.extend([(b"x-pad-%d" % i, b"v" * i) for i in range(300)]),
    "replace": lambda headers: headers.__setitem__(
        slice(None), [(b"user-agent", b"replaced " + bytes(bytearray(b"x" * 50)))] * 3
    ),
    "append_agent": lambda headers: headers.append((b"user-agent", b"appended")),
}


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_prefetch_header_that_changes_the_header_list(
    mutation: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A prefetch_header callback changes the list under the walk (the pointer array reallocated,
    pairs and values freed): C reads on from the list as it now is, as the Python encoder's ``for``
    loop does, and both give the same event and counts."""
    change = MUTATIONS[mutation]

    def make_callback(scope: dict[str, Any]) -> Callable[[bytes, bytes], bool]:
        def callback(name: bytes, value: bytes) -> bool:
            change(scope["headers"])
            gc.collect()
            return bots.is_prefetch(name.decode(), value.decode("latin-1"))

        return callback

    results = []
    for kind in ("c", "python"):
        scope = {"method": "GET", "query_string": b"utm_source=x", "headers": fresh_headers(),
                 "client": ("10.0.0.2", 1)}  # fmt: skip
        callback = make_callback(scope)
        python = ClickEncoder(TRUSTED)
        python.seed(0x2ABCDEF, 0x123456789ABC)
        out: list[bytes] = []
        counts: Counts = {}
        if kind == "c":
            c_encoder(python, prefetch_header=callback).add(
                TS, LINKS[0], scope, LINKS[0].url, counts, out
            )
        else:
            monkeypatch.setattr(clickencoder, "prefetch_header", callback)
            python.add(TS, LINKS[0], scope, LINKS[0].url, counts, out)
            monkeypatch.undo()
        results.append((out, counts))
    assert results[0] == results[1]
    click = events.decode(results[0][0][0])
    assert click.host == "sho.rt" and click.referer.startswith("https://news.example/")
    if mutation in ("clear", "shrink"):  # the rest of the list is gone before it is read
        assert (click.user_agent, click.accept_language, click.ip) == (
            CHROME.decode(),
            "",
            "10.0.0.2",
        )
    if mutation == "append_agent":
        assert click.user_agent == "appended"


def test_many_clicks_whose_callback_empties_the_list() -> None:
    """The case that crashed the walk over borrowed items (a segfault within 50 clicks): the
    callback empties the list and the collector and new allocations reuse the freed memory."""
    scope: dict[str, Any] = {}

    def callback(name: bytes, value: bytes) -> bool:
        scope["headers"].clear()
        gc.collect()
        [bytes(bytearray(b"Z" * 40)) for _ in range(1000)]  # refill the freed memory
        return False

    c = c_encoder(ClickEncoder(TRUSTED), prefetch_header=callback)
    out: list[bytes] = []
    for _ in range(50):
        scope["headers"] = [(b"purpose", b"x")] + [
            (b"user-agent", bytes(bytearray(b"agent %d" % j))) for j in range(20)
        ]
        c.add(TS, LINKS[0], scope, LINKS[0].url, {}, out)
    assert {events.decode(raw).user_agent for raw in out} == {""}


def test_callbacks_after_the_walk_free_the_scope_and_its_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """request_tail, utc_day and client_ip drop the header list, its values, the client and the
    query from the scope: each event says what the scope said when it was read, as the Python
    encoder's does with the same callbacks."""
    scope: dict[str, Any] = {}

    def reset() -> None:
        scope.clear()
        scope.update(method="HEAD", query_string=bytes(bytearray(b"utm_medium=mail")),
                     headers=fresh_headers(), client=("10.0.0.2", 1))  # fmt: skip

    def drop() -> None:
        headers = scope.get("headers")
        if headers:
            headers.clear()
        scope.clear()
        gc.collect()

    def request_tail(*args: Any) -> tuple[bool, bytes]:
        drop()
        return clickinfo.request_tail(*args)

    def utc_day(ts_ms: int) -> str:
        drop()
        return events.utc_day(ts_ms)

    class Dropping(ClickEncoder):
        def client_ip(self, peer: str, forwarded: list[str]) -> str:
            drop()
            return super().client_ip(peer, forwarded)

    c = c_encoder(Dropping(TRUSTED), request_tail=request_tail, utc_day=utc_day,
                  client_ip=Dropping(TRUSTED).client_ip)  # fmt: skip
    monkeypatch.setattr(clickencoder, "request_tail", request_tail)
    monkeypatch.setattr(clickencoder, "utc_day", utc_day)
    reference = Dropping(TRUSTED)
    reference.seed(0x2ABCDEF, 0x123456789ABC)
    results = []
    for encoder in (c, reference):
        out: list[bytes] = []
        counts: Counts = {}
        for i in range(3):
            reset()
            encoder.add(TS + i * 86_400, LINKS[1], scope, LINKS[1].url, counts, out)
        results.append((out, counts))
    assert results[0] == results[1]
    first, second = (events.decode(raw) for raw in results[0][0][:2])
    assert first.ip == ""  # request_tail (a new header set) dropped the client before it was read
    assert (second.ip, second.bot, second.utm) == ("203.0.113.5", "head", {"utm_medium": "mail"})
    assert second.user_agent == "a later line " * 3


def test_a_callback_that_calls_the_encoder_again_is_refused() -> None:
    """A callback that calls record, take, add or seed of the encoder that called it gets
    RuntimeError; the click it was called for fails, and the open batch stays as it was."""
    holder: list[Any] = []
    calls = {"n": 0}

    def reenter(name: bytes, value: bytes) -> bool:
        calls["n"] += 1
        action = calls["n"] % 4
        encoder = holder[0]
        if action == 0:
            encoder.take()
        elif action == 1:
            encoder.record(LINKS[0], {"headers": []}, "https://e/")
        elif action == 2:
            encoder.add(TS, LINKS[0], {"headers": []}, "https://e/", {}, [])
        else:
            encoder.seed(1, 2)
        return False

    python = ClickEncoder(TRUSTED)
    c = c_encoder(python, prefetch_header=reenter)
    holder.append(c)
    plain = {"headers": [(b"user-agent", CHROME)], "client": ("1.2.3.4", 1)}
    c.record(LINKS[0], plain, "https://e/")
    for _ in range(4):
        with pytest.raises(RuntimeError, match="inside one of its calls"):
            c.record(LINKS[0], {"headers": [(b"sec-purpose", b"x")]}, "https://e/")
    with pytest.raises(RuntimeError, match="inside one of its calls"):
        c.add(TS, LINKS[0], {"headers": [(b"purpose", b"x")]}, "https://e/", {}, [])
    c.record(LINKS[0], plain, "https://e/")
    clicks, counters, entry = c.take()
    assert clicks == 2 and len(events.split_entry(entry)) == 2
    assert sum(int(line.split()[1]) for line in counters.splitlines()) == 2


def test_a_python_add_that_fails_after_counting_leaves_the_batch_as_it_was() -> None:
    """A scope C hands to the Python add, which appends and counts and then raises: nothing of
    that click joins the open batch."""

    def add(ts: float, link: LinkRecord, scope: Any, location: str, counts: Counts,
            out: list[bytes]) -> None:  # fmt: skip
        out.append(b'{"v":1}')
        counts["1:20260101:h"] = counts.get("1:20260101:h", 0) + 1
        raise ValueError("after counting")

    c = c_encoder(ClickEncoder(TRUSTED), fallback=add)
    c.record(LINKS[0], {"headers": [(b"user-agent", CHROME)], "client": None}, "https://e/")
    with pytest.raises(ValueError, match="after counting"):
        c.record(LINKS[0], {"headers": [("str", "names")]}, "https://e/")
    clicks, counters, entry = c.take()
    assert clicks == 1 and counters.endswith(b" 1") and b"\n" not in entry


@pytest.mark.parametrize("ts", [math.nan, math.inf, -math.inf, 1e300])
def test_a_time_out_of_range_is_refused(ts: float) -> None:
    c, _ = pair()
    with pytest.raises(OverflowError):
        c.add(ts, LINKS[0], {"headers": []}, "https://e/", {}, [])


def test_objects_not_initialised_or_initialised_twice_refuse() -> None:
    bare = fast.Encoder.__new__(fast.Encoder)
    with pytest.raises(RuntimeError, match="not initialised"):
        bare.record(LINKS[0], {"headers": []}, "https://e/")
    with pytest.raises(RuntimeError, match="not initialised"):
        bare.take()
    with pytest.raises(RuntimeError, match="not initialised"):
        bare.add(TS, LINKS[0], {"headers": []}, "https://e/", {}, [])
    c, _ = pair()
    with pytest.raises(RuntimeError, match="initialised once"):
        c.__init__()
    hot = fast.Hot.__new__(fast.Hot)
    with pytest.raises(RuntimeError, match="not initialised"):
        hot.answer({"method": "GET", "path": "/abc"})


def test_a_layout_the_module_was_not_built_for_is_refused() -> None:
    layout = events.EVENT_LAYOUT
    for wrong in [
        (layout[0], b'","time":', *layout[2:]),
        (b"x" * 40, *layout[1:]),
        layout[:4],
        (layout[0].decode(), *layout[1:]),
    ]:
        with pytest.raises((ValueError, TypeError)):
            c_encoder(ClickEncoder(TRUSTED), layout=wrong)


class Clock:
    now = 100.0
    wall = 1_767_225_599.0


class Target:
    def __init__(self, hot: tuple[Any, ...]) -> None:
        self.hot = hot


def test_hot_answer_when_callbacks_clear_what_it_reads() -> None:
    """The encoder's callbacks (run inside ``Hot.answer``) drop the cache entry, the target and
    its answer, and empty the counter lists: the answer is still the prebuilt one, the click is
    recorded, and the counts that can no longer be counted are skipped, not written out of
    bounds."""
    link = LinkRecord(id=5, account_id=1, code="hot", url="https://example.org/hot")
    entries: collections.OrderedDict[str, Any] = collections.OrderedDict()
    tiers, served = [0, 0, 0], [0, 0, 0, 0]
    batch_full_calls: list[int] = []
    failed: list[Any] = []

    def fill() -> None:
        start = {"type": "http.response.start", "status": 302,
                 "headers": [(b"location", ("https://example.org/" + "hot").encode())]}  # fmt: skip
        response = (start, {"type": "http.response.body", "body": b""},
                    "https://example.org/" + "hot", 1)  # fmt: skip
        entries["hot"] = (1000.0, Target((link, response, None, False)))

    def vandal(name: bytes, value: bytes) -> bool:
        entries.clear()
        tiers.clear()
        served.clear()
        gc.collect()
        return False

    python = ClickEncoder(TRUSTED)
    encoder = c_encoder(python, prefetch_header=vandal)
    encoder.limit = 1
    hot = fast.Hot(
        entries=entries, clock=Clock(), tiers=tiers, local=1, served=served,
        reserved=frozenset({"api"}), encoder=encoder,
        batch_full=lambda: batch_full_calls.append(1),
        add_failed=lambda link, exc: failed.append(exc), empty_body={"type": "x"},
    )  # fmt: skip
    for method in ("GET", "HEAD"):
        fill()
        tiers[:], served[:] = [0, 0, 0], [0, 0, 0, 0]
        scope = {"method": method, "path": "/hot", "query_string": b"",
                 "headers": [(b"user-agent", CHROME), (b"purpose", b"prefetch")],
                 "client": ("1.2.3.4", 1)}  # fmt: skip
        answer = hot.answer(scope)
        assert answer is not None and answer[0]["status"] == 302
        assert answer[0]["headers"] == [(b"location", b"https://example.org/hot")]
        assert (answer[1] == {"type": "x"}) == (method == "HEAD")
        assert served == [] and failed == []
    assert batch_full_calls == [1, 1]
    clicks, _, entry = encoder.take()
    assert clicks == 2
    assert [events.decode(raw).bot for raw in events.split_entry(entry)] == ["", "head"]


def test_a_callback_that_walks_every_object_finds_no_half_made_one() -> None:
    """A callback that looks at every object the collector tracks (a memory profiler would) while
    the walk is under way: the request tuple being filled is not among them."""

    def callback(name: bytes, value: bytes) -> bool:
        for thing in gc.get_objects():
            if type(thing) is tuple:
                [type(item) for item in thing]  # reads every item
        return False

    c = c_encoder(ClickEncoder(TRUSTED), prefetch_header=callback)
    out: list[bytes] = []
    scope = {"headers": [(b"user-agent", CHROME), (b"purpose", b"x"), (b"host", b"h")]}
    c.add(TS, LINKS[0], scope, LINKS[0].url, {}, out)
    assert events.decode(out[0]).host == "h"
