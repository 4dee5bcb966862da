"""Hot-path A/B: ``python -m loadtest.bench.ab NAME=SOURCE[:VAR=VALUE,...] ...``.

Each SOURCE is a git revision of this repository (``HEAD~1``, a commit, a branch: exported with
``git archive`` into the bench's temp dir) or a directory holding a copy of the source tree (for
a variant with a part switched off). One ``linkedge edge`` per NAME is started from its source
(``VAR=VALUE`` pairs go into its environment), all on the same stores, seed, Zipf workload, warm-up
and core pinning as ``make bench``; then, for ``BENCH_ROUNDS`` rounds, the hot scenario runs on
each, the order rotated per round, each run paired with its own Granian reference run right before
it, and each followed by the count check (a variant that does not record clicks fails it, as it
should; that is printed, not fatal). Prints one line per round and run, then per NAME the median
redirects/s, the median of the per-pair ratios (with their range), p50 and p99.

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
            bench.reference = bench.track(stack.start_reference(bench.tmp, bench.server_cpu))
            bench.aggregator = stack.start_command("aggregator", bench.tmp, bench.env(), "aggregator")
            bench.procs.append(bench.aggregator)
            edges = {}
            trees = {name: source_tree(source, bench.tmp, name, root) for name, source, _ in specs}
            for name, _, extra in specs:
                tree = trees[name]
                stack.ROOT = tree  # the edge's working directory, so its own packages are imported
                env = bench.env(PYTHONPATH=str(tree), **{**HOT_CACHE, **extra})
                edges[name] = bench.track(stack.start_edge(name, bench.tmp, bench.server_cpu, env))
            stack.ROOT = root
            series = {name: Series(name) for name, _, _ in specs}
            names = list(series)
            for round_no in range(config.rounds):
                for name in names[round_no % len(names):] + names[: round_no % len(names)]:
                    bench.warm(edges[name], bench.zipf_once_file, len(bench.zipf_codes))
                    result = bench.measure_edge(series[name], edges[name], bench.zipf_file)
                    reference = series[name].references[-1].rps
                    print(f"round {round_no + 1} {name}: {result.rps:,.0f}/s, p50 {result.p50_ms:.2f} ms, "
                          f"p99 {result.p99_ms:.2f} ms (its reference {reference:,.0f}/s)", flush=True)
            for name in names:
                runs, refs = series[name].runs, series[name].references
                ratios = [run.rps / ref.rps for run, ref in zip(runs, refs)]
                print(f"{name:24s} {statistics.median(r.rps for r in runs):9,.0f}/s  "
                      f"ratio {statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})  "
                      f"p50 {statistics.median(r.p50_ms for r in runs):.2f} ms  "
                      f"p99 {statistics.median(r.p99_ms for r in runs):.2f} ms")
            print("\n".join(bench.details))
        finally:
            stack.ROOT = root
            bench.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
