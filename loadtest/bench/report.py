"""Medians, ratios and the one markdown table the bench prints."""

from __future__ import annotations

import dataclasses
import math
import statistics
from collections.abc import Sequence

from loadtest.bench.wrk import WrkResult


@dataclasses.dataclass(frozen=True, slots=True)
class Row:
    figure: str
    result: str  # the headline value with its unit
    ratio: float | None = None  # to the bare Granian reference of the same run
    ratio_range: tuple[float, float] | None = None  # lowest and highest per-pair ratio
    p50_ms: float | None = None
    p99_ms: float | None = None
    counted: str = ""  # clicks counted vs redirects wrk saw
    note: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class CountCheck:
    """After one load run: what was stored against what was served and what wrk saw.

    wrk stops with up to ``connections`` requests in flight: the server answers (and counts) them,
    wrk never reads the answers. So ``served`` may exceed ``seen`` by at most that many; what was
    stored must equal ``served`` exactly (or, without the server's own count, fall in that window).
    """

    counted: int  # clicks in Postgres (or links created), the increase over the run
    served: int | None  # redirects the edge itself says it answered (its /metrics), if known
    seen: int  # 2xx/3xx answers wrk read
    in_flight: int  # wrk's connections

    @property
    def ok(self) -> bool:
        if self.served is not None and self.counted != self.served:
            return False
        return 0 <= self.counted - self.seen <= self.in_flight

    def describe(self) -> str:
        answered = self.counted if self.served is None else self.served
        served = f", served {self.served:,}" if self.served is not None else ""
        verdict = "ok" if self.ok else "MISMATCH"
        return (
            f"{verdict}: counted {self.counted:,}{served}, wrk saw {self.seen:,} "
            f"({answered - self.seen:+,} in flight)"
        )


@dataclasses.dataclass
class Series:
    """One load scenario over several rounds, each round paired with a reference run."""

    figure: str
    runs: list[WrkResult] = dataclasses.field(default_factory=list)
    references: list[WrkResult] = dataclasses.field(default_factory=list)
    counted: list[CountCheck] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(
        default_factory=list
    )  # per round; the table shows the last

    def add(self, run: WrkResult, reference: WrkResult | None) -> None:
        self.runs.append(run)
        if reference is not None:
            self.references.append(reference)

    def ratios(self) -> list[float]:
        """Per pair: run/reference requests per second (the reference ran right before the run)."""
        return [r.rps / ref.rps for r, ref in zip(self.runs, self.references) if ref.rps > 0]

    def ratio(self) -> float | None:
        ratios = self.ratios()
        return statistics.median(ratios) if ratios else None

    def row(self, *, unit: str = "redirects/s", note: str = "") -> Row:
        note = "; ".join(part for part in (note, *self.notes[-1:]) if part)
        ratios = self.ratios()
        if not self.runs:
            return Row(self.figure, "n/a", note=note)
        return Row(
            figure=self.figure,
            result=f"{statistics.median(r.rps for r in self.runs):,.0f} {unit}",
            ratio=self.ratio(),
            ratio_range=(min(ratios), max(ratios))
            if ratios and min(ratios) != max(ratios)
            else None,
            p50_ms=statistics.median(r.p50_ms for r in self.runs),
            p99_ms=statistics.median(r.p99_ms for r in self.runs),
            counted=counted_cell(self.counted),
            note=note,
        )


def counted_cell(checks: Sequence[CountCheck]) -> str:
    """``"ok (3/3)"`` when every run counted what it served, else the worst run."""
    if not checks:
        return ""
    bad = [check for check in checks if not check.ok]
    if not bad:
        return f"ok ({len(checks)}/{len(checks)})"
    worst = max(bad, key=lambda c: abs(c.counted - (c.served if c.served is not None else c.seen)))
    return f"{len(bad)}/{len(checks)} runs {worst.describe()}"


def _number(value: float | None, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return format(value, fmt)


HEADER = (
    "figure",
    "result",
    "vs bare Granian",
    "p50 ms",
    "p99 ms",
    "p99/p50",
    "clicks counted",
    "note",
)


def format_table(rows: Sequence[Row]) -> str:
    """A markdown table with aligned columns, one line per row."""
    cells = [list(HEADER)]
    for row in rows:
        spread = row.p99_ms / row.p50_ms if row.p50_ms and row.p99_ms is not None else None
        cells.append(
            [
                row.figure,
                row.result,
                _number(row.ratio, ".2f")
                + (
                    f" ({row.ratio_range[0]:.2f}-{row.ratio_range[1]:.2f})"
                    if row.ratio_range and row.ratio is not None
                    else ""
                ),
                _number(row.p50_ms, ".2f"),
                _number(row.p99_ms, ".2f"),
                _number(spread, ".1f"),
                row.counted,
                row.note,
            ]
        )
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(c.ljust(w) for c, w in zip(line, widths)) + " |" for line in cells]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"
