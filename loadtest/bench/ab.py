"""Hot-path A/B: ``python -m loadtest.bench.ab NAME=SOURCE[:VAR=VALUE,...] ...``.

Each SOURCE is a git revision of this repository (``HEAD~1``, a commit, a branch: exported with
``git archive`` into the bench's temp dir) or a directory holding a copy of the source tree (for
a variant with a part switched off). One ``linkedge edge`` per NAME is started from its source
(``VAR=VALUE`` pairs go into its environment), all on the same stores, seed, Zipf workload, warm-up
and core pinning as ``make bench``; then, for ``BENCH_ROUNDS`` rounds, the hot scenario runs on
each, the order rotated per round, each run paired with its own Granian reference run right before
it, and each followed by the count check (a variant that does not record clicks fails it, as it
should; that is printed, not fatal). Prints one line per round and run, then per NAME the median
redirects/s, the median of the per-pair ratios (with their range), the median of the per-pair
ratios of CPU time per request (the reference's over the edge's: the worker's user and system
time over the requests wrk saw; steadier than redirects/s on a machine whose speed wanders), p50
and p99.

It is how the "hot-path A/B" rows of BENCHMARKS.md were measured. Same variables as ``make bench``.
"""

from __future__ import annotations

import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from loadtest.bench import stack
from loadtest.bench.report import Series
from loadtest.bench.run import HOT_CACHE, Bench, Config


def started(server: stack.Server | None, what: str) -> stack.Server:
    if server is None:
        raise SystemExit(f"ab: {what} did not start")
    return server


def parse(argv: list[str]) -> list[tuple[str, str, dict[str, str]]]:
    specs = []
    for arg in argv:
        name, sep, rest = arg.partition("=")
        if not sep or not name or not rest:
            raise SystemExit(f"ab: expected NAME=SOURCE[:VAR=VALUE,...], got {arg!r}")
        source, _, pairs = rest.partition(":")
        extra = dict(pair.split("=", 1) for pair in pairs.split(",") if pair)
        specs.append((name, source, extra))
    if not specs or len({name for name, _, _ in specs}) != len(specs):
        raise SystemExit("ab: give one or more NAME=SOURCE, each NAME once")
    return specs


def source_tree(source: str, tmp: Path, name: str, repo: Path = stack.ROOT) -> Path:
    """``source`` itself when it is a directory, else that git revision of ``repo`` exported
    under ``tmp``, its C extensions built in place as ``pip install -e .`` builds them (without
    them the edge would run its Python click encoder: another program than that revision's)."""
    if Path(source).is_dir():
        return Path(source).resolve()
    tree = tmp / f"src-{name}"
    tree.mkdir()
    archive = subprocess.run(
        ["git", "-C", str(repo), "archive", source], capture_output=True, check=False
    )
    if archive.returncode != 0:
        raise SystemExit(f"ab: {source!r} is neither a directory nor a git revision")
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive.stdout, check=True)
    if (tree / "setup.py").exists():
        subprocess.run(
            [sys.executable, "setup.py", "-q", "build_ext", "--inplace"],
            cwd=tree, capture_output=True, check=True,
        )  # fmt: skip
    return tree


def main(argv: list[str]) -> int:
    specs = parse(argv)
    config = Config.from_env()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the finally: stop every child
    with tempfile.TemporaryDirectory(prefix="linkedge-ab-") as tmp:
        bench = Bench(config, Path(tmp))
        root = stack.ROOT
        try:
            bench.pin_self()
            bench.start_stores()
            bench.reference = started(
                bench.track(stack.start_reference(bench.tmp, bench.server_cpu)), "the reference"
            )
            bench.aggregator = stack.start_command(
                "aggregator", bench.tmp, bench.env(), "aggregator"
            )
            bench.procs.append(bench.aggregator)
            edges = {}
            trees = {name: source_tree(source, bench.tmp, name, root) for name, source, _ in specs}
            for name, _, extra in specs:
                tree = trees[name]
                stack.ROOT = tree  # the edge's working directory, so its own packages are imported
                env = bench.env(PYTHONPATH=str(tree), **{**HOT_CACHE, **extra})
                edges[name] = started(
                    bench.track(stack.start_edge(name, bench.tmp, bench.server_cpu, env)), name
                )
            stack.ROOT = root
            series = {name: Series(name) for name, _, _ in specs}
            names = list(series)
            # CPU time per request of each run's worker, and of its reference's: on a machine whose
            # speed wanders between runs this ratio wanders less than the rps ratio.
            cpu: dict[str, list[float]] = {name: [] for name in names}
            ref_worker = bench.reference.worker_pids()[0]
            for round_no in range(config.rounds):
                for name in names[round_no % len(names) :] + names[: round_no % len(names)]:
                    bench.warm(edges[name], bench.zipf_once_file, len(bench.zipf_codes))
                    worker = edges[name].worker_pids()[0]
                    before = stack.cpu_seconds(ref_worker), stack.cpu_seconds(worker)
                    result = bench.measure_edge(series[name], edges[name], bench.zipf_file)
                    reference = series[name].references[-1]
                    ref_us = (
                        (stack.cpu_seconds(ref_worker) - before[0])
                        * 1e6
                        / max(reference.ok_requests, 1)
                    )
                    edge_us = (
                        (stack.cpu_seconds(worker) - before[1]) * 1e6 / max(result.ok_requests, 1)
                    )
                    cpu[name].append(ref_us / edge_us if edge_us else 0.0)
                    print(
                        f"round {round_no + 1} {name}: {result.rps:,.0f}/s, p50 {result.p50_ms:.2f} ms, "
                        f"p99 {result.p99_ms:.2f} ms, {edge_us:.1f} us CPU per request "
                        f"(its reference {reference.rps:,.0f}/s, {ref_us:.1f} us)",
                        flush=True,
                    )
            for name in names:
                runs, refs = series[name].runs, series[name].references
                ratios = [run.rps / ref.rps for run, ref in zip(runs, refs)]
                print(
                    f"{name:24s} {statistics.median(r.rps for r in runs):9,.0f}/s  "
                    f"ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})  "
                    f"CPU ratio {statistics.median(cpu[name]):.2f} "
                    f"({min(cpu[name]):.2f}-{max(cpu[name]):.2f})  "
                    f"p50 {statistics.median(r.p50_ms for r in runs):.2f} ms  "
                    f"p99 {statistics.median(r.p99_ms for r in runs):.2f} ms"
                )
            print("\n".join(bench.details))
        finally:
            stack.ROOT = root
            bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
