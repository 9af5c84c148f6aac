"""Results folder -> ``report.md`` (tables, ratios, pass/fail per target, bottlenecks) and PNG plots.

``results.json`` layout (written by :func:`trimodal.bench.commands.bench`)::

    {"meta": {...}, "levels": [LevelResult...], "perf": [LevelResult...], "tuning": [{...}], "notes": [...]}

``levels`` are the side-by-side closed-loop sweeps of every baseline (same client code, same workload);
``perf`` are perf_analyzer's concurrency and Poisson request-rate sweeps of the configured Triton server.
matplotlib is imported only when plotting.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trimodal.bench import BenchError
from trimodal.bench.baselines import BASELINES, LABELS
from trimodal.bench.loadgen import LevelResult
from trimodal.bench.stats import bottleneck

LOGGER = logging.getLogger(__name__)

RESULTS_FILE = "results.json"
LEVELS_CSV = "levels.csv"
REPORT_FILE = "report.md"
ORDER = BASELINES  # report order = the baselines' order
TARGET_CONCURRENCY = 16
ENSEMBLE = "multimodal"


@dataclass
class Target:
    """One target of the issue: the measured value, the threshold and whether it passed."""

    name: str
    measured: float
    threshold: float
    passed: bool | None  # None: not measured
    detail: str
    level: LevelResult | None = None  # the Triton level whose breakdown explains a miss


def load_results(folder: Path) -> dict[str, Any]:
    """Read ``results.json`` of a results folder.

    Raises:
        BenchError: if it is missing or invalid.
    """
    path = Path(folder) / RESULTS_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise BenchError(f"cannot read benchmark results {path}: {exc}") from None
    data["levels"] = [LevelResult.from_dict(x) for x in data.get("levels", [])]
    data["perf"] = [LevelResult.from_dict(x) for x in data.get("perf", [])]
    return data


def by_baseline(levels: Sequence[LevelResult], baseline: str, mode: str = "concurrency") -> list[LevelResult]:
    """Levels of one baseline and mode, by concurrency (or rate)."""
    chosen = [x for x in levels if x.baseline == baseline and x.mode == mode]
    return sorted(chosen, key=lambda x: (x.rate or 0.0, x.concurrency))


def _valid(level: LevelResult) -> bool:
    return level.throughput > 0 and not math.isnan(level.p50_ms)


def saturation(levels: Sequence[LevelResult]) -> LevelResult | None:
    """The level with the highest throughput (None if nothing succeeded)."""
    valid = [x for x in levels if _valid(x)]
    return max(valid, key=lambda x: x.throughput) if valid else None


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


def evaluate(results: dict[str, Any]) -> list[Target]:
    """Check the four targets of the benchmarks issue.

    Args:
        results: from :func:`load_results` (or the in-memory equivalent).

    Returns:
        One :class:`Target` per target.
    """
    levels: list[LevelResult] = results["levels"]
    perf: list[LevelResult] = results.get("perf", [])
    targets: list[Target] = []
    nan = float("nan")

    triton = by_baseline(levels, "triton")
    sat_triton, sat_local = saturation(triton), saturation(by_baseline(levels, "inprocess"))
    if sat_triton and sat_local:
        ratio = sat_triton.throughput / sat_local.throughput
        pa_sat = saturation(by_baseline(perf, "triton"))
        extra = (
            f"; perf_analyzer saturation {pa_sat.throughput:.1f}/s = {pa_sat.throughput / sat_local.throughput:.2f}x"
            if pa_sat
            else ""
        )
        targets.append(Target(
            "Triton at saturation >= 0.8x in-process ONNX Runtime", ratio, 0.8, ratio >= 0.8,
            f"Triton {sat_triton.throughput:.1f}/s (c={sat_triton.concurrency}) vs in-process "
            f"{sat_local.throughput:.1f}/s (batch {min(sat_local.concurrency, 32)}){extra}",
            sat_triton,
        ))  # fmt: skip
    else:
        targets.append(Target("Triton at saturation >= 0.8x in-process ONNX Runtime", nan, 0.8, None, "not measured"))

    c16 = at_concurrency(triton, TARGET_CONCURRENCY)
    naive16 = at_concurrency(by_baseline(levels, "naive"), TARGET_CONCURRENCY)
    if c16 and naive16:
        ratio = c16.throughput / naive16.throughput
        lower = c16.p99_ms < naive16.p99_ms
        targets.append(Target(
            "Triton >= 3x naive FastAPI/PyTorch throughput at c=16, lower p99", ratio, 3.0, ratio >= 3.0 and lower,
            f"{c16.throughput:.1f}/s vs {naive16.throughput:.1f}/s; p99 {c16.p99_ms:.0f} ms vs {naive16.p99_ms:.0f} ms"
            f" ({'lower' if lower else 'NOT lower'})",
            c16,
        ))  # fmt: skip
    else:
        targets.append(Target("Triton >= 3x naive at c=16, lower p99", nan, 3.0, None, "not measured"))

    off16 = at_concurrency(by_baseline(levels, "triton_nobatch"), TARGET_CONCURRENCY)
    if c16 and off16:
        ratio = c16.throughput / off16.throughput
        targets.append(Target(
            "Dynamic batching on >= 2x off at c=16", ratio, 2.0, ratio >= 2.0,
            f"{c16.throughput:.1f}/s vs {off16.throughput:.1f}/s{per_sample_costs(c16, off16)}",
            c16,
        ))  # fmt: skip
    else:
        targets.append(Target("Dynamic batching on >= 2x off at c=16", nan, 2.0, None, "not measured"))

    rates = [x for x in by_baseline(perf, "triton", mode="rate") if _valid(x)]
    single = at_concurrency(by_baseline(perf, "triton"), 1) or at_concurrency(triton, 1)
    sat_rate = results.get("meta", {}).get("saturation_rps")
    if rates and single and sat_rate:
        goal = 0.7 * sat_rate
        level = min(rates, key=lambda x: abs((x.rate or 0) - goal))
        ratio = level.p99_ms / single.p50_ms
        targets.append(Target(
            "p99 at 70% of saturation <= 3x p50 at c=1", ratio, 3.0, ratio <= 3.0,
            f"Poisson {level.rate:g} req/s (70% of {sat_rate:.1f}/s): p99 {level.p99_ms:.1f} ms; "
            f"c=1 p50 {single.p50_ms:.1f} ms ({single.tool})",
            level,
        ))  # fmt: skip
    else:
        targets.append(Target("p99 at 70% of saturation <= 3x p50 at c=1", nan, 3.0, None, "not measured"))
    return targets


def _fmt(value: float, digits: int = 1) -> str:
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


def render_report(results: dict[str, Any]) -> str:
    """The markdown report of a results dict (see module docstring)."""
    meta = results.get("meta", {})
    levels: list[LevelResult] = results["levels"]
    perf: list[LevelResult] = results.get("perf", [])
    targets = evaluate(results)
    out = [f"# trimodal benchmark {meta.get('timestamp', '')}", ""]
    out.append(
        f"Machine: {meta.get('machine', '?')}. Mode: {'quick' if meta.get('quick') else 'full'}; "
        f"{meta.get('duration_s')} s per level after {meta.get('warmup_s')} s warm-up; workload: "
        f"{meta.get('workload_size')} test-split requests, mix `{meta.get('mix')}`. Throughput = validated "
        "samples/s. All baselines ran in this one run on the same requests; the closed-loop client "
        "(Python asyncio) shares the CPUs with the server."
    )
    out += [
        "",
        "## Targets",
        "",
        "| target | measured | threshold | result | detail |",
        "| --- | ---: | ---: | --- | --- |",
    ]
    for t in targets:
        verdict = "not measured" if t.passed is None else ("PASS" if t.passed else "**MISS**")
        out.append(f"| {t.name} | {_fmt(t.measured, 2)} | {t.threshold:g} | {verdict} | {t.detail} |")
    missed = [t for t in targets if t.passed is False]
    for t in missed:
        out += ["", f"### Missed: {t.name}", ""]
        if t.level is not None and t.level.breakdown:
            stage = bottleneck(t.level.breakdown, exclude=(ENSEMBLE,))
            row = t.level.breakdown.get(stage or "", {})
            out.append(
                f"Bottleneck stage ({t.level.baseline}, {t.level.mode} "
                f"{t.level.rate if t.level.mode == 'rate' else t.level.concurrency}): **{stage}** "
                f"(utilization {100 * row.get('utilization', 0):.0f}%, avg batch {_fmt(row.get('avg_batch', 0))}, "
                f"queue {_fmt(row.get('queue_ms', 0), 2)} ms/request, "
                f"compute {_fmt(row.get('compute_ms_per_exec', 0), 2)} ms/execution). "
                "Per-model breakdown (statistics API):"
            )
            out += ["", *_breakdown_table(t.level)]
        tried = [x for x in results.get("tuning", [])]
        if tried:
            out += ["", "Tried (same run, same workload):", ""]
            out += [f"- {x['name']}: {x['settings']} -> {x['summary']}" for x in tried]
        notes = results.get("notes", [])
        if notes:
            out += [""] + [f"- {n}" for n in notes]
    out += ["", "## Throughput and latency per concurrency (closed loop, same client for every baseline)", ""]
    out += ["| baseline | concurrency | throughput/s | p50 ms | p95 ms | p99 ms | errors |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name in ORDER:
        for x in sorted(by_baseline(levels, name), key=lambda x: (x.tool, x.concurrency)):
            label = LABELS[name] + (f" ({x.tool})" if x.tool.startswith("ORT") else "")
            out.append(f"| {label} | {x.concurrency} | {_fmt(x.throughput)} | {_fmt(x.p50_ms)} | "
                       f"{_fmt(x.p95_ms)} | {_fmt(x.p99_ms)} | {x.errors} |")  # fmt: skip
    out += ["", "## Ratios at each concurrency (throughput of Triton as configured / other)", ""]
    out += ["| concurrency | vs in-process | vs naive | vs batching off |", "| ---: | ---: | ---: | ---: |"]
    for x in by_baseline(levels, "triton"):
        ratios = []
        for other in ("inprocess", "naive", "triton_nobatch"):
            ref = at_concurrency(by_baseline(levels, other), x.concurrency)
            ratios.append(f"{x.throughput / ref.throughput:.2f}x" if ref and _valid(x) else "-")
        out.append(f"| {x.concurrency} | " + " | ".join(ratios) + " |")
    if perf:
        out += ["", "## perf_analyzer (Triton as configured): concurrency and Poisson request-rate sweeps", ""]
        out += ["| mode | level | throughput/s | p50 ms | p95 ms | p99 ms | bottleneck (utilization) |",
                "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
        for x in sorted(perf, key=lambda x: (x.baseline, x.mode, x.rate or 0, x.concurrency)):
            stage = bottleneck(x.breakdown, exclude=(ENSEMBLE,))
            util = f"{stage} ({100 * x.breakdown[stage]['utilization']:.0f}%)" if stage else "-"
            level = f"{x.rate:g} req/s" if x.mode == "rate" else str(x.concurrency)
            out.append(f"| {x.mode} | {level} | {_fmt(x.throughput)} | {_fmt(x.p50_ms)} | {_fmt(x.p95_ms)} | "
                       f"{_fmt(x.p99_ms)} | {util} |")  # fmt: skip
    sat = saturation(by_baseline(levels, "triton"))
    if sat and sat.breakdown:
        out += ["", f"## Per-model breakdown, Triton as configured at c={sat.concurrency} (saturation)", ""]
        out += _breakdown_table(sat)
    if results.get("tuning"):
        out += ["", "## Config variants tried (rendered into temporary repositories, same workload)", ""]
        out += ["| variant | settings | result |", "| --- | --- | --- |"]
        out += [f"| {x['name']} | `{x['settings']}` | {x['summary']} |" for x in results["tuning"]]
    out += ["", "## Files", "", "`results.json` (everything, incl. per-model breakdowns), `levels.csv`, "
            "`perf/*.csv` (perf_analyzer `--verbose-csv`), `throughput.png`, `latency.png`."]  # fmt: skip
    return "\n".join(out) + "\n"


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


def plot(results: dict[str, Any], folder: Path) -> list[Path]:
    """Throughput vs concurrency and latency percentiles vs throughput (PNG), one line per baseline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels: list[LevelResult] = results["levels"]
    perf: list[LevelResult] = results.get("perf", [])
    written = []
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in ORDER:
        for tool in sorted({x.tool for x in by_baseline(levels, name)}):
            rows = [x for x in by_baseline(levels, name) if _valid(x) and x.tool == tool]
            label = LABELS[name] + (f" ({tool})" if tool.startswith("ORT") else "")
            if rows:
                ax.plot([x.concurrency for x in rows], [x.throughput for x in rows], marker="o", label=label)
    pa = [x for x in by_baseline(perf, "triton") if _valid(x)]
    if pa:
        ax.plot([x.concurrency for x in pa], [x.throughput for x in pa], marker="x", linestyle="--",
                label="Triton as configured (perf_analyzer)")  # fmt: skip
    ax.set_xscale("log", base=2)
    ax.set_xlabel("concurrency (requests in flight)")
    ax.set_ylabel("throughput (samples/s)")
    ax.set_title("Throughput vs concurrency")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(folder / "throughput.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for index, name in enumerate(ORDER):
        best = {}
        for x in by_baseline(levels, name):  # per concurrency, the better setting (in-process: ORT threads)
            if _valid(x) and (x.concurrency not in best or x.throughput > best[x.concurrency].throughput):
                best[x.concurrency] = x
        rows = sorted(best.values(), key=lambda x: x.throughput)
        if rows:
            color = f"C{index}"
            ax.plot([x.throughput for x in rows], [x.p50_ms for x in rows], marker="o", color=color,
                    label=f"{LABELS[name]} p50")  # fmt: skip
            ax.plot([x.throughput for x in rows], [x.p99_ms for x in rows], marker="^", linestyle=":", color=color,
                    label=f"{LABELS[name]} p99")  # fmt: skip
    rate = sorted((x for x in by_baseline(perf, "triton", mode="rate") if _valid(x)), key=lambda x: x.throughput)
    if rate:
        ax.plot([x.throughput for x in rate], [x.p99_ms for x in rate], marker="s", linestyle="--", color="k",
                label="Triton p99, Poisson arrivals (perf_analyzer)")  # fmt: skip
    ax.set_yscale("log")
    ax.set_xlabel("throughput (samples/s)")
    ax.set_ylabel("latency (ms)")
    ax.set_title("Latency percentiles vs throughput")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(folder / "latency.png")
    fig.savefig(written[-1], dpi=110)
    plt.close(fig)
    return written


def write_report(folder: Path, results: dict[str, Any] | None = None, plots: bool = True) -> Path:
    """Write ``report.md`` (and the plots) of a results folder.

    Args:
        folder: the results folder.
        results: the results (read from ``results.json`` when None).
        plots: also write the PNG plots.

    Returns:
        The report path.
    """
    folder = Path(folder)
    results = results if results is not None else load_results(folder)
    write_levels_csv([*results["levels"], *results.get("perf", [])], folder / LEVELS_CSV)
    if plots:
        try:
            plot(results, folder)
        except ImportError as exc:
            LOGGER.warning("no plots (%s): pip install matplotlib", exc)
    path = folder / REPORT_FILE
    path.write_text(render_report(results), encoding="utf-8")
    return path
