"""Load synthetic clicks into an embedded ClickHouse, in a process of its own, and count them.

``python -m loadtest.bench.clickload SPEC.json OUT.json``: the analytics bench runs this before it
starts ``linkedge analytics``, because one process at a time can open an embedded engine's data
path. It applies the schema the way analytics does (``migrate_clickhouse``: ``clicks`` and every
materialized view), then inserts ``rows`` clicks (``loadtest.bench.clickgen``) in batches of
``batch`` rows, one insert each, with the settings of ``analytics.writer.ClickHouseWriter.insert``
(a deduplication token per batch). Only the insert calls are timed; ClickHouse runs the
materialized views inside each insert, so their work is in that time. Generating a batch is not.

Then it waits (bounded) for the background merges to finish, as they would have long before a
dashboard reads a month of clicks, and counts, for the bench's checks, the clicks of each checked
range twice: from the generated rows, and with ``uniqExact(click_id)`` on ``clicks``. Last, each
``probe`` (a dashboard query) runs here through ``linkedge.analyticssql.run``, the engine with no
HTTP in front, timed (median of ``PROBE_RUNS`` after a warm-up), with the table it read and
``EXPLAIN ESTIMATE``'s rows: what the API's time is made of.
"""

from __future__ import annotations

import dataclasses
import json
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from analytics.enrich import COLUMNS
from linkedge import analyticsquery, analyticssql
from linkedge.clickhouse import connect
from linkedge.migrate import migrate_clickhouse
from loadtest.bench.clickgen import ClickGenerator, Links

MERGE_WAIT_S = 600.0
PROBE_RUNS = 3
REFERENCE_BATCHES = 2  # inserts into a copy of clicks without views, before the measured ones
# What analytics.writer.ClickHouseWriter.insert passes, but the token.
INSERT_SETTINGS = {
    "deduplicate_blocks_in_dependent_materialized_views": 1,
    "max_partitions_per_insert_block": 0,
}
DIRECT_COUNT = """
SELECT uniqExact(click_id) FROM clicks
WHERE account_id = {account:UInt64} AND ts >= fromUnixTimestamp64Milli({lo:Int64}, 'UTC')
  AND ts < fromUnixTimestamp64Milli({hi:Int64}, 'UTC') AND (link_id = {link:UInt64} OR {link:UInt64} = 0)
"""
PARTS = """
SELECT table, count(), sum(rows), sum(bytes_on_disk) FROM system.parts
WHERE active AND database = currentDatabase() GROUP BY table ORDER BY table
"""


@dataclasses.dataclass(frozen=True)
class Check:
    """A range of one account's clicks (one link's with ``link_id``) whose count the bench checks."""

    name: str
    account_id: int
    start_ms: int
    end_ms: int
    link_id: int = 0


@dataclasses.dataclass(frozen=True)
class Spec:
    url: str  # chdb://PATH
    rows: int
    batch: int
    now_ms: int
    seed: int
    link_ids: list[int]  # in Zipf rank order
    accounts: list[int]
    codes: list[str]
    checks: list[Check]
    probes: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # name, body, link_id

    @classmethod
    def read(cls, path: Path) -> Spec:
        raw: dict[str, Any] = json.loads(path.read_text())
        raw["checks"] = [Check(**check) for check in raw["checks"]]
        return cls(**raw)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(dataclasses.asdict(self)))


def _links(spec: Spec) -> Links:
    return Links(
        ids=np.asarray(spec.link_ids, dtype=np.uint64),
        accounts=np.asarray(spec.accounts, dtype=np.uint64),
        codes=spec.codes,
        targets=[f"https://example.com/landing/{code}" for code in spec.codes],
    )


def _truth(table: Any, checks: list[Check]) -> list[int]:
    """Clicks of ``table`` in each checked range (every generated click id is distinct)."""
    ts = table.column("ts").cast("int64").to_numpy()
    account = table.column("account_id").to_numpy()
    link = table.column("link_id").to_numpy()
    counts = []
    for check in checks:
        hit = (account == check.account_id) & (ts >= check.start_ms) & (ts < check.end_ms)
        if check.link_id:
            hit &= link == check.link_id
        counts.append(int(hit.sum()))
    return counts


def _wait_merges(client: Any) -> float:
    started = time.monotonic()
    while time.monotonic() - started < MERGE_WAIT_S:
        if int(client.query("SELECT count() FROM system.merges").result_rows[0][0]) == 0:
            break
        time.sleep(1.0)
    return time.monotonic() - started


def _probe(client: Any, probe: dict[str, Any], account_id: int) -> dict[str, Any]:
    """One dashboard query run in-process: engine time, the table read, rows EXPLAIN estimates."""
    query = analyticsquery.parse(probe["body"])
    scope = analyticssql.Scope(account_id, probe.get("link_id") or None)
    statement = analyticssql.build(query, scope)
    analyticssql.run(client, query, scope, timeout_s=60)
    seconds = []
    for _ in range(PROBE_RUNS):
        started = time.perf_counter()
        analyticssql.run(client, query, scope, timeout_s=60)
        seconds.append(time.perf_counter() - started)
    estimate = client.query("EXPLAIN ESTIMATE " + statement.sql, parameters=statement.parameters)
    read = {
        str(row[1]): int(row[3]) for row in estimate.result_rows
    }  # database, table, parts, rows, marks
    return {
        "name": probe["name"],
        "engine_ms": statistics.median(seconds) * 1000,
        "source": statement.source.table,
        "estimated_rows": read,
    }


def _reference(client: Any, spec: Spec) -> dict[str, float]:
    """The same kind of inserts into a copy of ``clicks`` with no view on it: what the views cost."""
    client.command("DROP TABLE IF EXISTS bench_clicks_no_views")
    client.command("CREATE TABLE bench_clicks_no_views AS clicks")
    generator = ClickGenerator(
        _links(spec), now_ms=spec.now_ms, people=spec.rows // 4, seed=spec.seed + 1
    )
    rows, seconds = 0, 0.0
    for number in range(REFERENCE_BATCHES):
        table = generator.batch(min(spec.batch, spec.rows))
        settings = dict(
            INSERT_SETTINGS, insert_deduplication_token=f"bench-ref-{spec.seed}-{number}"
        )
        started = time.perf_counter()
        client.insert_arrow("bench_clicks_no_views", table, settings=settings)
        seconds += time.perf_counter() - started
        rows += table.num_rows
    client.command("DROP TABLE bench_clicks_no_views")
    print(
        f"clickload: reference, no views: {rows:,} rows in {seconds:.1f}s ({rows / seconds:,.0f} rows/s)",
        flush=True,
    )
    return {"rows": rows, "insert_s": seconds}


def load(spec: Spec) -> dict[str, Any]:
    client = connect(spec.url)
    migrate_clickhouse(spec.url, client)
    reference = _reference(client, spec)
    generator = ClickGenerator(
        _links(spec), now_ms=spec.now_ms, people=spec.rows // 4, seed=spec.seed
    )
    inserted, insert_s, generate_s = 0, 0.0, 0.0
    batches: list[float] = []
    truth = [0] * len(spec.checks)
    while inserted < spec.rows:
        started = time.perf_counter()
        table = generator.batch(min(spec.batch, spec.rows - inserted))
        assert table.column_names == list(COLUMNS)
        generate_s += time.perf_counter() - started
        truth = [a + b for a, b in zip(truth, _truth(table, spec.checks), strict=True)]
        settings = dict(
            INSERT_SETTINGS, insert_deduplication_token=f"bench-{spec.seed}-{len(batches)}"
        )
        started = time.perf_counter()
        client.insert_arrow("clicks", table, settings=settings)
        seconds = time.perf_counter() - started
        insert_s += seconds
        inserted += table.num_rows
        batches.append(seconds)
        print(
            f"clickload: {inserted:,}/{spec.rows:,} rows, batch of {table.num_rows:,} in {seconds:.1f}s "
            f"({table.num_rows / seconds:,.0f} rows/s)",
            flush=True,
        )
    merge_s = _wait_merges(client)
    direct = [
        int(client.query(DIRECT_COUNT, parameters={
            "account": c.account_id, "lo": c.start_ms, "hi": c.end_ms, "link": c.link_id,
        }).result_rows[0][0])
        for c in spec.checks
    ]  # fmt: skip
    parts = {
        str(t): {"parts": int(p), "rows": int(r), "bytes": int(b)}
        for t, p, r, b in client.query(PARTS).result_rows
    }
    account = spec.checks[0].account_id if spec.checks else int(spec.accounts[0])
    probes = [_probe(client, probe, account) for probe in spec.probes]
    client.close()
    return {
        "reference": reference,
        "probes": probes,
        "rows": inserted,
        "insert_s": insert_s,
        "generate_s": generate_s,
        "batches_s": batches,
        "merge_wait_s": merge_s,
        "truth": truth,
        "direct": direct,
        "parts": parts,
        "finished": datetime.now().isoformat(),
    }


def main() -> int:
    spec_path, out_path = (Path(arg) for arg in sys.argv[1:3])
    out_path.write_text(json.dumps(load(Spec.read(spec_path))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
