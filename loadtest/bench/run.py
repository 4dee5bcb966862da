"""``make bench``: the edge's redirect, API and pipeline figures, as ratios to a bare Granian app.

Everything runs on this machine, on loopback, in a temp dir removed at the end:
- its own Redis and Postgres (``linkedge.embedded``), migrated, with ``BENCH_LINKS`` links seeded
  by one COPY; the first ``BENCH_CODES`` are requested with Zipf popularity, the rest serve the
  cold runs (each requested once per round) and the RSS figure;
- servers on core 1, one worker each: the bare Granian reference (``reference_app.py``), nginx
  ``return 302`` when installed, and four ``linkedge edge`` processes that differ only in cache
  settings (hot, and hot with the aggregator running: ``HOT_CACHE``; local miss and cold:
  ``CACHE_SIZE=1``);
- this runner, wrk, Redis, Postgres and the aggregator on core 0 (the runner pins itself there
  first, so every child it starts inherits core 0; servers are started under ``taskset -c 1``).
  The aggregator is paused (SIGSTOP) while wrk loads an edge and resumed (SIGCONT) for the count
  check, so its work and Postgres's do not take wrk's core: its own cost is the "aggregator flush"
  row. One more hot-path row keeps it running, for comparison;
- the "random-code flood" rows (``flood.py``): what wrk on random codes costs Postgres, with the
  cold-lookup budget and without, and the hot links' rate beside the flood.

Every run of nginx or an edge scenario is paired with a run of the Granian reference right before
it; the table shows medians over ``BENCH_ROUNDS`` rounds of ``BENCH_SECONDS`` each (the ratio
column: the median of the per-pair ratios, with their range). After
every edge run the runner waits for the aggregator to drain and checks that the clicks in Postgres
equal the redirects the edge served, and that wrk saw those (less at most one request in flight
per connection). Exit status: 0, or 1 when a count check failed; 0 with a message when wrk is
missing.

Environment: BENCH_ROUNDS (3), BENCH_SECONDS (5), BENCH_CONNECTIONS (64), BENCH_CODES (10000),
BENCH_LINKS (100000), BENCH_PROFILE_SECONDS (0: no py-spy profile; >0 profiles the hot and
local-miss edges that long under load, with py-spy from BENCH_PYSPY, PATH or the venv),
BENCH_OUT (bench-results), BENCH_ANALYTICS (1; 0 skips the "analytics queries" scenario of
``loadtest/bench/analytics.py``, run last, which has its own BENCH_ANALYTICS_* knobs).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import importlib.util
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

if __package__ in (None, ""):  # run as a script: python loadtest/bench/run.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import httpx

from linkedge.embedded import EmbeddedPostgres, EmbeddedRedis
from linkedge.migrate import migrate_postgres
from linkedge.settings import Settings
from loadtest.bench import analytics, flood, observe, pipeline, pyspy, seed, stack, workload, wrk
from loadtest.bench import headers as header_mix
from loadtest.bench.report import CountCheck, Row, Series, format_table

ROOT = Path(__file__).resolve().parents[2]
SETTLE_TIMEOUT_S = 30.0
SETTLE_POLL_S = 0.6  # the edge folds its counters into /metrics once a second


@dataclasses.dataclass(frozen=True)
class Config:
    rounds: int = 3
    seconds: float = 5.0
    connections: int = 64
    codes: int = 10_000
    links: int = 100_000
    profile_seconds: float = 0.0
    out: Path = ROOT / "bench-results"

    @classmethod
    def from_env(cls) -> Config:
        env = os.environ
        config = cls(
            rounds=int(env.get("BENCH_ROUNDS", cls.rounds)),
            seconds=float(env.get("BENCH_SECONDS", cls.seconds)),
            connections=int(env.get("BENCH_CONNECTIONS", cls.connections)),
            codes=int(env.get("BENCH_CODES", cls.codes)),
            links=int(env.get("BENCH_LINKS", cls.links)),
            profile_seconds=float(env.get("BENCH_PROFILE_SECONDS", 0)),
            out=Path(env.get("BENCH_OUT", str(cls.out))),
        )
        if not (
            1 <= config.rounds <= 20
            and 1 <= config.seconds <= 120
            and 1 <= config.connections <= 1000
        ):
            raise SystemExit(
                "bench: BENCH_ROUNDS 1-20, BENCH_SECONDS 1-120, BENCH_CONNECTIONS 1-1000"
            )
        if not (1 <= config.codes < config.links <= 1_000_000):
            raise SystemExit("bench: need 1 <= BENCH_CODES < BENCH_LINKS <= 1000000")
        return config


@dataclasses.dataclass(frozen=True)
class Tally:
    clicks: int  # in Postgres (plus still in Redis counters when no aggregator runs)
    served: int | None  # 3xx answers the edge counted, from its /metrics
    tiers: dict[str, float]  # lookups by tier, from its /metrics
    settled: bool


# The hot-path edges' cache: entries that outlive the whole run. With the default 30 s TTL the
# 10,000 entries that one warm-up put together expire together, and a later run that caught that
# moment measured a burst of Redis lookups (thousands in a second, handler and MGETs at full
# tilt), not the hot path: 0.47-0.57 of the reference against 0.82-0.92 in the rounds around it,
# "lookups: redis 2-8%". A warm-up does not renew entries that have not expired yet.
HOT_CACHE = {"CACHE_TTL_S": "3600"}


def _edge_available() -> bool:
    return (ROOT / "edge" / "api" / "__init__.py").exists() and all(
        _module_available(name) for name in ("edge.redirect", "edge.resources", "linkedge.serve")
    )


def _module_available(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except ModuleNotFoundError:
        return False


class Bench:
    def __init__(self, config: Config, tmp: Path) -> None:
        self.config = config
        self.tmp = tmp
        several = (os.cpu_count() or 1) >= 2
        self.load_cpu = 0 if several else None
        self.server_cpu = 1 if several else None
        self.procs: list[stack.Proc] = []
        self.stores: list[Any] = []
        self.aggregator: stack.Proc | None = None
        self.details: list[str] = []
        self.failed_checks = 0
        self.ref_series = Series("bare Granian 302 (reference 1)")

    # ---- setup -----------------------------------------------------------------------------

    def pin_self(self) -> None:
        if self.load_cpu is not None:
            os.sched_setaffinity(0, {self.load_cpu})

    def start_stores(self) -> None:
        self.redis = EmbeddedRedis(self.tmp / "redis").start()
        self.stores.append(self.redis)
        self.postgres = EmbeddedPostgres(self.tmp / "postgres").start()
        self.stores.append(self.postgres)
        asyncio.run(migrate_postgres(self.postgres.url))
        self.account_id, self.api_key = asyncio.run(
            seed.seed_links(self.postgres.url, self.config.links)
        )
        self.all_codes = [workload.code(i) for i in range(self.config.links)]
        self.zipf_codes = self.all_codes[: self.config.codes]
        self.cold_codes = self.all_codes[self.config.codes :]
        files = self.tmp / "codes"
        files.mkdir()
        self.zipf_file = workload.write(
            files / "zipf", workload.zipf_sequence(self.zipf_codes, 200_000)
        )
        self.zipf_once_file = workload.write(
            files / "zipf-once", workload.each_once(self.zipf_codes)
        )
        self.all_once_file = workload.write(files / "all-once", workload.each_once(self.all_codes))
        self.headers_file = header_mix.write(files / "headers")

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("LINKEDGE_", "PROMETHEUS_", "BENCH_"))
        }
        env.update(
            REDIS_URL=self.redis.url,
            DATABASE_URL=self.postgres.url,
            CLICKHOUSE_URL=f"chdb://{self.tmp / 'clickhouse'}",
            LOG_LEVEL="WARNING",
            # The API figure measures creation, not the per-key rate limit.
            RATE_LIMIT_PER_MINUTE="1000000000",
            RATE_LIMIT_BURST="1000000",
            AGGREGATOR_METRICS_PORT="0",
            ANALYTICS_PORT="0",
        )
        env.update(extra)
        return env

    def track(self, server: stack.Server | None) -> stack.Server | None:
        if server is not None:
            self.procs.append(server.proc)
        return server

    def stop(self) -> None:
        for proc in reversed(self.procs):
            proc.stop()
        for store in reversed(self.stores):
            store.stop()

    # ---- measuring -------------------------------------------------------------------------

    def load(
        self,
        server: stack.Server,
        codes_file: Path,
        seconds: float | None = None,
        start: int = 0,
        script: str = "zipf.lua",
        extra: Sequence[str] = (),
    ) -> wrk.WrkResult:
        return wrk.run(
            server.url,
            script,
            [str(codes_file), str(start), *extra],
            seconds=seconds or self.config.seconds,
            connections=self.config.connections,
            cpu=self.load_cpu,
        )

    def warm(
        self, server: stack.Server, codes_file: Path, count: int, budget_s: float = 180.0
    ) -> None:
        """Request every code of ``codes_file`` (each listed once), resuming where the last run
        stopped, until all were requested (bounded by ``budget_s``)."""
        deadline = time.monotonic() + budget_s
        done = 0
        while done < count and time.monotonic() < deadline:
            # Resume a little early: the requests in flight when wrk stopped were never counted.
            done += self.load(
                server, codes_file, seconds=3, start=max(0, done - self.config.connections)
            ).requests
        if done < count:
            print(
                f"bench: warning: {server.name} got through {done:,} of {count:,} codes while warming",
                flush=True,
            )

    def tally(self, server: stack.Server) -> Tally:
        """Counts once clicks stopped moving (and the aggregator drained Redis, when it runs)."""
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        last: tuple[int, int | None] | None = None
        steady = 0
        while True:
            samples = _scrape(server)
            statuses = observe.by_label(samples, "linkedge_redirects_total", "status")
            served = (
                int(sum(v for k, v in statuses.items() if k.startswith("3"))) if statuses else None
            )
            tiers = observe.by_label(samples, "linkedge_link_lookups_total", "tier")
            in_pg, pending = asyncio.run(self._clicks_now())
            clicks = in_pg if self.aggregator is not None else in_pg + pending
            drained = self.aggregator is None or pending == 0
            steady = steady + 1 if (clicks, served) == last and drained else 0
            if steady >= 2 or time.monotonic() > deadline:
                return Tally(clicks, served, tiers, settled=steady >= 2)
            last = (clicks, served)
            time.sleep(SETTLE_POLL_S)

    @contextlib.contextmanager
    def aggregator_paused(self, pause: bool = True) -> Iterator[None]:
        """SIGSTOP the aggregator (and Postgres's work for it) for the length of a load run."""
        if not pause or self.aggregator is None or not self.aggregator.alive():
            yield
            return
        os.killpg(self.aggregator.pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.killpg(self.aggregator.pid, signal.SIGCONT)

    async def _clicks_now(self) -> tuple[int, int]:
        return await asyncio.gather(
            seed.postgres_clicks(self.postgres.url),
            seed.redis_pending_clicks(self.redis.url, pipeline.SHARDS),
        )

    def reference_run(self, script: str = "zipf.lua", extra: Sequence[str] = ()) -> wrk.WrkResult:
        """The Granian reference, run right before the scenario it is paired with (with the same
        wrk script, so that wrk's own cost per request is the same in both)."""
        result = self.load(self.reference, self.zipf_file, script=script, extra=extra)
        self.ref_series.add(result, result)
        return result

    def measure_edge(
        self,
        series: Series,
        server: stack.Server,
        codes_file: Path,
        *,
        pause_aggregator: bool = True,
        script: str = "zipf.lua",
        extra: Sequence[str] = (),
    ) -> wrk.WrkResult:
        before = self.tally(server)
        reference = self.reference_run(script, extra)
        with self.aggregator_paused(pause_aggregator):
            result = self.load(server, codes_file, script=script, extra=extra)
        after = self.tally(server)
        served = (
            after.served - before.served
            if after.served is not None and before.served is not None
            else None
        )
        check = CountCheck(
            after.clicks - before.clicks, served, result.ok_requests, self.config.connections
        )
        series.add(result, reference)
        series.counted.append(check)
        tiers = observe.describe_shares(observe.shares(before.tiers, after.tiers))
        if tiers:
            series.notes.append(f"lookups: {tiers}")
        line = f"{series.figure}: {result.rps:,.0f}/s, {check.describe()}"
        if not after.settled:
            line += f" (counts still moving after {SETTLE_TIMEOUT_S:.0f}s)"
        self.details.append(line)
        if not check.ok:
            self.failed_checks += 1
            print(f"\n!!!!! COUNT MISMATCH !!!!! {line}\n", flush=True)
        asyncio.run(seed.trim_streams(self.redis.url, pipeline.SHARDS))
        return result

    def measure_api(self, series: Series, server: stack.Server) -> None:
        before = asyncio.run(seed.links_of(self.postgres.url, self.account_id))
        reference = self.reference_run()
        result = wrk.run(
            server.url,
            "api_create.lua",
            [self.api_key],
            seconds=self.config.seconds,
            connections=self.config.connections,
            cpu=self.load_cpu,
        )
        created = asyncio.run(seed.links_of(self.postgres.url, self.account_id)) - before
        check = CountCheck(created, None, result.ok_requests, self.config.connections)
        series.add(result, reference)
        series.counted.append(check)
        self.details.append(
            f"{series.figure}: {result.rps:,.0f}/s, {check.describe()}, "
            f"{result.status_errors} non-2xx"
        )
        if not check.ok or result.status_errors:
            self.failed_checks += 1
            print(f"\n!!!!! API CREATION MISMATCH !!!!! {self.details[-1]}\n", flush=True)

    # ---- the run ---------------------------------------------------------------------------

    def run(self) -> str:
        config = self.config
        analytics_config = analytics.Config.from_env() if analytics.enabled() else None
        self.pin_self()
        print(
            f"bench: {config.rounds} round(s) of {config.seconds:.0f}s, wrk -t1 -c{config.connections}, "
            f"{config.links:,} links ({config.codes:,} with Zipf popularity)",
            flush=True,
        )
        self.start_stores()
        reference = self.track(stack.start_reference(self.tmp, self.server_cpu))
        assert reference is not None
        self.reference = reference
        nginx = self.track(stack.start_nginx(self.tmp, self.server_cpu))
        ref_series = self.ref_series
        nginx_series = Series("nginx return 302 (reference 2)")
        hot = Series("edge (a) hot path: local cache")
        hot_agg = Series("edge (a) hot path, aggregator running")
        mixed = Series("edge (a) hot, realistic headers")
        distinct = Series("edge (a) hot, distinct user agent per request")
        miss = Series("edge (b) local miss, Redis hit")
        cold = Series("edge (c) cold: Redis miss, Postgres")
        api = Series("API link creation")
        edge_ready = _edge_available()
        edges: dict[str, stack.Server] = {}
        if edge_ready:
            if _module_available("aggregator.main"):
                self.aggregator = stack.start_command(
                    "aggregator", self.tmp, self.env(), "aggregator"
                )
                self.procs.append(self.aggregator)
            for name, extra in (
                ("hot", HOT_CACHE),
                (
                    "hot-agg",
                    HOT_CACHE,
                ),  # the same, measured with the aggregator running: warmed on its own
                ("headers", HOT_CACHE),  # headers.lua, each on its own edge: own caches
                ("distinct", HOT_CACHE),
                ("miss", {"CACHE_SIZE": "1", "CACHE_TTL_S": "0.000001"}),
                ("cold", {"CACHE_SIZE": "1", "CACHE_TTL_S": "0.000001"}),
            ):
                server = self.track(
                    stack.start_edge(name, self.tmp, self.server_cpu, self.env(**extra))
                )
                assert server is not None
                edges[name] = server
            self.warm(edges["hot"], self.zipf_once_file, len(self.zipf_codes))  # Redis too
            in_redis = asyncio.run(seed.cached_in_redis(self.redis.url, self.zipf_codes))
            self.details.append(
                f"Redis holds {in_redis:,} of the {len(self.zipf_codes):,} Zipf codes before round 1"
            )

        for round_no in range(config.rounds):
            print(f"bench: round {round_no + 1}/{config.rounds}", flush=True)
            if nginx is not None:
                ref = self.reference_run()
                nginx_series.add(self.load(nginx, self.zipf_file), ref)
            else:
                self.reference_run()
            if not edges:
                continue
            self.warm(edges["hot"], self.zipf_once_file, len(self.zipf_codes))
            self.measure_edge(hot, edges["hot"], self.zipf_file)
            if self.aggregator is not None:
                self.warm(edges["hot-agg"], self.zipf_once_file, len(self.zipf_codes))
                self.measure_edge(hot_agg, edges["hot-agg"], self.zipf_file, pause_aggregator=False)
            for series, name, mode in (
                (mixed, "headers", "mix"),
                (distinct, "distinct", "distinct"),
            ):
                self.warm(edges[name], self.zipf_once_file, len(self.zipf_codes))
                args = [str(self.headers_file), mode, str(round_no + 1)]  # salt: new agents
                self.measure_edge(
                    series, edges[name], self.zipf_file, script="headers.lua", extra=args
                )
            self.measure_edge(miss, edges["miss"], self.zipf_file)
            asyncio.run(seed.forget_links(self.redis.url, self.cold_codes))
            cold_file = workload.write(
                self.tmp / "codes" / f"cold-{round_no}",
                workload.each_once(self.cold_codes, seed=round_no),
            )
            result = self.measure_edge(cold, edges["cold"], cold_file)
            if result.requests > len(self.cold_codes):
                cold.notes.append(
                    f"{1 - len(self.cold_codes) / result.requests:.0%} of requests repeated a code"
                )
            self.measure_api(api, edges["hot"])

        flood_rows = self.flood_rows() if edges else []
        profile = ""
        if edges and config.profile_seconds > 0:
            profile = "".join(
                f"### {edges[name].name}\n{self.profile(edges[name])}" for name in ("hot", "miss")
            )
        for name in ("hot-agg", "headers", "distinct", "miss", "cold"):
            if name in edges:
                edges[name].proc.stop()
        rows = [
            ref_series.row(note="ceiling for any Granian app"),
            nginx_series.row(note="ceiling for any server")
            if nginx is not None
            else Row(
                nginx_series.figure,
                "skipped",
                note="nginx not installed (apt-get install nginx-light)",
            ),
        ]
        missing = "edge not available yet (edge.redirect / linkedge.serve)"
        rows += [series.row(note="" if edge_ready else missing) for series in (hot, miss, cold)]
        rows += flood_rows
        if hot_agg.runs:
            rows.insert(3, hot_agg.row(note="the aggregator and Postgres at work on wrk's core"))
        header_note = (
            f"headers.lua: {header_mix.USER_AGENTS} user agents, {header_mix.REFERRERS:,} "
            f"referrers, {header_mix.LANGUAGES} languages, Zipf popularity"
        )
        at = 3 + bool(hot_agg.runs)
        for series, note in (
            (mixed, header_note),
            (distinct, "headers.lua: a browser user agent no request sent before, on each"),
        ):
            if series.runs:
                rows.insert(at, series.row(note=note))
                at += 1
        rows.append(
            api.row(
                unit="links/s", note="POST /api/v1/links, one link each" if edge_ready else missing
            )
        )
        rows.append(
            self.rss_row()
            if edge_ready
            else Row("edge worker RSS, 100k links cached", "n/a", note=missing)
        )
        if self.aggregator is not None:
            self.aggregator.stop()
        rows.append(pipeline.aggregator_row(self.redis.url, self.postgres.url, config.links))
        rows.append(pipeline.analytics_row(self.redis.url, self.tmp, self.env()))
        table = format_table(rows)
        if analytics_config is not None:
            table += "\n### Analytics queries\n\n" + self.analytics_queries(analytics_config)
        self.write_results(table, profile)
        return table

    def flood_rows(self) -> list[Row]:
        """The "random-code flood" rows (``loadtest/bench/flood.py``): the default budget, then off."""
        rows = []
        default = f"{Settings().cold_lookups_per_second}/s per worker (the default)"
        for figure, budget, extra in (
            ("random-code flood", default, {}),
            ("random-code flood, budget off", "off", {"COLD_LOOKUPS_PER_SECOND": flood.BUDGET_OFF}),
        ):
            name = "flood-off" if extra else "flood"
            server = self.track(
                stack.start_edge(name, self.tmp, self.server_cpu, self.env(**HOT_CACHE, **extra))
            )
            assert server is not None
            result = flood.measure(self, server)
            server.proc.stop()
            rows.append(flood.row(figure, budget, result))
            self.details.append(f"{figure}: {rows[-1].result}; {rows[-1].note}")
        return rows

    def analytics_queries(self, config: analytics.Config) -> str:
        """The "analytics queries" scenario, on a Redis of its own (its analytics reads no stream)."""
        redis = EmbeddedRedis(self.tmp / "redis-analytics", persist=False).start()
        self.stores.append(redis)
        result = analytics.run_scenario(config, self.tmp, redis.url, self.postgres.url)
        if result.problems:
            self.failed_checks += 1
            failed = "\n".join(result.problems)
            print(f"\n!!!!! ANALYTICS QUERY CHECKS FAILED !!!!!\n{failed}\n", flush=True)
        return analytics.format_result(result)

    def rss_row(self) -> Row:
        figure = f"edge worker RSS, {self.config.links // 1000}k links cached"
        server = self.track(
            stack.start_edge("rss", self.tmp, self.server_cpu, self.env(CACHE_TTL_S="3600"))
        )
        assert server is not None
        worker = max(server.worker_pids(), key=stack.vm_rss_kib)
        idle = stack.vm_rss_kib(worker)
        # Records in Redis first, as a running edge would find them: warming then takes seconds,
        # not the minutes that 100k Postgres lookups take on a shared core.
        asyncio.run(seed.cache_in_redis(self.redis.url, self.postgres.url))
        self.warm(server, self.all_once_file, self.config.links)
        time.sleep(1.5)  # clicks flushed, counters folded
        full = stack.vm_rss_kib(worker)
        per_link = (full - idle) * 1024 / self.config.links
        server.proc.stop()
        return Row(
            figure,
            f"{full / 1024:.0f} MiB",
            note=f"{idle / 1024:.0f} MiB before warming; {per_link:,.0f} B per cached link (CACHE_TTL_S=3600)",
        )

    def profile(self, server: stack.Server) -> str:
        """py-spy on an edge's worker under wrk load (cache warm first): the top frames, as text."""
        spy = pyspy.find()
        if spy is None:
            return "py-spy not installed (`pip install py-spy`, or set BENCH_PYSPY): no profile\n"
        worker = server.worker_pids()[0]
        self.warm(server, self.zipf_once_file, len(self.zipf_codes))
        out = self.tmp / f"profile-{worker}.txt"
        if not pyspy.record(
            spy,
            worker,
            server.url,
            self.zipf_file,
            out,
            seconds=self.config.profile_seconds,
            connections=self.config.connections,
            cpu=self.load_cpu,
        ):
            return "py-spy produced no profile (ptrace not permitted?)\n"
        self.config.out.mkdir(parents=True, exist_ok=True)
        kept = self.config.out / f"profile-{server.name.replace(' ', '-')}.collapsed"
        shutil.copyfile(out, kept)
        self.details.append(
            f"profile of {server.name}: worker {worker}, collapsed stacks in {kept}"
        )
        return pyspy.summary(out.read_text())

    def write_results(self, table: str, profile: str) -> None:
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%d-%H%M%S")
        self.config.out.mkdir(parents=True, exist_ok=True)
        machine = observe.machine()
        text = [f"# linkedge bench {stamp} UTC", ""]
        text += [f"- {key}: {value}" for key, value in machine.items()]
        text += [
            (
                f"- rounds {self.config.rounds} x {self.config.seconds:.0f}s, wrk -t1"
                f" -c{self.config.connections}, pinned: load core {self.load_cpu}, servers core"
                f" {self.server_cpu}"
            ),
            "",
            table,
            "## Runs",
            "",
        ]
        text += [f"- {line}" for line in self.details]
        if profile:
            text += [
                "",
                "## Profile of the hot edge worker (py-spy)",
                "",
                "```",
                profile.rstrip(),
                "```",
            ]
        path = self.config.out / f"bench-{stamp}.md"
        path.write_text("\n".join(text) + "\n")
        print("\n".join(self.details), flush=True)
        if profile:
            print(profile, flush=True)
        print(f"bench: results written to {path}", flush=True)


def _scrape(server: stack.Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    try:
        response = httpx.get(server.url + "/metrics", timeout=5)
    except httpx.HTTPError:
        return {}
    return observe.parse_prometheus(response.text) if response.status_code == 200 else {}


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> int:
    if not wrk.available():
        print(f"bench: skipped. {wrk.INSTALL_HINT}")
        return 0
    config = Config.from_env()
    signal.signal(signal.SIGTERM, _terminate)
    tmp = Path(tempfile.mkdtemp(prefix="linkedge-bench-"))
    bench = Bench(config, tmp)
    started = time.monotonic()
    try:
        table = bench.run()
    finally:
        bench.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print(table)
    print(
        f"bench: done in {time.monotonic() - started:.0f}s; figures measured on a shared machine "
        "are noisy: compare the ratios, not the absolute numbers"
    )
    if bench.failed_checks:
        print(f"bench: {bench.failed_checks} count check(s) FAILED (see the lines marked !!!!!)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
