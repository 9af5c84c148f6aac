"""Latency drift over a soak: did the server get slower, or build a queue, while the offered rate stayed put?

Two checks, because each misses what the other sees:

* **Ratio**: the last window's p50, and the median of its three sub-window p99s, against the first window after
  warm-up. A leak that slows every request lifts both. A sub-window median, so that one ~0.5 s stall does not
  read as drift. But a queue that grows from the start at a constant deficit lifts the first window too: with
  windows centred at 22.5 s and 52.5 s the ratio of a linear backlog stays under 52.5 / 22.5 = 2.33 however large
  the deficit, so the ratio alone cannot see it.
* **Ceiling**: the last window's p50 must stay under the p99 the same server showed at its open-loop capacity
  (measured on the same machine minutes before). At 70% of capacity the median should sit far under that; a
  backlog adds (deficit x elapsed time) to every request and crosses it: a 0.5% shortfall adds about 260 ms by
  the last window of a 60 s soak.

The ratio's bound is set by how noisy the machine is over the soak's length (see the soak test); the ceiling does
not depend on it, since it is measured on the same machine.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import asdict, dataclass

from trimodal.bench.traffic import LoadResult


@dataclass(frozen=True)
class SoakDrift:
    """First vs last window of a soak, and the verdict."""

    p50_first_ms: float
    p50_last_ms: float
    p99_first_median_ms: float  # median of three sub-window p99s
    p99_last_median_ms: float
    ceiling_ms: float  # the p99 at open-loop capacity
    limit: float  # allowed ratio, last / first

    @property
    def within_ratio(self) -> bool:
        """Both the p50 and the sub-window p99 median grew by at most ``limit``."""
        return self.p50_last_ms <= self.limit * self.p50_first_ms and (
            self.p99_last_median_ms <= self.limit * self.p99_first_median_ms
        )

    @property
    def under_ceiling(self) -> bool:
        """The last window's p50 stayed under the p99 at open-loop capacity."""
        return self.p50_last_ms < self.ceiling_ms

    @property
    def flat(self) -> bool:
        """Neither check saw drift."""
        return self.within_ratio and self.under_ceiling

    def to_dict(self) -> dict[str, object]:
        """JSON-friendly, with both verdicts."""
        values = {k: round(v, 2) for k, v in asdict(self).items()}
        return {**values, "within_ratio": self.within_ratio, "under_ceiling": self.under_ceiling}


def median_p99(result: LoadResult, start: float, end: float, parts: int = 3) -> float:
    """Median of the p99 latencies of ``parts`` equal sub-windows of [start, end) (by scheduled send), in ms."""
    step = (end - start) / parts
    return statistics.median(result.percentile_ms(99, (start + i * step, start + (i + 1) * step)) for i in range(parts))


def soak_drift(
    result: LoadResult, warmup_s: float, window_s: float, end_s: float, ceiling_ms: float, limit: float
) -> SoakDrift:
    """Compare the window after ``warmup_s`` with the last window before ``end_s``.

    Args:
        result: the soak's outcomes (start times in seconds from its beginning).
        warmup_s: where the first compared window starts.
        window_s: length of each compared window.
        end_s: the soak's length (the last window ends there).
        ceiling_ms: the p99 the server showed at its open-loop capacity.
        limit: the largest allowed last / first ratio.

    Returns:
        The figures and verdicts.

    Raises:
        ValueError: if a window holds no success (nothing to compare) or the ceiling is not a positive number.
    """
    if not (ceiling_ms > 0 and math.isfinite(ceiling_ms)):
        raise ValueError(f"ceiling_ms: expected a positive p99 in ms, got {ceiling_ms}")
    first, last = (warmup_s, warmup_s + window_s), (end_s - window_s, end_s)
    drift = SoakDrift(
        p50_first_ms=result.percentile_ms(50, first), p50_last_ms=result.percentile_ms(50, last),
        p99_first_median_ms=median_p99(result, *first), p99_last_median_ms=median_p99(result, *last),
        ceiling_ms=ceiling_ms, limit=limit,
    )  # fmt: skip
    if any(math.isnan(v) for v in (drift.p50_first_ms, drift.p50_last_ms)):
        raise ValueError(f"no successful request in the window {first} or {last} s")
    return drift
