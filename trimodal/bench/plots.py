"""PNG plots of a run: throughput vs concurrency and latency percentiles vs throughput, one line per baseline.

matplotlib (the "bench" extra) is imported inside :func:`plot`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from trimodal.bench.baselines import LABELS
from trimodal.bench.loadgen import LevelResult
from trimodal.bench.report import ORDER, by_baseline, valid
from trimodal.bench.results import BenchResults

LOGGER = logging.getLogger(__name__)

THROUGHPUT_PNG = "throughput.png"
LATENCY_PNG = "latency.png"


def _throughput(ax: Any, results: BenchResults) -> None:
    for name in ORDER:
        for tool in sorted({x.tool for x in by_baseline(results.levels, name)}):
            rows = [x for x in by_baseline(results.levels, name) if valid(x) and x.tool == tool]
            label = LABELS[name] + (f" ({tool})" if tool.startswith("ORT") else "")
            if rows:
                ax.plot([x.concurrency for x in rows], [x.throughput for x in rows], marker="o", label=label)
    pa = [x for x in by_baseline(results.perf, "triton") if valid(x)]
    if pa:
        ax.plot([x.concurrency for x in pa], [x.throughput for x in pa], marker="x", linestyle="--",
                label="Triton as configured (perf_analyzer)")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency (requests in flight)")
    ax.set_ylabel("throughput (samples/s)")
    ax.set_title("Throughput vs concurrency")
    ax.legend(fontsize=8)


def _best_per_concurrency(levels: list[LevelResult]) -> list[LevelResult]:
    """Per concurrency, the better setting (in-process: ORT threads), by throughput."""
    best: dict[int, LevelResult] = {}
    for x in levels:
        if valid(x) and (x.concurrency not in best or x.throughput > best[x.concurrency].throughput):
            best[x.concurrency] = x
    return sorted(best.values(), key=lambda x: x.throughput)


def _latency(ax: Any, results: BenchResults) -> None:
    for index, name in enumerate(ORDER):
        rows = _best_per_concurrency(by_baseline(results.levels, name))
        if rows:
            color = f"C{index}"
            ax.plot([x.throughput for x in rows], [x.p50_ms for x in rows], marker="o", color=color,
                    label=f"{LABELS[name]} p50")  # fmt: skip
            ax.plot([x.throughput for x in rows], [x.p99_ms for x in rows], marker="^", linestyle=":", color=color,
                    label=f"{LABELS[name]} p99")  # fmt: skip
    rate = sorted((x for x in by_baseline(results.perf, "triton", mode="rate") if valid(x)), key=lambda x: x.throughput)
    if rate:
        ax.plot([x.throughput for x in rate], [x.p99_ms for x in rate], marker="s", linestyle="--", color="k",
                label="Triton p99, Poisson arrivals (perf_analyzer)")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("throughput (samples/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency percentiles vs throughput")
    ax.legend(fontsize=7)


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
