"""A py-spy profile of one edge worker under wrk load, summarised as the top frames."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from loadtest.bench import observe, wrk


def find() -> str | None:
    """py-spy from ``BENCH_PYSPY``, ``PATH`` or next to this Python; None when there is none."""
    spy = (
        os.environ.get("BENCH_PYSPY")
        or shutil.which("py-spy")
        or str(Path(sys.executable).with_name("py-spy"))
    )
    return spy if os.access(spy, os.X_OK) else None


def record(
    spy: str,
    worker: int,
    url: str,
    codes_file: Path,
    out: Path,
    *,
    seconds: float,
    connections: int,
    cpu: int | None,
) -> bool:
    """Sample ``worker`` (all threads, 250 Hz, collapsed stacks to ``out``) while wrk loads ``url``."""
    load = subprocess.Popen(
        wrk.command(
            url,
            "zipf.lua",
            [str(codes_file)],
            seconds=seconds + 2,
            connections=connections,
            cpu=cpu,
        ),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        time.sleep(0.5)
        subprocess.run(
            [
                spy,
                "record",
                "-p",
                str(worker),
                "-d",
                str(int(seconds)),
                "-r",
                "250",
                "-f",
                "raw",
                "--threads",
                "-o",
                str(out),
                "--nonblocking",
            ],
            capture_output=True,
            timeout=seconds + 60,
            check=False,
        )
    finally:
        try:
            load.wait(seconds + 30)
        except subprocess.TimeoutExpired:
            os.killpg(load.pid, signal.SIGKILL)
            load.wait()
    return out.exists()


def summary(collapsed: str) -> str:
    """The top frames by self time (per function and per line) and inclusive, as text."""
    own, inclusive = observe.top_frames(collapsed, limit=20)
    own_lines, _ = observe.top_frames(collapsed, limit=12, lines=True)
    lines = ["self time (top of stack):"] + [f"  {share:6.1%}  {frame}" for frame, share in own]
    lines += ["inclusive:"] + [f"  {share:6.1%}  {frame}" for frame, share in inclusive]
    lines += ["self time by line:"] + [f"  {share:6.1%}  {frame}" for frame, share in own_lines]
    return "\n".join(lines) + "\n"
