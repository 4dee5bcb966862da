"""The bench's pure parts: wrk output, request sequences, count checks, metrics text, the table.

No timing is asserted anywhere: the bench measures, these tests only check how it reads and writes.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest

from loadtest.bench import observe, workload, wrk
from loadtest.bench.report import CountCheck, Row, Series, counted_cell, format_table
from loadtest.bench.wrk import WrkResult

WRK_TEXT = """\
Running 5s test @ http://127.0.0.1:40000
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     2.21ms  812.00us  21.30ms   88.12%
    Req/Sec    29.10k     1.20k   31.02k    70.00%
  Latency Distribution
     50%    2.05ms
     75%    2.40ms
     90%    2.90ms
     99%    5.12ms
  144818 requests in 5.00s, 13.95MB read
  Socket errors: connect 0, read 2, write 0, timeout 1
  Non-2xx or 3xx responses: 17
Requests/sec:  28963.60
Transfer/sec:      2.79MB
"""

RESULT_LINE = (
    'BENCH_RESULT {"requests":144818,"duration_us":5001234,"bytes":14627618,"status_errors":17,'
    '"connect_errors":0,"read_errors":2,"write_errors":0,"timeouts":1,"p50_us":2051,"p90_us":2900,'
    '"p99_us":5120,"mean_us":2210.4,"max_us":21300}\n'
)


def test_wrk_summary_is_parsed() -> None:
    result = wrk.parse_summary(WRK_TEXT)
    assert result.requests == 144_818
    assert result.duration_s == pytest.approx(5.0)
    assert result.status_errors == 17
    assert result.socket_errors == 3
    assert result.ok_requests == 144_801
    assert result.p50_ms == pytest.approx(2.05)
    assert result.p99_ms == pytest.approx(5.12)
    assert result.rps == pytest.approx(144_818 / 5.0)


def test_wrk_latency_units_are_converted() -> None:
    text = WRK_TEXT.replace("50%    2.05ms", "50%  870.00us").replace(
        "99%    5.12ms", "99%    1.20s"
    )
    result = wrk.parse_summary(text)
    assert result.p50_ms == pytest.approx(0.87)
    assert result.p99_ms == pytest.approx(1200.0)


def test_wrk_without_errors_or_latency_flag() -> None:
    text = "Running 1s test @ http://127.0.0.1:1\n  2000 requests in 1.00m, 1MB read\nRequests/sec: 33.3\n"
    result = wrk.parse_summary(text)
    assert (result.requests, result.duration_s, result.status_errors, result.socket_errors) == (
        2000,
        60.0,
        0,
        0,
    )
    assert math.isnan(result.p50_ms)


def test_the_lua_result_line_wins_over_the_summary() -> None:
    result = wrk.parse_output(WRK_TEXT.replace("144818 requests", "999 requests") + RESULT_LINE)
    assert result.requests == 144_818
    assert result.duration_s == pytest.approx(5.001234)
    assert result.p50_ms == pytest.approx(2.051)
    assert result.p99_ms == pytest.approx(5.12)
    assert (result.status_errors, result.socket_errors) == (17, 3)


def test_unreadable_wrk_output_is_an_error() -> None:
    with pytest.raises(wrk.WrkError):
        wrk.parse_output("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_wrk_command_is_pinned_and_bounded() -> None:
    cmd = wrk.command(
        "http://127.0.0.1:9/", "zipf.lua", ["/tmp/codes"], seconds=4.6, connections=64, cpu=0
    )
    assert cmd[:3] == ["taskset", "-c", "0"]
    assert "-t1" in cmd and "-c64" in cmd and "-d5s" in cmd and "--latency" in cmd
    assert cmd[-2:] == ["--", "/tmp/codes"]
    assert cmd[cmd.index("-s") + 1].endswith("loadtest/bench/zipf.lua")
    assert (
        wrk.command("http://127.0.0.1:9/", "zipf.lua", [], seconds=1, connections=1, cpu=None)[0]
        == "wrk"
    )


def test_wrk_refuses_a_non_loopback_target() -> None:
    with pytest.raises(wrk.WrkError, match="non-loopback"):
        wrk.run("http://10.0.0.1:80/", "zipf.lua", [], seconds=1, connections=1, cpu=None)


def test_zipf_sequence_favours_the_first_codes() -> None:
    codes = [workload.code(i) for i in range(1000)]
    sequence = workload.zipf_sequence(codes, 50_000)
    assert len(sequence) == 50_000
    assert set(sequence) <= set(codes)
    counts = {c: sequence.count(c) for c in codes[:3]}
    assert counts[codes[0]] > counts[codes[1]] > counts[codes[2]]
    # Zipf s=1 over 1000 ranks: rank 1 takes 1/H(1000) ~ 13% of the requests.
    assert 0.11 < counts[codes[0]] / len(sequence) < 0.16
    assert workload.top_share(sequence, 10) > 0.3
    assert len(set(sequence)) > 500  # a long tail, not one hot code


def test_zipf_sequence_is_reproducible() -> None:
    codes = [workload.code(i) for i in range(100)]
    assert workload.zipf_sequence(codes, 500, seed=7) == workload.zipf_sequence(codes, 500, seed=7)
    assert workload.zipf_sequence(codes, 500, seed=7) != workload.zipf_sequence(codes, 500, seed=8)


def test_zipf_weights_and_each_once() -> None:
    assert workload.zipf_weights(3) == [1.0, 0.5, pytest.approx(1 / 3)]
    with pytest.raises(ValueError):
        workload.zipf_weights(0)
    codes = [workload.code(i) for i in range(200)]
    shuffled = workload.each_once(codes, seed=3)
    assert sorted(shuffled) == codes and shuffled != codes


def test_code_file_is_one_code_per_line(tmp_path: Path) -> None:
    codes = [workload.code(i) for i in range(5)]
    path = workload.write(tmp_path / "codes", codes)
    assert path.read_text().splitlines() == codes
    assert all(c.isalnum() for c in codes) and len(set(codes)) == 5


def _result(requests: int, p50: float = 1.0, p99: float = 2.0, status_errors: int = 0) -> WrkResult:
    return WrkResult(
        requests=requests,
        duration_s=1.0,
        status_errors=status_errors,
        socket_errors=0,
        p50_ms=p50,
        p99_ms=p99,
    )


def test_series_reports_medians_and_the_median_of_paired_ratios() -> None:
    series = Series("edge")
    series.add(_result(800, p50=1.0, p99=3.0), _result(1000))
    series.add(_result(450, p50=2.0, p99=9.0), _result(500))  # a noisy round: both halves slow
    series.add(_result(900, p50=1.5, p99=4.0), _result(1000))
    row = series.row()
    assert row.ratio == pytest.approx(0.9)  # ratios 0.8, 0.9, 0.9
    assert row.ratio_range == (pytest.approx(0.8), pytest.approx(0.9))
    assert row.result == "800 redirects/s"
    assert (row.p50_ms, row.p99_ms) == (1.5, 4.0)


def test_series_without_runs_is_not_available() -> None:
    assert Series("edge").row(note="edge missing") == Row("edge", "n/a", note="edge missing")


def test_count_check_allows_only_requests_in_flight() -> None:
    assert CountCheck(counted=1010, served=1010, seen=1000, in_flight=64).ok
    assert not CountCheck(counted=1009, served=1010, seen=1000, in_flight=64).ok  # a click lost
    assert not CountCheck(
        counted=999, served=None, seen=1000, in_flight=64
    ).ok  # fewer than wrk saw
    assert not CountCheck(
        counted=1100, served=None, seen=1000, in_flight=64
    ).ok  # more than in flight
    assert "+10 in flight" in CountCheck(1010, 1010, 1000, 64).describe()


def test_counted_cell_names_the_worst_run() -> None:
    good = CountCheck(100, 100, 100, 64)
    assert counted_cell([]) == ""
    assert counted_cell([good, good]) == "ok (2/2)"
    cell = counted_cell([good, CountCheck(0, 500, 498, 64), CountCheck(90, 100, 99, 64)])
    assert cell.startswith("2/3 runs MISMATCH: counted 0, served 500")


def test_table_is_markdown_with_aligned_columns() -> None:
    rows = [
        Row(
            "bare Granian 302 (reference 1)",
            "30,000 redirects/s",
            1.0,
            None,
            2.0,
            5.0,
            "",
            "ceiling",
        ),
        Row(
            "edge (a) hot path",
            "24,000 redirects/s",
            0.8,
            (0.75, 0.9),
            2.5,
            6.25,
            "ok (3/3)",
            "lookups: local 100%",
        ),
        Row("aggregator flush", "n/a", note="not available yet"),
    ]
    lines = format_table(rows).splitlines()
    assert len(lines) == 5
    assert lines[0].startswith("| figure") and "vs bare Granian" in lines[0]
    assert set(lines[1]) <= {"|", "-"}
    assert len({len(line) for line in lines}) == 1
    cells = [c.strip() for c in lines[3].strip("|").split("|")]
    assert cells == [
        "edge (a) hot path",
        "24,000 redirects/s",
        "0.80 (0.75-0.90)",
        "2.50",
        "6.25",
        "2.5",
        "ok (3/3)",
        "lookups: local 100%",
    ]
    assert [c.strip() for c in lines[4].strip("|").split("|")][2:6] == ["", "", "", ""]


METRICS = """\
# HELP linkedge_link_lookups_total Short-code lookups
# TYPE linkedge_link_lookups_total counter
linkedge_link_lookups_total{tier="local"} 900.0
linkedge_link_lookups_total{tier="redis"} 100.0
linkedge_redirects_total{status="302"} 1000.0
linkedge_redirects_total{status="404"} 3.0
linkedge_build_info{version="0.1.0"} 1.0
process_open_fds 12
"""


def test_prometheus_text_is_read_per_label() -> None:
    samples = observe.parse_prometheus(METRICS)
    assert samples[("process_open_fds", ())] == 12.0
    assert observe.by_label(samples, "linkedge_redirects_total", "status") == {
        "302": 1000.0,
        "404": 3.0,
    }
    before = {"local": 900.0, "redis": 100.0}
    after = {"local": 1000.0, "redis": 400.0, "postgres": 0.0}
    shares = observe.shares(before, after)
    assert shares == {"local": 0.25, "redis": 0.75}
    assert observe.describe_shares(shares) == "redis 75%, local 25%"
    assert observe.shares(after, after) == {}


def test_top_frames_from_collapsed_stacks() -> None:
    trunk = "thread (7): MainThread;<module> (granian/__main__.py:4);MPServer._spawn_asgi_lifespan_worker (granian/server/mp.py:249)"
    collapsed = (
        f"{trunk};handle (r.py:10);lookup (l.py:5) 40\n"
        f"{trunk};handle (r.py:10);lookup (l.py:6) 20\n"
        "thread (7): MainThread;handle (r.py:10);send (r.py:20) 30\n"
        f"{trunk} 10\n"
        "thread (9) 500\n"  # a Rust thread: no Python frame
        "garbage line\n"
    )
    own, inclusive = observe.top_frames(collapsed, limit=3)
    assert own == [
        ("lookup (l.py)", 0.6),
        ("send (r.py)", 0.3),
        ("[native: Granian Rust server, event loop, I/O]", 0.1),
    ]
    assert inclusive[0] == ("handle (r.py)", 0.9)
    assert not any("granian/" in frame for frame, _ in inclusive)
    by_line, _ = observe.top_frames(collapsed, limit=1, lines=True)
    assert by_line == [("lookup (l.py:5)", 0.4)]
    assert observe.top_frames("") == ([], [])


def test_bench_skips_cleanly_without_wrk(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from loadtest.bench import run

    monkeypatch.setattr(wrk.shutil, "which", lambda name: None)
    assert run.main() == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "apt-get install wrk" in out


def test_ab_takes_name_source_and_environment_and_refuses_the_rest() -> None:
    from loadtest.bench import ab

    assert ab.parse(["before=HEAD~1", "after=/tmp/tree:CACHE_SIZE=1,LOG_LEVEL=INFO"]) == [
        ("before", "HEAD~1", {}),
        ("after", "/tmp/tree", {"CACHE_SIZE": "1", "LOG_LEVEL": "INFO"}),
    ]
    for bad in (["HEAD"], ["=HEAD"], ["a="], ["a=HEAD", "a=HEAD~1"], []):
        with pytest.raises(SystemExit):
            ab.parse(bad)


def test_ab_exports_a_revision_and_takes_a_directory_as_it_is(tmp_path: Path) -> None:
    from loadtest.bench import ab

    tree = ab.source_tree("HEAD", tmp_path, "head")
    assert (tree / "edge" / "redirect.py").is_file() and (tree / "pyproject.toml").is_file()
    if shutil.which("cc") or shutil.which("gcc"):  # its C click encoder, built as pip would
        assert list((tree / "edge").glob("_clickfast*.so"))
    assert ab.source_tree(str(tree), tmp_path, "again") == tree
    with pytest.raises(SystemExit):
        ab.source_tree("no-such-revision-or-directory", tmp_path, "bad")


def test_cpu_seconds_counts_the_process_own_work() -> None:
    import os
    import time

    from loadtest.bench import stack

    before = stack.cpu_seconds(os.getpid())
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn 0.3 s of CPU
        pass
    spent = stack.cpu_seconds(os.getpid()) - before
    assert 0.2 <= spent <= 5.0
