"""Repetitions of a level -> one row: median with [min-max]; best levels; open-loop capacity at a p99 target.

Every level is measured ``repetitions`` times (interleaved with the other baselines); a :class:`Row` holds the
repetitions of one (baseline, setting, mode, level). Comparisons use the medians; tables and plots show the
range. Older results (one measurement per level) give rows of one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from trimodal.bench.loadgen import LevelResult

MIN_ACHIEVED = 0.95  # an open-loop level counts only if it achieved >= 95% of the rate scheduled, without errors


@dataclass(frozen=True)
class Spread:
    """Median, min and max of one quantity over the repetitions (NaN when none measured it)."""

    median: float
    low: float
    high: float

    def text(self, digits: int = 1) -> str:
        """``12.3 [11.0-13.9]`` (just the value for one repetition, ``-`` for none)."""
        if math.isnan(self.median):
            return "-"
        if self.low == self.high:
            return f"{self.median:.{digits}f}"
        return f"{self.median:.{digits}f} [{self.low:.{digits}f}-{self.high:.{digits}f}]"


def spread(values: Sequence[float | None]) -> Spread:
    """:class:`Spread` of the finite values."""
    finite = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not finite:
        return Spread(math.nan, math.nan, math.nan)
    return Spread(statistics.median(finite), min(finite), max(finite))


@dataclass(frozen=True)
class Row:
    """The repetitions of one level of one baseline (and setting)."""

    baseline: str
    tool: str
    mode: str
    concurrency: int
    rate: float | None
    levels: tuple[LevelResult, ...]

    def of(self, get: Callable[[LevelResult], float | None]) -> Spread:
        """Spread of ``get(level)`` over the repetitions."""
        return spread([get(level) for level in self.levels])

    @property
    def throughput(self) -> Spread:
        """Samples per second."""
        return self.of(lambda x: x.throughput)

    @property
    def p50(self) -> Spread:
        """p50 latency, ms."""
        return self.of(lambda x: x.p50_ms)

    @property
    def p99(self) -> Spread:
        """p99 latency, ms."""
        return self.of(lambda x: x.p99_ms)

    @property
    def errors(self) -> int:
        """Errors over every repetition."""
        return sum(level.errors for level in self.levels)

    @property
    def valid(self) -> bool:
        """Whether the median throughput is positive and a p50 was measured."""
        return self.throughput.median > 0 and not math.isnan(self.p50.median)

    def meets_rate(self) -> bool:
        """Open loop: every repetition achieved >= 95% of the rate it scheduled, without errors."""
        return bool(self.levels) and all(level.meets_rate(MIN_ACHIEVED) for level in self.levels)

    def label(self) -> str:
        """``c=16`` or ``83.8 req/s``."""
        return f"{self.rate:g} req/s" if self.mode == "rate" else f"c={self.concurrency}"


def rows(levels: Sequence[LevelResult]) -> list[Row]:
    """Group levels into rows by (baseline, tool, mode, concurrency, rate), in a stable order."""
    groups: dict[tuple[str, str, str, int, float | None], list[LevelResult]] = {}
    for level in levels:
        groups.setdefault((level.baseline, level.tool, level.mode, level.concurrency, level.rate), []).append(level)
    ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2], kv[0][4] or 0.0, kv[0][3]))
    return [Row(*key, tuple(sorted(group, key=lambda x: x.repetition or 1))) for key, group in ordered]


def select(all_rows: Sequence[Row], baseline: str, mode: str = "concurrency") -> list[Row]:
    """The rows of one baseline and mode."""
    return [row for row in all_rows if row.baseline == baseline and row.mode == mode]


def best(candidates: Sequence[Row]) -> Row | None:
    """The valid row with the highest median throughput (the baseline's saturation), or None."""
    measured = [row for row in candidates if row.valid]
    return max(measured, key=lambda row: row.throughput.median) if measured else None


def at_concurrency(candidates: Sequence[Row], concurrency: int) -> Row | None:
    """The best row at exactly this concurrency (several settings: the one with the highest median)."""
    return best([row for row in candidates if row.concurrency == concurrency])


def open_loop_rows(all_rows: Sequence[Row], baseline: str = "triton") -> list[Row]:
    """Poisson rows of ``baseline`` measured by the bench's open-loop generator (timed from scheduled send).

    perf_analyzer's rate levels of older runs time from the actual send and carry no achieved rate: they are
    left out.
    """
    return sorted(
        (row for row in select(all_rows, baseline, "rate") if row.tool == "loadgen" and row.rate),
        key=lambda row: row.rate or 0.0,
    )  # fmt: skip


def capacity(all_rows: Sequence[Row], p99_ms: float, baseline: str = "triton") -> tuple[Row | None, list[str]]:
    """The highest offered Poisson rate at which every repetition's p99 (from scheduled send) meets ``p99_ms``.

    Rates are walked upwards; a rate counts when every repetition achieved >= 95% of its scheduled rate without
    errors and every repetition's p99 <= the target (the worst window, not the median: a rate where one window in
    three misses has a p99 over all its requests above the target); the walk stops at the first rate that does not
    count (a higher rate that happens to pass after a failing one is not trusted). Closed-loop levels are never
    used: their latency hides queueing. The highest rate measured bounds what can be found: a capacity equal to it
    may be an underestimate.

    Args:
        all_rows: the run's rows.
        p99_ms: the target.
        baseline: whose capacity.

    Returns:
        The chosen row (None if the lowest rate already fails) and one line per rate walked.
    """
    chosen: Row | None = None
    lines = []
    for row in open_loop_rows(all_rows, baseline):
        achieved = row.of(lambda x: x.achieved_rps)
        ok_rate = row.meets_rate()
        ok_p99 = row.p99.high <= p99_ms
        verdict = "meets" if ok_rate and ok_p99 else ("misses: p99" if ok_rate else "misses: rate not achieved")
        lines.append(
            f"  Poisson {row.rate:g} req/s: achieved {achieved.text()} req/s, errors {row.errors}, "
            f"p99 {row.p99.text()} ms -> {verdict}"
        )
        if not (ok_rate and ok_p99):
            break
        chosen = row
    return chosen, lines
