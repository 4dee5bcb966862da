"""Every allocation of a C encoder call failing, one at a time (a build with -DCLICKFAST_FAULTS).

``edge._clickfast._fail_after(n)``, compiled in only with that flag, makes the n-th allocation from
now fail, once. ``exercise`` calls ``record``, ``take`` and ``Hot.answer`` with every n up to past
the number of allocations a call makes (C's own and those of the Python callbacks it calls: a new
header set, a new link, a new day, X-Forwarded-For, a prefetch header, a scope handed to the
Python add), so that each failure point is hit. A call that fails must raise and leave the open
batch as it was; ``Hot.answer`` must still answer (or leave the request to the handler) and report
a click it could not record. At the end every click a call accepted, and no other, is in the
batches ``take`` returned: one whole event per line, the counters adding up to the events.

The module is built with the flag into a temporary directory and ``exercise`` runs in a
subprocess that loads it; under tests/test_clickfast_sanitizers.py, whose build has the flag, it
runs in that process, under ASan and UBSan.
"""

from __future__ import annotations

import collections
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
LOADER = """
import importlib.util, json, sys
import edge
spec = importlib.util.spec_from_file_location("edge._clickfast", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
sys.modules["edge._clickfast"] = module
edge._clickfast = module
from tests.test_clickfast_faults import exercise
print(json.dumps(exercise(module)))
"""


def exercise(fast: Any, rounds: int = 400) -> dict[str, Any]:
    """The calls with every n of ``rounds``, then the check of what ``take`` gave (see the module
    docstring); what happened, counted."""
    import orjson

    from edge import clickencoder, clickinfo
    from edge.clickencoder import ClickEncoder
    from edge.records import LinkRecord
    from linkedge import bots, events

    def held(function: Any) -> Any:
        """``function`` with no failure inside it: orjson does not survive one (it crashes), and
        the callbacks that use it are Python, whose failures raise as any other."""

        def call(*args: Any) -> Any:
            fast._fail_hold(True)
            try:
                return function(*args)
            finally:
                fast._fail_hold(False)

        return call

    trusted = (ipaddress.ip_network("10.0.0.0/8"),)
    python = ClickEncoder(trusted)
    encoder = fast.Encoder(
        fallback=held(python.add),
        request_tail=held(clickinfo.request_tail),
        client_ip=python.client_ip,
        prefetch_header=clickencoder.prefetch_header,
        prefetch_names=tuple(sorted(bots.PREFETCH_HEADER_NAMES)),
        link_part=held(events.link_part),
        utc_day=events.utc_day,
        counter_field=events.counter_field,
        dumps=held(orjson.dumps),
        layout=events.EVENT_LAYOUT,
        tails_kept=3,  # small caches: misses, inserts and clears on every few calls
        tails_bytes=clickencoder.TAILS_BYTES,
        tail_cuts=clickencoder.TAIL_CUTS,
        tail_overhead=clickencoder.TAIL_OVERHEAD,
        links_kept=2,
    )
    links = [
        LinkRecord(id=i, account_id=7, code=f"c{i}", url=f"https://example.com/{i}")
        for i in range(1, 4)
    ]

    def scope(kind: int, n: int) -> dict[str, Any]:
        headers = [(b"host", b"sho.rt"), (b"user-agent", b"Mozilla/5.0 (X11) Firefox/121.0")]
        if kind == 1:  # a header set not seen before: request_tail, the cache
            headers.append((b"referer", b"https://r.example/%d" % n))
        if kind == 2:  # X-Forwarded-For through a trusted proxy, a prefetch header
            headers += [(b"x-forwarded-for", b"203.0.113.9, 10.0.0.3"), (b"purpose", b"prefetch")]
        if kind == 3:  # a scope C hands to the Python add
            return {"method": "GET", "headers": [("user-agent", "str")], "client": ("1.2.3.4", 1)}
        return {"method": "HEAD" if kind == 4 else "GET", "query_string": b"utm_source=x",
                "headers": headers, "client": ("10.0.0.2", 5000)}  # fmt: skip

    failures: collections.Counter[str] = collections.Counter()
    batches: list[tuple[int, bytes, bytes]] = []
    accepted = 0

    def call(n: int, action: Any) -> Any:
        nonlocal accepted
        fast._fail_after(n)
        try:
            result = action()
        except Exception as exc:  # noqa: BLE001 -- counted; what the batch holds is checked
            fast._fail_after(-1)
            failures[type(exc).__name__] += 1
            return exc
        fast._fail_after(-1)
        return result

    def prefill() -> None:
        """300 clicks to each field the turns count into: past the cached small ints (256), so
        that counting a click allocates too."""
        nonlocal accepted
        for kind in (0, 2, 3, 4):
            for _ in range(300):
                encoder.record(links[0], scope(kind, 0), links[0].url)
        accepted += 1200

    prefill()
    for turn in range(rounds):
        n = turn % 97  # each failure point several times, with the batch at different sizes
        for kind in range(5):
            link = links[(n + kind) % 3 if kind == 1 else 0]
            done = call(n, lambda: encoder.record(link, scope(kind, n), link.url))  # noqa: B023
            accepted += not isinstance(done, Exception)
        if turn % 80 == 79:
            taken = call(turn % 60, encoder.take)
            if isinstance(taken, tuple):
                batches.append(taken)
                prefill()

    # Hot.answer: the answer, or None (the handler's turn) when it failed before deciding;
    # a click it could not record is reported through add_failed.
    target = type("Target", (), {})()
    location = "https://example.com/hot"
    start = {"type": "http.response.start", "status": 302, "headers": [(b"location", b"x")]}
    target.hot = (links[0], (start, {"type": "http.response.body"}, location, 1), None, False)
    entries = collections.OrderedDict({"hot": (float("inf"), target)})
    clock = type("Clock", (), {"now": 1.0, "wall": 2.0})()
    served, reported, answered = [0, 0, 0], [], 0
    hot = fast.Hot(
        entries=entries, clock=clock, tiers=[0, 0, 0, 0, 0], local=0, served=served,
        reserved=frozenset(), encoder=encoder, batch_full=lambda: None,
        add_failed=lambda link, exc: reported.append(type(exc).__name__),
        empty_body={"type": "http.response.body"},
    )  # fmt: skip
    for n in range(rounds):
        request = {**scope(n % 5 if n % 5 != 3 else 0, n), "path": "/hot"}
        answer = call(n, lambda: hot.answer(request))  # noqa: B023
        assert not isinstance(answer, Exception), answer  # Hot.answer never raises
        if answer is not None:
            assert answer[0] is start
            answered += 1
    accepted += answered - len(reported)
    assert served[1] <= answered  # a count it could not make is skipped, never made twice

    final = encoder.take()
    if final is not None:
        batches.append(final)
    clicks = 0
    for count, counters, entry in batches:
        lines = events.split_entry(entry)
        assert len(lines) == count and entry.count(b"\n") == count - 1
        decoded = [events.decode(line) for line in lines]
        expected: collections.Counter[str] = collections.Counter(
            events.counter_field(click.link_id, click.day, click.bot != "") for click in decoded
        )
        written = {
            field: int(value)
            for field, value in (line.split(" ") for line in counters.decode().splitlines())
        }
        assert written == dict(expected), (written, expected)
        clicks += count
    assert clicks == accepted, (clicks, accepted)
    return {"accepted": accepted, "failures": dict(failures), "answered": answered,
            "reported": len(reported), "batches": len(batches)}  # fmt: skip


# A generator of the Python callbacks that a failed allocation interrupts is closed with its
# MemoryError "ignored" (CPython's way): not this test's business.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_every_failed_allocation_leaves_the_batch_whole(tmp_path: Path) -> None:
    loaded = sys.modules.get("edge._clickfast")
    if loaded is not None and hasattr(loaded, "_fail_after"):  # the sanitizers' run: in-process
        seen = exercise(loaded)
    else:
        gcc = shutil.which("gcc")
        if gcc is None:
            pytest.skip("no gcc: the fault-injection build of edge._clickfast cannot be made")
        out = tmp_path / ("_clickfast" + str(sysconfig.get_config_var("EXT_SUFFIX")))
        build = subprocess.run(
            [gcc, "-shared", "-fPIC", "-O1", "-DCLICKFAST_FAULTS",
             "-I" + sysconfig.get_paths()["include"], str(ROOT / "edge" / "_clickfast.c"),
             "-o", str(out)],
            capture_output=True, text=True, check=False, timeout=300,
        )  # fmt: skip
        assert build.returncode == 0, build.stderr
        env = {**os.environ, "PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", textwrap.dedent(LOADER), str(out)],
            capture_output=True, text=True, check=False, timeout=170, cwd=ROOT, env=env,
        )  # fmt: skip
        assert done.returncode == 0, done.stderr[-6000:]
        seen = json.loads(done.stdout.strip().splitlines()[-1])
    # the injected failures did happen, in every kind of call, and most calls still went through
    assert seen["failures"].get("MemoryError", 0) > 100, seen
    assert seen["reported"] > 10 and seen["answered"] > 100, seen
    assert seen["accepted"] > 5000, seen
