"""What the bench reads back from the processes: Prometheus text, py-spy stacks, the machine."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Mapping

_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?\s+(\S+)")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def parse_prometheus(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Samples of a Prometheus text exposition: (name, sorted labels) -> value."""
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        if not match:
            continue
        labels = tuple(sorted(_LABEL.findall(match.group(2) or "")))
        try:
            samples[(match.group(1), labels)] = float(match.group(3))
        except ValueError:
            continue
    return samples


def by_label(
    samples: Mapping[tuple[str, tuple[tuple[str, str], ...]], float], name: str, label: str
) -> dict[str, float]:
    """``name``'s samples summed per value of ``label``."""
    out: dict[str, float] = {}
    for (sample_name, labels), value in samples.items():
        if sample_name == name:
            key = dict(labels).get(label, "")
            out[key] = out.get(key, 0.0) + value
    return out


def shares(before: Mapping[str, float], after: Mapping[str, float]) -> dict[str, float]:
    """Each label's share of the increase between two scrapes (empty when nothing moved)."""
    delta = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    total = sum(v for v in delta.values() if v > 0)
    return {k: v / total for k, v in delta.items() if v > 0} if total else {}


def describe_shares(parts: Mapping[str, float]) -> str:
    """``"redis 91%, local 9%"``, largest first, parts under 0.5% left out."""
    ranked = sorted(parts.items(), key=lambda kv: -kv[1])
    return ", ".join(f"{name} {share:.0%}" for name, share in ranked if share >= 0.005)


# Frames of Granian's start-up chain, under which every request runs: not worth listing.
_TRUNK = (
    "<frozen runpy>",
    "click/core.py",
    "granian/cli.py",
    "granian/__main__",
    "granian/server/",
    "multiprocessing/",
)
# The frame where Granian's worker enters its Rust server: samples whose top it is are spent
# below Python (Rust HTTP, the event loop, waiting on sockets).
_NATIVE = "_spawn_asgi_lifespan_worker"
_LINE = re.compile(r":\d+\)$")


def top_frames(
    collapsed: str, limit: int = 15, *, lines: bool = False
) -> tuple[list[tuple[str, float]], list[tuple[str, float]]]:
    """From collapsed stacks (py-spy ``--format raw [--threads]``: ``f1;f2;f3 COUNT`` per line), the
    frames with the most samples on top of the stack (self) and anywhere in it (inclusive), as
    shares of the samples with Python frames. Thread labels are dropped, so are threads with no
    Python frame (Granian's Rust runtime); Granian's start-up chain is left out of the inclusive
    list; frames are per function unless ``lines``."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        frames = [f for f in stack.split(";") if f and not f.startswith("thread (")]
        if not frames:
            continue
        if not lines:
            frames = [_LINE.sub(")", f) for f in frames]
        count = int(count_text)
        total += count
        leaf = frames[-1]
        own["[native: Granian Rust server, event loop, I/O]" if _NATIVE in leaf else leaf] += count
        for frame in set(frames):
            if not any(part in frame for part in _TRUNK):
                inclusive[frame] += count
    if not total:
        return [], []
    return (
        [(frame, n / total) for frame, n in own.most_common(limit)],
        [(frame, n / total) for frame, n in inclusive.most_common(limit)],
    )


def machine() -> dict[str, str]:
    """What the numbers were measured on."""
    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    info = {
        "nproc": str(os.cpu_count()),
        "cpu": model or platform.processor() or "unknown",
        "kernel": platform.release(),
        "python": sys.version.split()[0],
        "granian": _version([sys.executable, "-m", "granian", "--version"]),
        "wrk": _version(["wrk", "-v"]),
        "nginx": _version(["nginx", "-v"]) if shutil.which("nginx") else "not installed",
    }
    return info


def _version(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (done.stdout + done.stderr).strip().splitlines()
    return text[0].strip() if text else "unknown"
