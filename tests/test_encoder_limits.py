"""The click encoders under hostile sizes and failed allocations, each in a subprocess of its own.

- Whatever headers visitors send, a worker's header-set cache stays within its byte bound
  (``clickencoder.TAILS_BYTES``): 10,000 distinct 300 KB user agents, and 20,000 distinct header
  sets just short of the cuts, leave the process's resident memory within ``RSS_BOUND`` of where
  it started.
- When an allocation fails inside ``record`` or ``take`` of the C encoder (the address space
  capped with ``RLIMIT_AS``), the call raises ``MemoryError`` and the open batch stays as it was:
  once memory is back, ``take`` returns every click that ``record`` accepted, each line a whole
  event, the counters adding up to the same number.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from edge import clickencoder

RSS_BOUND = 64 * 1024 * 1024  # > TAILS_BYTES (16 MiB) and the allocator's slack; < 4096 x 300 KB

PRELUDE = """
import json, os, resource, sys
from edge.clickencoder import new_encoder
from edge.records import LinkRecord
from linkedge import events

LINK = LinkRecord(id=1, account_id=7, code="abc", url="https://example.com/")
PAGE = os.sysconf("SC_PAGE_SIZE")

def rss():
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE

def scope(agent, referer=b"", language=b"en", query=b""):
    headers = [(b"host", b"sho.rt"), (b"user-agent", agent), (b"referer", referer),
               (b"accept-language", language)]
    return {"type": "http", "method": "GET", "path": "/abc", "query_string": query,
            "headers": headers, "client": ("203.0.113.9", 5000)}
"""

MEMORY = """
encoder = new_encoder((), sys.argv[1])
for i in range(200):  # warm up: the encoder's own caches and the allocator's arenas
    encoder.record(LINK, scope(b"Mozilla/5.0 warm %d" % i), LINK.url)
encoder.take()
start = rss()
huge = 0
# Distinct past the first 512 characters, as an attack on the cache would make them: what is
# stored of them, and their bot classification (cached by linkedge.bots), is the same.
for i in range(10_000):  # distinct 300 KB user agents: longer than any cut, never remembered
    encoder.record(LINK, scope(b"Mozilla/5.0 " + b"x" * 300_000 + b"%08d" % i), LINK.url)
    if encoder.pending >= 200:
        huge += encoder.take()[0]
after_huge = rss()
near = 0
for i in range(20_000):  # distinct sets just short of the cuts: remembered up to the byte bound
    agent = b"Mozilla/5.0 " + b"a" * 1990 + b"%08d" % i
    encoder.record(LINK, scope(agent, b"https://r.example/" + b"r" * 8000, b"l" * 250,
                               b"utm_source=" + b"q" * 2000), LINK.url)
    if encoder.pending >= 200:
        near += encoder.take()[0]
print(json.dumps({"start": start, "after_huge": after_huge, "end": rss(),
                  "huge": huge, "near": near}))
"""

ALLOCATION = """
encoder = new_encoder((), "c")
agent = b"Mozilla/5.0 " + b"a" * 1500
request = scope(agent)
encoder.record(LINK, request, LINK.url)
soft, hard = resource.getrlimit(resource.RLIMIT_AS)
with open("/proc/self/statm") as statm:
    size = int(statm.read().split()[0]) * PAGE
recorded = failed = 0
resource.setrlimit(resource.RLIMIT_AS, (size + 48 * 1024 * 1024, hard))
for _ in range(200_000):
    try:
        encoder.record(LINK, request, LINK.url)
    except MemoryError:
        failed += 1
        if failed >= 20:
            break
    else:
        recorded += 1
take_failed = False
with open("/proc/self/statm") as statm:  # no room left for a copy of the entry
    size = int(statm.read().split()[0]) * PAGE
resource.setrlimit(resource.RLIMIT_AS, (size + 1024 * 1024, hard))
try:
    encoder.take()
except MemoryError:
    take_failed = True
resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
clicks, counters, entry = encoder.take()
lines = events.split_entry(entry)
decoded = [events.decode(line) for line in lines]
total = sum(int(line.split()[1]) for line in counters.decode().splitlines())
print(json.dumps({"recorded": recorded + 1, "failed": failed, "take_failed": take_failed,
                  "clicks": clicks, "lines": len(lines), "decoded": len(decoded),
                  "counted": total, "agents": len({click.user_agent for click in decoded})}))
"""


def run(script: str, *args: str) -> dict[str, object]:
    code = textwrap.dedent(PRELUDE) + textwrap.dedent(script)
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        capture_output=True,
        text=True,
        timeout=170,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["c", "python"])
def test_hostile_header_sets_leave_memory_bounded(kind: str) -> None:
    if kind == "c" and clickencoder._clickfast is None:
        pytest.skip("edge._clickfast not built here")
    seen = run(MEMORY, kind)
    assert seen["huge"] == 10_000 and seen["near"] == 20_000  # every click was encoded
    start, after_huge, end = (int(seen[key]) for key in ("start", "after_huge", "end"))  # type: ignore[call-overload]
    assert after_huge - start < RSS_BOUND, seen
    assert end - start < RSS_BOUND, seen


def test_failed_allocations_leave_the_open_batch_whole() -> None:
    if clickencoder._clickfast is None:
        pytest.skip("edge._clickfast not built here")
    seen = run(ALLOCATION)
    assert seen["failed"] == 20, seen  # the cap was reached: record raised MemoryError
    assert seen["take_failed"], seen
    recorded = seen["recorded"]
    assert seen["clicks"] == seen["lines"] == seen["decoded"] == seen["counted"] == recorded, seen
    assert seen["agents"] == 1, seen
