"""The request sequences wrk replays: Zipf-like popularity over the seeded codes, or each code once.

Files hold one code per line; ``zipf.lua`` requests them in file order and cycles. Everything is
seeded, so two runs of the bench send the same sequence.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from pathlib import Path


def code(index: int) -> str:
    """The short code of the ``index``-th seeded link (also its popularity rank in Zipf files)."""
    return f"bn{index:06d}"


def zipf_weights(n: int, s: float = 1.0) -> list[float]:
    """Popularity of ranks 1..n: weight 1/rank^s (s=1: the classic Zipf law of link popularity)."""
    if n < 1:
        raise ValueError("need at least one code")
    return [1.0 / (rank**s) for rank in range(1, n + 1)]


def zipf_sequence(codes: Sequence[str], length: int, *, s: float = 1.0, seed: int = 1) -> list[str]:
    """``length`` codes drawn with Zipf popularity: ``codes[0]`` the most requested."""
    cumulative = list(itertools.accumulate(zipf_weights(len(codes), s)))
    return random.Random(seed).choices(codes, cum_weights=cumulative, k=length)


def each_once(codes: Sequence[str], *, seed: int = 1) -> list[str]:
    """Every code exactly once, in a shuffled order (cold runs, cache warming)."""
    shuffled = list(codes)
    random.Random(seed).shuffle(shuffled)
    return shuffled


def write(path: Path, sequence: Sequence[str]) -> Path:
    path.write_text("\n".join(sequence) + "\n")
    return path


def top_share(sequence: Sequence[str], top: int) -> float:
    """Fraction of requests that go to the ``top`` most requested codes (to describe the load)."""
    counts: dict[str, int] = {}
    for item in sequence:
        counts[item] = counts.get(item, 0) + 1
    ranked = sorted(counts.values(), reverse=True)
    return sum(ranked[:top]) / len(sequence) if sequence else 0.0
