"""Results of a run -> ``report.md`` (tables, ratios, pass/fail per target, bottlenecks), ``levels.csv`` and plots.

The results are :class:`~trimodal.bench.results.BenchResults` (see there for ``results.json``). matplotlib is
imported only when plotting (:mod:`trimodal.bench.plots`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trimodal import contract
from trimodal.bench.baselines import BASELINES, LABELS
from trimodal.bench.loadgen import LevelResult
from trimodal.bench.results import BenchMeta, BenchResults, TuningResult
from trimodal.bench.stats import bottleneck

LOGGER = logging.getLogger(__name__)

LEVELS_CSV = "levels.csv"
REPORT_FILE = "report.md"
ORDER = BASELINES  # report order = the baselines' order
TARGET_CONCURRENCY = 16
ENSEMBLE = contract.ENSEMBLE
NAN = float("nan")


@dataclass
class Target:
    """One target of the issue: the measured value, the threshold and whether it passed."""

    name: str
    measured: float
    threshold: float
    passed: bool | None  # None: not measured
    detail: str
    level: LevelResult | None = None  # the Triton level whose breakdown explains a miss


# ---------------------------------------------------------------------------------------------------------
# Level selection
# ---------------------------------------------------------------------------------------------------------


def by_baseline(levels: Sequence[LevelResult], baseline: str, mode: str = "concurrency") -> list[LevelResult]:
    """Levels of one baseline and mode, by concurrency (or rate)."""
    chosen = [x for x in levels if x.baseline == baseline and x.mode == mode]
    return sorted(chosen, key=lambda x: (x.rate or 0.0, x.concurrency))


def valid(level: LevelResult) -> bool:
    """Whether a level served anything (positive throughput, a measured p50)."""
    return level.throughput > 0 and not math.isnan(level.p50_ms)


def saturation(levels: Sequence[LevelResult]) -> LevelResult | None:
    """The level with the highest throughput (None if nothing succeeded)."""
    measured = [x for x in levels if valid(x)]
    return max(measured, key=lambda x: x.throughput) if measured else None


def at_concurrency(levels: Sequence[LevelResult], concurrency: int) -> LevelResult | None:
    """The valid level with the highest throughput at exactly this concurrency, or None."""
    return saturation([x for x in levels if x.concurrency == concurrency])


def per_sample_costs(on: LevelResult, off: LevelResult) -> str:
    """Compute per sample of the bottleneck model with and without batching (why batching helps or not)."""
    stage = bottleneck(on.breakdown, exclude=(ENSEMBLE,))
    if not stage or stage not in off.breakdown:
        return ""
    a, b = on.breakdown[stage], off.breakdown[stage]
    if not a.get("avg_batch") or not b.get("avg_batch"):
        return ""
    batched = a["compute_ms_per_exec"] / a["avg_batch"]
    single = b["compute_ms_per_exec"] / b["avg_batch"]
    return (
        f"; bottleneck {stage}: {batched:.1f} ms compute per sample at avg batch {a['avg_batch']:.1f} vs "
        f"{single:.1f} ms at batch 1"
    )


# ---------------------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------------------

SATURATION_TARGET = "Triton at saturation >= 0.8x in-process ONNX Runtime"
NAIVE_TARGET = "Triton >= 3x naive FastAPI/PyTorch throughput at c=16, lower p99"
NAIVE_UNMEASURED = "Triton >= 3x naive at c=16, lower p99"
BATCHING_TARGET = "Dynamic batching on >= 2x off at c=16"
LATENCY_TARGET = "p99 at 70% of saturation <= 3x p50 at c=1"


def _saturation_target(levels: Sequence[LevelResult], perf: Sequence[LevelResult]) -> Target:
    sat_triton, sat_local = saturation(by_baseline(levels, "triton")), saturation(by_baseline(levels, "inprocess"))
    if not (sat_triton and sat_local):
        return Target(SATURATION_TARGET, NAN, 0.8, None, "not measured")
    ratio = sat_triton.throughput / sat_local.throughput
    pa_sat = saturation(by_baseline(perf, "triton"))
    extra = (
        f"; perf_analyzer saturation {pa_sat.throughput:.1f}/s = {pa_sat.throughput / sat_local.throughput:.2f}x"
        if pa_sat
        else ""
    )
    return Target(
        SATURATION_TARGET, ratio, 0.8, ratio >= 0.8,
        f"Triton {sat_triton.throughput:.1f}/s (c={sat_triton.concurrency}) vs in-process "
        f"{sat_local.throughput:.1f}/s (batch {min(sat_local.concurrency, 32)}){extra}",
        sat_triton,
    )  # fmt: skip


def _naive_target(levels: Sequence[LevelResult]) -> Target:
    c16 = at_concurrency(by_baseline(levels, "triton"), TARGET_CONCURRENCY)
    naive16 = at_concurrency(by_baseline(levels, "naive"), TARGET_CONCURRENCY)
    if not (c16 and naive16):
        return Target(NAIVE_UNMEASURED, NAN, 3.0, None, "not measured")
    ratio = c16.throughput / naive16.throughput
    lower = c16.p99_ms < naive16.p99_ms
    return Target(
        NAIVE_TARGET, ratio, 3.0, ratio >= 3.0 and lower,
        f"{c16.throughput:.1f}/s vs {naive16.throughput:.1f}/s; p99 {c16.p99_ms:.0f} ms vs {naive16.p99_ms:.0f} ms"
        f" ({'lower' if lower else 'NOT lower'})",
        c16,
    )  # fmt: skip


def _batching_target(levels: Sequence[LevelResult]) -> Target:
    c16 = at_concurrency(by_baseline(levels, "triton"), TARGET_CONCURRENCY)
    off16 = at_concurrency(by_baseline(levels, "triton_nobatch"), TARGET_CONCURRENCY)
    if not (c16 and off16):
        return Target(BATCHING_TARGET, NAN, 2.0, None, "not measured")
    ratio = c16.throughput / off16.throughput
    return Target(
        BATCHING_TARGET, ratio, 2.0, ratio >= 2.0,
        f"{c16.throughput:.1f}/s vs {off16.throughput:.1f}/s{per_sample_costs(c16, off16)}",
        c16,
    )  # fmt: skip


def _latency_target(results: BenchResults) -> Target:
    rates = [x for x in by_baseline(results.perf, "triton", mode="rate") if valid(x)]
    single = at_concurrency(by_baseline(results.perf, "triton"), 1) or at_concurrency(
        by_baseline(results.levels, "triton"), 1
    )
    sat_rate = results.meta.saturation_rps
    if not (rates and single and sat_rate):
        return Target(LATENCY_TARGET, NAN, 3.0, None, "not measured")
    goal = 0.7 * sat_rate
    level = min(rates, key=lambda x: abs((x.rate or 0) - goal))
    ratio = level.p99_ms / single.p50_ms
    return Target(
        LATENCY_TARGET, ratio, 3.0, ratio <= 3.0,
        f"Poisson {level.rate:g} req/s (70% of {sat_rate:.1f}/s): p99 {level.p99_ms:.1f} ms; "
        f"c=1 p50 {single.p50_ms:.1f} ms ({single.tool})",
        level,
    )  # fmt: skip


def evaluate(results: BenchResults) -> list[Target]:
    """Check the four targets of the benchmarks issue.

    Args:
        results: the run's results.

    Returns:
        One :class:`Target` per target.
    """
    return [
        _saturation_target(results.levels, results.perf),
        _naive_target(results.levels),
        _batching_target(results.levels),
        _latency_target(results),
    ]


# ---------------------------------------------------------------------------------------------------------
# Report sections
# ---------------------------------------------------------------------------------------------------------


def _fmt(value: float | None, digits: int = 1) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _breakdown_table(level: LevelResult) -> list[str]:
    lines = ["| model | requests | avg batch | queue ms/req | compute ms/exec | utilization |",
             "| --- | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for model, row in sorted(level.breakdown.items(), key=lambda kv: -kv[1].get("utilization", 0)):
        if model == ENSEMBLE:
            continue
        lines.append(
            f"| {model} | {int(row['requests'])} | {_fmt(row['avg_batch'])} | {_fmt(row['queue_ms'], 2)} | "
            f"{_fmt(row['compute_ms_per_exec'], 2)} | {100 * row['utilization']:.0f}% |"
        )
    return lines


def _header_section(meta: BenchMeta) -> list[str]:
    return [
        f"# trimodal benchmark {meta.timestamp}",
        "",
        f"Machine: {meta.machine}. Mode: {'quick' if meta.quick else 'full'}; "
        f"{meta.duration_s} s per level after {meta.warmup_s} s warm-up; workload: "
        f"{meta.workload_size} test-split requests, mix `{meta.mix}`. Throughput = validated "
        "samples/s. All baselines ran in this one run on the same requests; the closed-loop client "
        "(Python asyncio) shares the CPUs with the server.",
    ]


def _targets_section(targets: Sequence[Target]) -> list[str]:
    out = ["", "## Targets", "", "| target | measured | threshold | result | detail |",
           "| --- | ---: | ---: | --- | --- |"]  # fmt: skip
    for t in targets:
        verdict = "not measured" if t.passed is None else ("PASS" if t.passed else "**MISS**")
        out.append(f"| {t.name} | {_fmt(t.measured, 2)} | {t.threshold:g} | {verdict} | {t.detail} |")
    return out


def _bottleneck_lines(level: LevelResult) -> list[str]:
    stage = bottleneck(level.breakdown, exclude=(ENSEMBLE,))
    row = level.breakdown.get(stage or "", {})
    return [
        f"Bottleneck stage ({level.baseline}, {level.mode} "
        f"{level.rate if level.mode == 'rate' else level.concurrency}): **{stage}** "
        f"(utilization {100 * row.get('utilization', 0):.0f}%, avg batch {_fmt(row.get('avg_batch', 0))}, "
        f"queue {_fmt(row.get('queue_ms', 0), 2)} ms/request, "
        f"compute {_fmt(row.get('compute_ms_per_exec', 0), 2)} ms/execution). "
        "Per-model breakdown (statistics API):",
        "",
        *_breakdown_table(level),
    ]


def _missed_section(target: Target, results: BenchResults) -> list[str]:
    out = ["", f"### Missed: {target.name}", ""]
    if target.level is not None and target.level.breakdown:
        out += _bottleneck_lines(target.level)
    if results.tuning:
        out += ["", "Tried (same run, same workload):", ""]
        out += [f"- {x.name}: {x.settings} -> {x.summary}" for x in results.tuning]
    if results.notes:
        out += [""] + [f"- {n}" for n in results.notes]
    return out


def _levels_section(levels: Sequence[LevelResult]) -> list[str]:
    out = ["", "## Throughput and latency per concurrency (closed loop, same client for every baseline)", "",
           "| baseline | concurrency | throughput/s | p50 ms | p95 ms | p99 ms | errors |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name in ORDER:
        for x in sorted(by_baseline(levels, name), key=lambda x: (x.tool, x.concurrency)):
            label = LABELS[name] + (f" ({x.tool})" if x.tool.startswith("ORT") else "")
            out.append(f"| {label} | {x.concurrency} | {_fmt(x.throughput)} | {_fmt(x.p50_ms)} | "
                       f"{_fmt(x.p95_ms)} | {_fmt(x.p99_ms)} | {x.errors} |")  # fmt: skip
    return out


def _ratios_section(levels: Sequence[LevelResult]) -> list[str]:
    out = ["", "## Ratios at each concurrency (throughput of Triton as configured / other)", "",
           "| concurrency | vs in-process | vs naive | vs batching off |", "| ---: | ---: | ---: | ---: |"]  # fmt: skip
    for x in by_baseline(levels, "triton"):
        ratios = []
        for other in ("inprocess", "naive", "triton_nobatch"):
            ref = at_concurrency(by_baseline(levels, other), x.concurrency)
            ratios.append(f"{x.throughput / ref.throughput:.2f}x" if ref and valid(x) else "-")
        out.append(f"| {x.concurrency} | " + " | ".join(ratios) + " |")
    return out


def _perf_section(perf: Sequence[LevelResult]) -> list[str]:
    if not perf:
        return []
    out = ["", "## perf_analyzer (Triton as configured): concurrency and Poisson request-rate sweeps", "",
           "| mode | level | throughput/s | p50 ms | p95 ms | p99 ms | bottleneck (utilization) |",
           "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for x in sorted(perf, key=lambda x: (x.baseline, x.mode, x.rate or 0, x.concurrency)):
        stage = bottleneck(x.breakdown, exclude=(ENSEMBLE,))
        util = f"{stage} ({100 * x.breakdown[stage]['utilization']:.0f}%)" if stage else "-"
        level = f"{x.rate:g} req/s" if x.mode == "rate" else str(x.concurrency)
        out.append(f"| {x.mode} | {level} | {_fmt(x.throughput)} | {_fmt(x.p50_ms)} | {_fmt(x.p95_ms)} | "
                   f"{_fmt(x.p99_ms)} | {util} |")  # fmt: skip
    return out


def _saturation_section(levels: Sequence[LevelResult]) -> list[str]:
    sat = saturation(by_baseline(levels, "triton"))
    if not (sat and sat.breakdown):
        return []
    return ["", f"## Per-model breakdown, Triton as configured at c={sat.concurrency} (saturation)", "",
            *_breakdown_table(sat)]  # fmt: skip


def _tuning_section(tuning: Sequence[TuningResult]) -> list[str]:
    if not tuning:
        return []
    return ["", "## Config variants tried (rendered into temporary repositories, same workload)", "",
            "| variant | settings | result |", "| --- | --- | --- |",
            *(f"| {x.name} | `{x.settings}` | {x.summary} |" for x in tuning)]  # fmt: skip


def _files_section() -> list[str]:
    return ["", "## Files", "", "`results.json` (everything, incl. per-model breakdowns), `levels.csv`, "
            "`perf/*.csv` (perf_analyzer `--verbose-csv`), `throughput.png`, `latency.png`."]  # fmt: skip


def render_report(results: BenchResults) -> str:
    """The markdown report of a run's results."""
    targets = evaluate(results)
    out = [*_header_section(results.meta), *_targets_section(targets)]
    for target in targets:
        if target.passed is False:
            out += _missed_section(target, results)
    out += _levels_section(results.levels)
    out += _ratios_section(results.levels)
    out += _perf_section(results.perf)
    out += _saturation_section(results.levels)
    out += _tuning_section(results.tuning)
    out += _files_section()
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------


def write_levels_csv(levels: Sequence[LevelResult], path: Path) -> None:
    """A flat CSV of every level (no breakdowns)."""
    import csv

    fields = ["baseline", "tool", "mode", "concurrency", "rate", "requests", "errors", "duration_s", "throughput",
              "p50_ms", "p95_ms", "p99_ms", "mean_ms"]  # fmt: skip
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for level in levels:
            row = level.to_dict()
            writer.writerow({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})


def write_report(folder: Path, results: BenchResults | None = None, plots: bool = True) -> Path:
    """Write ``report.md``, ``levels.csv`` (and the plots) of a results folder.

    Args:
        folder: the results folder.
        results: the results (read from ``results.json`` when None).
        plots: also write the PNG plots.

    Returns:
        The report path.
    """
    folder = Path(folder)
    results = results if results is not None else BenchResults.load(folder)
    write_levels_csv([*results.levels, *results.perf], folder / LEVELS_CSV)
    if plots:
        from trimodal.bench.plots import plot

        try:
            plot(results, folder)
        except ImportError as exc:
            LOGGER.warning("no plots (%s): pip install matplotlib", exc)
    path = folder / REPORT_FILE
    path.write_text(render_report(results), encoding="utf-8")
    return path
