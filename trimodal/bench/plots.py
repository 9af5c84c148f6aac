"""PNG plots of a run: throughput vs concurrency and p99 vs throughput, one line per baseline, min-max error bars.

matplotlib (the "bench" extra) is imported inside :func:`plot`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trimodal.bench.aggregate import Row, open_loop_rows, rows, select
from trimodal.bench.baselines import LABELS
from trimodal.bench.report import ORDER
from trimodal.bench.results import BenchResults

LOGGER = logging.getLogger(__name__)

THROUGHPUT_PNG = "throughput.png"
LATENCY_PNG = "latency.png"


def _errorbar(ax: Any, rows: list[Row], x: Any, y: Any, **style: Any) -> None:
    """One line through the medians, error bars from min to max of the repetitions."""
    xs = [x(row) for row in rows]
    spreads = [y(row) for row in rows]
    medians = [v.median for v in spreads]
    below = [v.median - v.low for v in spreads]
    above = [v.high - v.median for v in spreads]
    ax.errorbar(xs, medians, yerr=[below, above], capsize=3, **style)


def _throughput(ax: Any, results: BenchResults) -> None:
    all_rows = rows(results.levels)
    for name in ORDER:
        for tool in sorted({row.tool for row in select(all_rows, name)}):
            chosen = [row for row in select(all_rows, name) if row.valid and row.tool == tool]
            label = LABELS[name] + (f" ({tool})" if name == "inprocess" else "")
            if chosen:
                _errorbar(ax, chosen, lambda r: r.concurrency, lambda r: r.throughput, marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency (requests in flight)")
    ax.set_ylabel("throughput (samples/s), median and min-max")
    ax.set_title("Throughput vs concurrency (closed loop)")
    ax.legend(fontsize=7)


def _best_per_concurrency(candidates: list[Row]) -> list[Row]:
    """Per concurrency, the better setting (in-process: how the machine is used), by median throughput."""
    top: dict[int, Row] = {}
    for row in candidates:
        if row.valid and (row.concurrency not in top or row.throughput.median > top[row.concurrency].throughput.median):
            top[row.concurrency] = row
    return sorted(top.values(), key=lambda row: row.throughput.median)


def _latency(ax: Any, results: BenchResults) -> None:
    all_rows = rows(results.levels)
    for index, name in enumerate(ORDER):
        chosen = _best_per_concurrency(select(all_rows, name))
        if chosen:
            color = f"C{index}"
            _errorbar(ax, chosen, lambda r: r.throughput.median, lambda r: r.p99, marker="^", linestyle=":",
                      color=color, label=f"{LABELS[name]} p99 (closed loop)")  # fmt: skip
    rate = [row for row in open_loop_rows(all_rows) if row.valid]
    if rate:
        _errorbar(ax, rate, lambda r: r.of(lambda x: x.achieved_rps).median, lambda r: r.p99, marker="s",
                  linestyle="--", color="k", label="Triton p99, Poisson arrivals (from scheduled send)")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("throughput (samples/s)")
    ax.set_ylabel("p99 latency (ms), median and min-max")
    ax.set_title("p99 latency vs throughput")
    ax.legend(fontsize=6)


def plot(results: BenchResults, folder: Path) -> list[Path]:
    """Write ``throughput.png`` and ``latency.png`` into ``folder``.

    Args:
        results: the run's results.
        folder: the results folder.

    Returns:
        The files written.

    Raises:
        ImportError: if matplotlib is not installed.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    written = []
    for filename, draw in ((THROUGHPUT_PNG, _throughput), (LATENCY_PNG, _latency)):
        fig, ax = plt.subplots(figsize=(7, 4.5))
        draw(ax, results)
        ax.grid(True, alpha=0.3)
        fig.tight_layout()
        written.append(Path(folder) / filename)
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written
