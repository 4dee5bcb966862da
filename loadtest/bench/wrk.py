"""Running wrk and reading what it says.

The Lua scripts print one ``BENCH_RESULT {json}`` line from ``done()`` with wrk's exact counts;
wrk's own text summary is parsed too, as a cross-check and for scripts without that line.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shutil
import subprocess
from pathlib import Path

HERE = Path(__file__).resolve().parent
INSTALL_HINT = (
    "wrk is not installed: `apt-get install wrk` (Debian/Ubuntu), then run `make bench` again"
)


class WrkError(RuntimeError):
    """wrk failed or printed nothing this module can read."""


@dataclasses.dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int  # completed responses, whatever their status
    duration_s: float
    status_errors: int  # responses that were not 2xx/3xx
    socket_errors: int  # connect + read + write + timeout
    p50_ms: float
    p99_ms: float

    @property
    def rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0

    @property
    def ok_requests(self) -> int:
        """Responses with a 2xx/3xx status: the redirects (or creations) wrk saw."""
        return self.requests - self.status_errors


_RESULT_LINE = re.compile(r"^BENCH_RESULT (\{.*\})\s*$", re.MULTILINE)
_SUMMARY = re.compile(r"^\s*(\d+) requests in ([\d.]+)(us|ms|s|m|h)", re.MULTILINE)
_PERCENTILE = re.compile(r"^\s*(50|99)(?:\.000)?%\s+([\d.]+)(us|ms|s|m)\s*$", re.MULTILINE)
_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s*(\d+)")
_SOCKET = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
_UNIT_S = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_output(text: str) -> WrkResult:
    """The result of one wrk run from its stdout (``BENCH_RESULT`` line first, else the summary)."""
    match = _RESULT_LINE.search(text)
    if match:
        data = json.loads(match.group(1))
        return WrkResult(
            requests=int(data["requests"]),
            duration_s=data["duration_us"] / 1e6,
            status_errors=int(data["status_errors"]),
            socket_errors=sum(
                int(data[k]) for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
            ),
            p50_ms=data["p50_us"] / 1000,
            p99_ms=data["p99_us"] / 1000,
        )
    return parse_summary(text)


def parse_summary(text: str) -> WrkResult:
    """wrk's human summary (run with ``--latency`` for the percentiles)."""
    summary = _SUMMARY.search(text)
    if not summary:
        raise WrkError(f"no wrk summary in output:\n{text[-2000:]}")
    percentiles = {int(p): float(v) * _UNIT_S[u] * 1000 for p, v, u in _PERCENTILE.findall(text)}
    non_2xx = _NON_2XX.search(text)
    socket = _SOCKET.search(text)
    return WrkResult(
        requests=int(summary.group(1)),
        duration_s=float(summary.group(2)) * _UNIT_S[summary.group(3)],
        status_errors=int(non_2xx.group(1)) if non_2xx else 0,
        socket_errors=sum(int(n) for n in socket.groups()) if socket else 0,
        p50_ms=percentiles.get(50, float("nan")),
        p99_ms=percentiles.get(99, float("nan")),
    )


def available() -> bool:
    return shutil.which("wrk") is not None


def command(
    url: str, script: str, args: list[str], *, seconds: float, connections: int, cpu: int | None
) -> list[str]:
    """The wrk command line: one thread, ``connections`` connections, pinned to ``cpu`` when given."""
    cmd = [
        "wrk",
        "-t1",
        f"-c{connections}",
        f"-d{max(1, round(seconds))}s",
        "--latency",
        "--timeout",
        "5s",
        "-s",
        str(HERE / script),
        url,
        "--",
        *args,
    ]
    return (["taskset", "-c", str(cpu)] + cmd) if cpu is not None else cmd


def run(
    url: str, script: str, args: list[str], *, seconds: float, connections: int, cpu: int | None
) -> WrkResult:
    """Run wrk against ``url`` (loopback only) and return its result."""
    if not url.startswith(("http://127.0.0.1:", "http://localhost:")):
        raise WrkError(f"refusing a non-loopback target {url}")
    cmd = command(url, script, args, seconds=seconds, connections=connections, cpu=cpu)
    try:
        done = subprocess.run(
            cmd, capture_output=True, text=True, timeout=seconds + 60, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise WrkError(f"wrk did not finish: {' '.join(cmd)}") from exc
    if done.returncode != 0:
        raise WrkError(
            f"wrk exited {done.returncode}: {done.stderr.strip() or done.stdout[-2000:]}"
        )
    return parse_output(done.stdout)
