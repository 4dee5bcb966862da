"""The "analytics queries" bench: synthetic clicks in the embedded ClickHouse, dashboard queries.

``python -m loadtest.bench.analytics`` (and the last part of ``make bench``; ``BENCH_ANALYTICS=0``
skips it there):
1. Postgres (its own embedded one, or the caller's) gets two accounts, ``BENCH_ANALYTICS_LINKS``
   links dealt alternately to them in Zipf rank order, and a ``stats:read`` key of the first.
2. ``loadtest.bench.clickload``, a process of its own, writes ``BENCH_ANALYTICS_ROWS`` synthetic
   clicks of those links into an embedded ClickHouse with the schema analytics applies, in inserts
   of ``BENCH_ANALYTICS_BATCH`` rows, and times the inserts (materialized views included).
3. ``linkedge analytics`` opens that engine and an edge reaches it (``ANALYTICS_URL``); each
   dashboard query (``loadtest.bench.dashboardqueries``) is posted ``BENCH_ANALYTICS_WARMUPS``
   times, then timed ``BENCH_ANALYTICS_RUNS`` times, one at a time, over one keep-alive connection.
4. The answers are checked against direct counts; a failed check makes the exit status 1.

Nothing is pinned: ClickHouse's threads may use every core, as a deployment's would.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import asyncpg
import httpx

from linkedge import apikeys
from linkedge.embedded import EmbeddedPostgres, EmbeddedRedis, free_port
from linkedge.migrate import migrate_postgres
from loadtest.bench import dashboardqueries, stack
from loadtest.bench.clickload import Check, Spec
from loadtest.bench.dashboardqueries import Timing

TARGET_P95_MS = 100.0
TARGET_INSERT_RATE = 200_000
LOAD_TIMEOUT_S = 4 * 3600.0


@dataclasses.dataclass(frozen=True)
class Config:
    rows: int = 10_000_000
    links: int = 10_000
    batch: int = 500_000
    runs: int = 20
    warmups: int = 2
    slow_runs: int = 5  # runs of a query whose warm-up took over dashboardqueries.SLOW_MS
    days: int = 35
    seed: int = 11

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        config = cls(
            rows=int(env.get("BENCH_ANALYTICS_ROWS", cls.rows)),
            links=int(env.get("BENCH_ANALYTICS_LINKS", cls.links)),
            batch=int(env.get("BENCH_ANALYTICS_BATCH", cls.batch)),
            runs=int(env.get("BENCH_ANALYTICS_RUNS", cls.runs)),
            warmups=int(env.get("BENCH_ANALYTICS_WARMUPS", cls.warmups)),
            slow_runs=int(env.get("BENCH_ANALYTICS_SLOW_RUNS", cls.slow_runs)),
        )
        if not (
            config.rows >= 1
            and 2 <= config.links <= 1_000_000
            and config.batch >= 1
            and config.runs >= 1
        ):
            raise SystemExit(
                "bench: BENCH_ANALYTICS_ROWS >= 1, BENCH_ANALYTICS_LINKS 2-1000000, BATCH and RUNS >= 1"
            )
        return config


def enabled() -> bool:
    """``BENCH_ANALYTICS=0`` leaves the scenario out of ``make bench``."""
    return os.environ.get("BENCH_ANALYTICS", "1") != "0"


@dataclasses.dataclass
class Result:
    config: Config
    load: dict[str, Any]
    timings: list[Timing]
    problems: list[str]
    checks: dict[str, tuple[int, int]]  # name -> (generated, uniqExact)
    load_averages: list[str] = dataclasses.field(default_factory=list)  # the machine's, per phase

    @property
    def insert_rate(self) -> float:
        return float(self.load["rows"]) / float(self.load["insert_s"])


@dataclasses.dataclass(frozen=True)
class Seeded:
    account_id: int
    key: str
    link_ids: list[int]
    accounts: list[int]
    codes: list[str]


async def seed(dsn: str, links: int) -> Seeded:
    """Two accounts, ``links`` links dealt alternately (rank 0 to the first), a stats:read key."""
    suffix = secrets.token_hex(3)
    conn = await asyncpg.connect(dsn, timeout=30)
    try:
        _, key = await apikeys.create_key(conn, f"bench-aq-a-{suffix}", ("stats:read",))
        first = await apikeys.ensure_account(conn, f"bench-aq-a-{suffix}")
        second = await apikeys.ensure_account(conn, f"bench-aq-b-{suffix}")
        codes = [f"aq{suffix}{rank:06d}" for rank in range(links)]
        accounts = [first if rank % 2 == 0 else second for rank in range(links)]
        records = [
            (a, c, f"https://example.com/landing/{c}") for a, c in zip(accounts, codes, strict=True)
        ]
        await conn.copy_records_to_table(
            "links", records=records, columns=["account_id", "code", "url"]
        )
        ids = dict(
            await conn.fetch("SELECT code, id FROM links WHERE code = ANY($1::text[])", codes)
        )
        return Seeded(first, key, [int(ids[c]) for c in codes], accounts, codes)
    finally:
        await conn.close()


def _ranges(now: datetime) -> tuple[tuple[date, date], tuple[datetime, datetime]]:
    """The 30 UTC days ending today, and the 24 whole hours ending with the current one."""
    today = now.date()
    end = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    return (today - timedelta(days=29), today), (end - timedelta(hours=24), end)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _checks(
    seeded: Seeded, days: tuple[date, date], hours: tuple[datetime, datetime]
) -> list[Check]:
    start = datetime.combine(days[0], datetime.min.time(), tzinfo=UTC)
    end = datetime.combine(days[1] + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
    account = seeded.account_id
    return [
        Check("account 30d", account, _ms(start), _ms(end)),
        Check("link 30d", account, _ms(start), _ms(end), link_id=seeded.link_ids[0]),
        Check("account 24h", account, _ms(hours[0]), _ms(hours[1])),
    ]


def _load_average() -> str:
    """The 1-minute load average and the core count: how busy the machine was."""
    try:
        return f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores"
    except OSError:
        return "unknown"


def _wait_ready(url: str, proc: stack.Proc, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not proc.alive():
            raise RuntimeError(f"analytics exited: {proc.tail(10)}")
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"analytics not ready within {timeout:.0f}s: {proc.tail(10)}")


class AnalyticsBench:
    def __init__(self, config: Config, tmp: Path, redis_url: str, database_url: str) -> None:
        self.config = config
        self.tmp = tmp
        self.redis_url = redis_url
        self.database_url = database_url
        self.clickhouse_url = f"chdb://{tmp / 'clickhouse-analytics-bench'}"
        self.token = secrets.token_hex(16)
        self.procs: list[stack.Proc] = []

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LINKEDGE_", "PROMETHEUS_", "BENCH_"))
        }
        env.update(
            REDIS_URL=self.redis_url,
            DATABASE_URL=self.database_url,
            CLICKHOUSE_URL=self.clickhouse_url,
            ANALYTICS_TOKEN=self.token,
            LOG_LEVEL="WARNING",
            RATE_LIMIT_PER_MINUTE="1000000000",
            RATE_LIMIT_BURST="1000000",
            AUTH_LOOKUP_BURST="1000000",
        )
        env.update(extra)
        return env

    def load(self, spec: Spec) -> dict[str, Any]:
        spec_path, out_path = self.tmp / "clickload-spec.json", self.tmp / "clickload-out.json"
        spec.write(spec_path)
        args = [sys.executable, "-m", "loadtest.bench.clickload", str(spec_path), str(out_path)]
        proc = stack.Proc("clickload", args, self.tmp / "clickload.log", self.env())
        self.procs.append(proc)
        deadline, shown = time.monotonic() + LOAD_TIMEOUT_S, 0
        while True:
            running = proc.alive()
            lines = proc.log.read_text(errors="replace").splitlines()
            for line in lines[shown:]:
                print(f"bench: {line}", flush=True)
            shown = len(lines)
            if not running or time.monotonic() > deadline:
                break
            time.sleep(2.0)
        proc.stop()
        if proc.proc.returncode != 0 or not out_path.exists():
            tail = "\n".join(proc.log.read_text(errors="replace").splitlines()[-20:])
            raise RuntimeError(f"clickload failed ({proc.proc.returncode}):\n{tail}")
        loaded: dict[str, Any] = json.loads(out_path.read_text())
        return loaded

    def serve(self) -> stack.Server:
        """analytics on the engine just loaded, and one edge that sends it the queries."""
        port = free_port()
        analytics_url = f"http://127.0.0.1:{port}"
        proc = stack.start_command(
            "analytics-bench", self.tmp, self.env(ANALYTICS_PORT=str(port)), "analytics"
        )
        self.procs.append(proc)
        _wait_ready(f"{analytics_url}/readyz", proc, timeout=600.0)
        edge = stack.start_edge(
            "analytics-bench", self.tmp, None, self.env(ANALYTICS_URL=analytics_url)
        )
        self.procs.append(edge.proc)
        return edge

    def run(self) -> Result:
        config = self.config
        seeded = asyncio.run(seed(self.database_url, config.links))
        days, hours = _ranges(datetime.now(UTC))
        checks = _checks(seeded, days, hours)
        queries = dashboardqueries.dashboard_queries(days, hours, seeded.codes[0])
        probes = [
            {"name": q.name, "body": q.body, "link_id": seeded.link_ids[0] if q.link_code else 0}
            for q in queries
        ]
        spec = Spec(
            url=self.clickhouse_url, rows=config.rows, batch=config.batch, now_ms=_ms(datetime.now(UTC)),
            seed=config.seed, link_ids=seeded.link_ids, accounts=seeded.accounts, codes=seeded.codes,
            checks=checks, probes=probes,
        )  # fmt: skip
        print(
            f"bench: analytics: {config.rows:,} clicks over {config.links:,} links, inserts of {config.batch:,}",
            flush=True,
        )
        averages = [f"before the inserts {_load_average()}"]
        loaded = self.load(spec)
        averages.append(f"after them {_load_average()}")
        expected = {
            check.name: (generated, direct)
            for check, generated, direct in zip(
                checks, loaded["truth"], loaded["direct"], strict=True
            )
        }
        edge = self.serve()
        headers = {"Authorization": f"Bearer {seeded.key}"}
        with httpx.Client(base_url=edge.url, headers=headers, timeout=60) as client:
            timings = dashboardqueries.time_queries(
                client,
                queries,
                runs=config.runs,
                warmups=config.warmups,
                slow_runs=config.slow_runs,
            )
            averages.append(f"after the queries {_load_average()}")
            problems = dashboardqueries.check(client, timings, expected)
        return Result(config, loaded, timings, problems, expected, averages)

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()


def run_scenario(config: Config, tmp: Path, redis_url: str, database_url: str) -> Result:
    """The whole scenario against these stores; every process it starts is stopped on return."""
    if hasattr(os, "sched_setaffinity"):  # make bench pins its runner to one core: undo it here
        os.sched_setaffinity(0, range(os.cpu_count() or 1))
    bench = AnalyticsBench(config, tmp, redis_url, database_url)
    try:
        return bench.run()
    finally:
        bench.stop()


def format_result(result: Result) -> str:
    """The scenario's markdown table: the insert rate, then p50/p95 of each query."""
    load, config = result.load, result.config
    rate = result.insert_rate
    lines = [
        "| figure | source | p50 ms | p95 ms | max ms | target | engine ms | rows read (EXPLAIN ESTIMATE) | note |",
        "|---|---|---|---|---|---|---|---|---|",
        (
            f"| insert {load['rows']:,} clicks | clicks + views | | | | {'met' if rate >= TARGET_INSERT_RATE else 'missed'}"
            f" (>= {TARGET_INSERT_RATE:,}/s) | | | **{rate:,.0f} rows/s**: {load['insert_s']:.1f}s in "
            f"{len(load['batches_s'])} inserts of {config.batch:,}; merges settled {load['merge_wait_s']:.0f}s later |"
        ),
    ]
    reference = load.get("reference")
    if reference:
        ref_rate = reference["rows"] / reference["insert_s"]
        lines.append(
            f"| reference: the same inserts into clicks without views | clicks | | | | | | | {ref_rate:,.0f} rows/s: "
            f"{reference['rows']:,} rows in {reference['insert_s']:.1f}s (the views: {ref_rate / rate:.1f}x the time) |"
        )
    probes = {probe["name"]: probe for probe in load.get("probes", [])}
    for timing in result.timings:
        p50, p95 = timing.percentile(50), timing.percentile(95)
        met = "met" if p95 < TARGET_P95_MS else "missed"
        rows = len(timing.answer.get("results", []))
        probe = probes.get(timing.query.name, {})
        engine = f"{probe['engine_ms']:,.1f}" if probe else ""
        read = ", ".join(
            f"{table} {count:,}" for table, count in probe.get("estimated_rows", {}).items()
        )
        lines.append(
            f"| {timing.query.name} | {timing.source} | {p50:,.1f} | {p95:,.1f} | {max(timing.samples_ms):,.1f} "
            f"| {met} (p95 < {TARGET_P95_MS:.0f}) | {engine} | {read} | {rows} rows, {len(timing.samples_ms)} runs |"
        )
    checked = "; ".join(f"{name}: {direct:,}" for name, (_, direct) in result.checks.items())
    lines.append("")
    lines.append(
        f"checks: {'ok' if not result.problems else 'FAILED'} (clicks by uniqExact: {checked})"
    )
    lines += [f"!!!!! {problem}" for problem in result.problems]
    parts = ", ".join(
        f"{t} {p['parts']} parts/{p['rows']:,} rows/{p['bytes'] / 2**20:,.0f} MiB"
        for t, p in load["parts"].items()
        if t != "schema_migrations"
    )
    lines.append(f"tables: {parts}")
    if result.load_averages:
        lines.append(f"load average: {'; '.join(result.load_averages)}")
    return "\n".join(lines) + "\n"


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    config = Config.from_env()
    signal.signal(signal.SIGTERM, _terminate)  # stop the children and remove the temp dir
    tmp = Path(tempfile.mkdtemp(prefix="linkedge-bench-analytics-"))
    stores: list[Any] = []
    started = time.monotonic()
    try:
        redis = EmbeddedRedis(tmp / "redis", persist=False).start()
        stores.append(redis)
        postgres = EmbeddedPostgres(tmp / "postgres").start()
        stores.append(postgres)
        asyncio.run(migrate_postgres(postgres.url))
        result = run_scenario(config, tmp, redis.url, postgres.url)
    finally:
        for store in reversed(stores):
            store.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(format_result(result))
    print(f"bench: analytics done in {time.monotonic() - started:.0f}s")
    return 1 if result.problems else 0


if __name__ == "__main__":
    sys.exit(main())
