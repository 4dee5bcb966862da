"""The "random-code flood" rows: what wrk on random codes costs Postgres, hot links beside it.

Each row has its own ``linkedge edge`` (one worker on core 1, ``HOT_CACHE``), warmed with the Zipf
codes. With the aggregator paused throughout, the Zipf sequence of hot links is loaded alone for
``FLOOD_SECONDS`` (``HOT_CONNECTIONS`` connections), then again while a second wrk GETs a new random
code per request (``flood.lua``, ``BENCH_CONNECTIONS`` connections), both on core 0. Postgres
queries per second: the increase of ``pg_stat_database.xact_commit`` over the flood (each lookup
query is one transaction; read after ``STATS_SETTLE_S`` of quiet, since Postgres publishes a
backend's counts up to 10 s late; the rest in that window is the edge's edit poll, one query per
10 s, and the two reads), divided by the flood's length. Codes looked up per second and lookups
refused come from the edge's own ``/metrics``. The same with the budget off
(``COLD_LOOKUPS_PER_SECOND=1000000000``) shows what the flood costs without it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import dataclasses
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

import asyncpg
import httpx

from loadtest.bench import observe, pipeline, seed, stack, wrk
from loadtest.bench.report import Row

if TYPE_CHECKING:
    from loadtest.bench.run import Bench

FLOOD_SECONDS = 10.0
HOT_CONNECTIONS = 16
STATS_SETTLE_S = 12.0  # Postgres flushes an idle backend's counts within 10 s
BUDGET_OFF = "1000000000"


@dataclasses.dataclass(frozen=True)
class Flood:
    flood: wrk.WrkResult
    hot: wrk.WrkResult  # the hot links during the flood
    hot_alone: wrk.WrkResult
    queries: int  # Postgres transactions committed over the flood
    lookups: dict[str, float]  # the edge's lookups by tier over the flood
    refused: float


async def _commits(dsn: str) -> int:
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        sql = "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def _counters(server: stack.Server) -> tuple[dict[str, float], float]:
    samples = observe.parse_prometheus(httpx.get(server.url + "/metrics", timeout=10).text)
    tiers = observe.by_label(samples, "linkedge_link_lookups_total", "tier")
    refused = sum(
        value
        for (name, _), value in samples.items()
        if name == "linkedge_cold_lookups_refused_total"
    )
    return tiers, refused


def measure(bench: Bench, server: stack.Server) -> Flood:
    """The hot links alone, then beside the flood; Postgres's and the edge's counts over it."""
    config = bench.config
    bench.warm(server, bench.zipf_once_file, len(bench.zipf_codes))

    def hot(seconds: float) -> wrk.WrkResult:
        return wrk.run(
            server.url, "zipf.lua", [str(bench.zipf_file)], seconds=seconds,
            connections=HOT_CONNECTIONS, cpu=bench.load_cpu,
        )  # fmt: skip

    def flood(seconds: float) -> wrk.WrkResult:
        return wrk.run(
            server.url, "flood.lua", [str(int(time.time()))], seconds=seconds,
            connections=config.connections, cpu=bench.load_cpu,
        )  # fmt: skip

    with bench.aggregator_paused():
        hot_alone = hot(FLOOD_SECONDS)
        time.sleep(STATS_SETTLE_S)  # the warm-up's lookups published
        commits = asyncio.run(_commits(bench.postgres.url))
        tiers, refused = _counters(server)
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            flooding = pool.submit(flood, FLOOD_SECONDS)
            hot_run = pool.submit(hot, FLOOD_SECONDS)
            flood_run, hot_beside = flooding.result(), hot_run.result()
        time.sleep(STATS_SETTLE_S)
        queries = asyncio.run(_commits(bench.postgres.url)) - commits - 1  # less our own read
        tiers_after, refused_after = _counters(server)
    bench.tally(server)  # the aggregator drains what the hot links clicked
    asyncio.run(seed.trim_streams(bench.redis.url, pipeline.SHARDS))
    lookups = {k: v - tiers.get(k, 0.0) for k, v in tiers_after.items()}
    return Flood(flood_run, hot_beside, hot_alone, queries, lookups, refused_after - refused)


def row(figure: str, budget: str, result: Flood) -> Row:
    seconds = result.flood.duration_s or FLOOD_SECONDS
    looked_up = result.lookups.get("postgres", 0.0) + result.lookups.get("none", 0.0)
    note = (
        f"budget {budget}; codes looked up in Postgres {looked_up / seconds:,.0f}/s, refused "
        f"{result.refused / seconds:,.0f}/s; flood {result.flood.rps:,.0f} req/s "
        f"({result.flood.requests - result.flood.status_errors:,} not 404); hot links "
        f"{result.hot.rps:,.0f} redirects/s beside it ({result.hot_alone.rps:,.0f} alone, "
        f"{result.hot.status_errors:,} non-3xx); p50/p99: the hot links'"
    )
    return Row(
        figure,
        f"{result.queries / seconds:,.0f} Postgres queries/s",
        p50_ms=result.hot.p50_ms,
        p99_ms=result.hot.p99_ms,
        note=note,
    )


def main() -> int:
    """Only the flood rows: ``python -m loadtest.bench.flood`` (the bench's stores, seed, pinning
    and environment variables; ``make bench`` runs them among the others)."""
    from loadtest.bench.report import format_table
    from loadtest.bench.run import Bench, Config

    if not wrk.available():
        print(f"bench: skipped. {wrk.INSTALL_HINT}")
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="linkedge-flood-"))
    bench = Bench(Config.from_env(), tmp)
    try:
        bench.pin_self()
        bench.start_stores()
        bench.aggregator = stack.start_command("aggregator", tmp, bench.env(), "aggregator")
        bench.procs.append(bench.aggregator)
        table = format_table(bench.flood_rows())
    finally:
        bench.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print("\n".join(bench.details))
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
