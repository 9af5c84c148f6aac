"""Results of a run -> ``report.md`` (targets, capacity, tables with median [min-max]), ``levels.csv`` and plots.

The results are :class:`~trimodal.bench.results.BenchResults` (see there for ``results.json``); repetitions of
a level are combined by :mod:`trimodal.bench.aggregate`. matplotlib is imported only when plotting
(:mod:`trimodal.bench.plots`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from trimodal import contract
from trimodal.bench import cpuload
from trimodal.bench.aggregate import Row, at_concurrency, best, capacity, open_loop_rows, rows, select, spread
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
TEXT_ENCODER = "text_encoder"
NAN = float("nan")
CAPACITY_P99_MS: tuple[float, ...] = (100.0, 250.0, 500.0)  # capacity shown for these p99 targets
LOAD_FRACTION = 0.7  # "70% of saturation"
EQUAL_ACCURACY = 0.01  # accuracies within 1 percentage point on the same requests count as equal


@dataclass
class Target:
    """One target of an issue: the measured value, the threshold and whether it passed."""

    name: str
    measured: float
    threshold: float
    passed: bool | None  # None: not measured
    detail: str
    level: LevelResult | None = None  # the Triton level whose breakdown explains a miss


# ---------------------------------------------------------------------------------------------------------
# Level selection (kept for callers of single levels)
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


def representative(row: Row) -> LevelResult:
    """The repetition with the median throughput (its breakdown stands for the row)."""
    ordered = sorted(row.levels, key=lambda x: x.throughput)
    return ordered[(len(ordered) - 1) // 2]


def compute_per_sample_ms(row: Row, model: str) -> float:
    """Median over repetitions of ``model``'s compute per sample (compute per execution / average batch), ms."""
    values = []
    for level in row.levels:
        stats = level.breakdown.get(model, {})
        if stats.get("avg_batch"):
            values.append(stats["compute_ms_per_exec"] / stats["avg_batch"])
    return spread(values).median


def per_sample_costs(on: Row, off: Row) -> str:
    """Compute per sample of the bottleneck model with and without batching (why batching helps or not)."""
    stage = bottleneck(representative(on).breakdown, exclude=(ENSEMBLE,))
    if not stage:
        return ""
    batched, single = compute_per_sample_ms(on, stage), compute_per_sample_ms(off, stage)
    if math.isnan(batched) or math.isnan(single):
        return ""
    return f"; bottleneck {stage}: {batched:.1f} ms compute per sample batched vs {single:.1f} ms at batch 1"


def _ratio(a: float, b: float) -> float:
    return a / b if b and not math.isnan(a) and not math.isnan(b) else NAN


def naive_best(all_rows: Sequence[Row]) -> Row | None:
    """The naive variant's row with the highest median throughput (one worker or ``<cores>`` workers)."""
    return best([*select(all_rows, "naive"), *select(all_rows, "naive_workers")])


# ---------------------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------------------

SATURATION_TARGET = "Triton at saturation >= 0.8x the in-process bound (best whole-machine setting)"
NAIVE_TARGET = "Triton >= 3x naive FastAPI/PyTorch throughput at c=16 (better naive variant), lower p99"
BATCHING_TARGET = "Dynamic batching on >= 2x off at c=16"
LATENCY_TARGET = "Open-loop p99 at 70% of saturation <= 3x p50 at c=1"
COMPRESSION_THROUGHPUT = "Saturation throughput >= 2x the fp32 + padded-text variant, at equal accuracy"
COMPRESSION_COMPUTE = "text_encoder compute per sample >= 3x lower than fp32 + padded text, at equal accuracy"
COMPRESSION_LATENCY = "Open-loop p99 at 70% of saturation <= 5x p50 at c=1 (from scheduled send)"
SHIPPED_TARGET = "Result measured on the shipped configuration (repository = fresh render of pipeline.yaml)"


def _saturation_target(all_rows: Sequence[Row]) -> Target:
    triton, bound = best(select(all_rows, "triton")), best(select(all_rows, "inprocess"))
    if not (triton and bound):
        return Target(SATURATION_TARGET, NAN, 0.8, None, "not measured")
    ratio = _ratio(triton.throughput.median, bound.throughput.median)
    return Target(
        SATURATION_TARGET, ratio, 0.8, ratio >= 0.8,
        f"Triton {triton.throughput.text()}/s ({triton.label()}) vs in-process {bound.throughput.text()}/s "
        f"({bound.tool}, {bound.label()})",
        representative(triton),
    )  # fmt: skip


def _naive_target(all_rows: Sequence[Row]) -> Target:
    c16 = at_concurrency(select(all_rows, "triton"), TARGET_CONCURRENCY)
    naive16 = at_concurrency([*select(all_rows, "naive"), *select(all_rows, "naive_workers")], TARGET_CONCURRENCY)
    if not (c16 and naive16):
        return Target(NAIVE_TARGET, NAN, 3.0, None, "not measured")
    ratio = _ratio(c16.throughput.median, naive16.throughput.median)
    lower = c16.p99.median < naive16.p99.median
    top, naive_top = best(select(all_rows, "triton")), naive_best(all_rows)
    at_best = (
        f"; each at its best: Triton {top.throughput.median:.1f}/s ({top.label()}) vs {naive_top.baseline} "
        f"{naive_top.throughput.median:.1f}/s ({naive_top.label()}) = "
        f"{_ratio(top.throughput.median, naive_top.throughput.median):.2f}x"
        if top and naive_top
        else ""
    )
    return Target(
        NAIVE_TARGET, ratio, 3.0, ratio >= 3.0 and lower,
        f"{c16.throughput.text()}/s vs {naive16.baseline} {naive16.throughput.text()}/s; p99 {c16.p99.median:.0f} ms "
        f"vs {naive16.p99.median:.0f} ms ({'lower' if lower else 'NOT lower'}){at_best}",
        representative(c16),
    )  # fmt: skip


def _batching_target(all_rows: Sequence[Row]) -> Target:
    c16 = at_concurrency(select(all_rows, "triton"), TARGET_CONCURRENCY)
    off16 = at_concurrency(select(all_rows, "triton_nobatch"), TARGET_CONCURRENCY)
    if not (c16 and off16):
        return Target(BATCHING_TARGET, NAN, 2.0, None, "not measured")
    ratio = _ratio(c16.throughput.median, off16.throughput.median)
    return Target(
        BATCHING_TARGET, ratio, 2.0, ratio >= 2.0,
        f"{c16.throughput.text()}/s vs {off16.throughput.text()}/s{per_sample_costs(c16, off16)}",
        representative(c16),
    )  # fmt: skip


def bracket(rates: Sequence[Row], goal: float) -> tuple[Row, Row] | None:
    """The measured open-loop rows just below and just above ``goal`` req/s (None unless both exist)."""
    below = [row for row in rates if (row.rate or 0.0) <= goal]
    above = [row for row in rates if (row.rate or 0.0) >= goal]
    if not (below and above):
        return None
    return max(below, key=lambda row: row.rate or 0.0), min(above, key=lambda row: row.rate or 0.0)


def p99_at(low: Row, high: Row, goal: float) -> float:
    """Median p99 at ``goal`` req/s, linear in the offered rate between two measured rows."""
    if (high.rate or 0.0) == (low.rate or 0.0):
        return low.p99.median
    share = (goal - (low.rate or 0.0)) / ((high.rate or 0.0) - (low.rate or 0.0))
    return low.p99.median + share * (high.p99.median - low.p99.median)


def _latency_target(all_rows: Sequence[Row], name: str, threshold: float) -> Target:
    """p99 at 70% of the saturation median (interpolated between the two measured rates around it) / c=1 p50.

    The Poisson rates are fractions of a short saturation probe made before the levels, while saturation is the
    median of the closed-loop repetitions, so no level sits at exactly 70%. With a measured rate on each side the
    p99 is interpolated linearly in the rate and both levels must have kept up; with only one side (a quick run
    at one rate) the nearest level stands in, and it counts only from 95% of the goal up, since a lower load
    understates the p99.
    """
    rates, top = open_loop_rows(all_rows), best(select(all_rows, "triton"))
    single = at_concurrency(select(all_rows, "triton"), 1)
    if not (rates and top and single):
        return Target(name, NAN, threshold, None, "not measured (no open-loop level timed from scheduled send)")
    saturation = top.throughput.median
    goal = LOAD_FRACTION * saturation
    sides = bracket(rates, goal)
    c1 = f"c=1 p50 {single.p50.text()} ms"
    if sides is None:
        row = min(rates, key=lambda x: abs((x.rate or 0) - goal))
        ratio = _ratio(row.p99.median, single.p50.median)
        achieved = row.meets_rate()
        loaded = (row.rate or 0.0) >= 0.95 * goal
        return Target(
            name, ratio, threshold, ratio <= threshold and achieved and loaded,
            f"nearest level Poisson {row.rate:g} req/s ({100 * (row.rate or 0) / saturation:.0f}% of saturation "
            f"{saturation:.1f}/s{'' if loaded else ': below 95% of 70%, so it cannot pass'}): p99 {row.p99.text()} "
            f"ms, achieved {row.of(lambda x: x.achieved_rps).text()} req/s"
            f"{'' if achieved else ' (< 95% of scheduled or errors)'}; {c1}",
            representative(row),
        )  # fmt: skip
    low, high = sides
    p99 = p99_at(low, high, goal)
    ratio = _ratio(p99, single.p50.median)
    achieved = low.meets_rate() and high.meets_rate()
    levels = " and ".join(
        f"{row.rate:g} req/s ({100 * (row.rate or 0) / saturation:.0f}%: p99 {row.p99.text()} ms, achieved "
        f"{row.of(lambda x: x.achieved_rps).text()})"
        for row in ((low,) if low is high else (low, high))
    )
    return Target(
        name, ratio, threshold, ratio <= threshold and achieved,
        f"p99 {p99:.1f} ms (the median of the windows' p99s) at 70% of saturation {saturation:.1f}/s = {goal:.1f} "
        f"req/s, interpolated between the Poisson levels {levels}"
        f"{'' if achieved else ' (a level < 95% of scheduled or with errors)'}; {c1}",
        representative(high),
    )  # fmt: skip


def accuracy_of(meta: BenchMeta, baseline: str) -> float:
    """Accuracy of a Triton variant on the run's accuracy requests (NaN when not measured)."""
    entry = meta.accuracy.get(baseline, {})
    return entry["correct"] / entry["total"] if entry.get("total") else NAN


def _equal_accuracy(meta: BenchMeta) -> tuple[bool, str]:
    shipped, padded = accuracy_of(meta, "triton"), accuracy_of(meta, "triton_fp32pad")
    if math.isnan(shipped) or math.isnan(padded):
        return False, "accuracy not measured"
    same = meta.accuracy["triton_fp32pad"].get("same_label_as_triton", 0)
    total = meta.accuracy["triton_fp32pad"]["total"]
    equal = abs(shipped - padded) <= EQUAL_ACCURACY
    return equal, (
        f"accuracy {100 * shipped:.1f}% vs {100 * padded:.1f}% on the same {total} requests ({same}/{total} same "
        f"label){'' if equal else ': NOT equal'}"
    )


def _at_equal_accuracy(target: Target, meta: BenchMeta) -> Target:
    """``target`` passed when its ratio reaches the threshold and the two variants' accuracies are equal."""
    equal, accuracy = _equal_accuracy(meta)
    target.passed = target.measured >= target.threshold and equal
    target.detail = f"{target.detail}; {accuracy}"
    return target


def _compression_throughput(results: BenchResults, all_rows: Sequence[Row]) -> Target:
    shipped, padded = best(select(all_rows, "triton")), best(select(all_rows, "triton_fp32pad"))
    if not (shipped and padded):
        return Target(COMPRESSION_THROUGHPUT, NAN, 2.0, None, "not measured")
    return _at_equal_accuracy(
        Target(COMPRESSION_THROUGHPUT, _ratio(shipped.throughput.median, padded.throughput.median), 2.0, None,
               f"{shipped.throughput.text()}/s ({shipped.label()}) vs {padded.throughput.text()}/s ({padded.label()})",
               representative(shipped)),
        results.meta,
    )  # fmt: skip


def _compression_compute(results: BenchResults, all_rows: Sequence[Row]) -> Target:
    shipped, padded = select(all_rows, "triton"), select(all_rows, "triton_fp32pad")
    common = sorted({x.concurrency for x in shipped} & {x.concurrency for x in padded})
    if not common:
        return Target(COMPRESSION_COMPUTE, NAN, 3.0, None, "not measured")
    level = common[-1]  # the highest common concurrency: both form their largest batches there
    on, off = at_concurrency(shipped, level), at_concurrency(padded, level)
    if not (on and off):
        return Target(COMPRESSION_COMPUTE, NAN, 3.0, None, "not measured")
    cut, full = compute_per_sample_ms(on, TEXT_ENCODER), compute_per_sample_ms(off, TEXT_ENCODER)
    detail = (f"c={level}: {cut:.2f} vs {full:.2f} ms per sample (Triton statistics: compute per execution / "
              "average batch, median of the repetitions)")  # fmt: skip
    return _at_equal_accuracy(Target(COMPRESSION_COMPUTE, _ratio(full, cut), 3.0, None, detail, representative(on)),
                              results.meta)  # fmt: skip


def _shipped_target(meta: BenchMeta) -> Target:
    if meta.stale_configs is None:
        return Target(SHIPPED_TARGET, NAN, 0, None, "not recorded (run before the check existed)")
    stale = len(meta.stale_configs)
    clean = stale == 0 and not (meta.commit or "").endswith("+dirty") and not meta.quick
    return Target(
        SHIPPED_TARGET, float(stale), 0, clean,
        f"{stale} config(s) differ from a fresh render ({', '.join(meta.stale_configs[:3]) or 'none'}); commit "
        f"{meta.commit or '?'}; {'quick' if meta.quick else 'full'} run",
    )  # fmt: skip


def evaluate(results: BenchResults) -> list[Target]:
    """Check the targets of the benchmarks issue and of the compression issue.

    Args:
        results: the run's results.

    Returns:
        One :class:`Target` per target.
    """
    all_rows = rows(results.levels)
    return [
        _saturation_target(all_rows),
        _naive_target(all_rows),
        _batching_target(all_rows),
        _latency_target(all_rows, LATENCY_TARGET, 3.0),
        _compression_throughput(results, all_rows),
        _compression_compute(results, all_rows),
        _latency_target(all_rows, COMPRESSION_LATENCY, 5.0),
        _shipped_target(results.meta),
    ]


# ---------------------------------------------------------------------------------------------------------
# Machine load
# ---------------------------------------------------------------------------------------------------------


def meta_cores(meta: BenchMeta) -> int:
    """Cores of the machine the run measured (older runs: from the machine line, ``2 CPU cores (...)``)."""
    if meta.cores:
        return meta.cores
    first = meta.machine.split(" ", 1)[0]
    return int(first) if first.isdigit() else 1


def busy_levels(results: BenchResults) -> list[LevelResult]:
    """Levels during which processes outside the run used more than half the cores."""
    cores = meta_cores(results.meta)
    return [x for x in results.levels if cpuload.busy(x.outside_cores, cores)]


def load_warnings(results: BenchResults) -> list[str]:
    """Warnings about a busy machine (before the run, or during levels), empty when it was quiet."""
    meta, out = results.meta, []
    cores = meta_cores(meta)
    if cpuload.busy(meta.load_before, cores):
        out.append(f"the 1-minute load average was {meta.load_before:.2f} before the run started ({cores} cores)")
    busy = busy_levels(results)
    if busy:
        worst = max(busy, key=lambda x: x.outside_cores or 0.0)
        out.append(
            f"{len(busy)} of {len(results.levels)} levels ran while processes outside the run used more than "
            f"{cpuload.BUSY_FRACTION:g} x {cores} cores (worst: {worst.baseline} {worst.tool} "
            f"{'rate ' + format(worst.rate, 'g') if worst.mode == 'rate' else 'c=' + str(worst.concurrency)} "
            f"repetition {worst.repetition or 1}: {worst.outside_cores:.2f} cores)"
        )
    return out


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
    repetitions = meta.repetitions or 1
    method = (
        f"Every server was started first and stayed up; each level was measured {repetitions} times, the baselines "
        "interleaved (for each repetition, for each level, for each baseline; order rotated per repetition). "
        "Tables show the median with [min-max] over the repetitions. Closed-loop levels: c workers send, wait for "
        f"the validated answer, send again ({meta.duration_s} s after {meta.warmup_s} s warm-up). Open-loop levels: "
        f"Poisson arrivals for {meta.rate_duration_s} s, latency timed from each request's scheduled send; "
        "capacity and latency targets use these only."
        if meta.repetitions
        else f"{meta.duration_s} s per level after {meta.warmup_s} s warm-up; one measurement per level, "
        "baselines one after another (the method before repetition and interleaving)."
    )
    return [
        f"# trimodal benchmark {meta.timestamp}",
        "",
        f"Machine: {meta.machine}. Mode: {'quick' if meta.quick else 'full'}; commit {meta.commit or '?'}; "
        f"workload: {meta.workload_size} test-split requests, mix `{meta.mix}`. Throughput = validated samples/s; "
        f"the client (Python asyncio) shares the CPUs with the servers. {method}",
    ]


def _load_section(results: BenchResults) -> list[str]:
    warnings = load_warnings(results)
    meta = results.meta
    outside = spread([x.outside_cores for x in results.levels])
    line = (
        f"Machine load: 1-minute load average {_fmt(meta.load_before, 2)} before the run, {_fmt(meta.load_after, 2)} "
        f"after; cores used by processes outside the run during the levels: {outside.text(2)} (median [min-max])."
    )
    return ["", line] + [f"\n> **WARNING: busy machine**: {w}; compare with care." for w in warnings]


def _targets_section(targets: Sequence[Target]) -> list[str]:
    out = ["", "## Targets", "", "| target | measured | threshold | result | detail |",
           "| --- | ---: | ---: | --- | --- |"]  # fmt: skip
    for t in targets:
        verdict = "not measured" if t.passed is None else ("met" if t.passed else "**missed**")
        out.append(f"| {t.name} | {_fmt(t.measured, 2)} | {t.threshold:g} | {verdict} | {t.detail} |")
    return out


def _bottleneck_lines(level: LevelResult) -> list[str]:
    stage = bottleneck(level.breakdown, exclude=(ENSEMBLE,))
    row = level.breakdown.get(stage or "", {})
    where = level.rate if level.mode == "rate" else level.concurrency
    return [
        f"Bottleneck stage ({level.baseline}, {level.mode} {where}, repetition {level.repetition or 1}): **{stage}** "
        f"(utilization {100 * row.get('utilization', 0):.0f}%, avg batch {_fmt(row.get('avg_batch', 0))}, "
        f"queue {_fmt(row.get('queue_ms', 0), 2)} ms/request, "
        f"compute {_fmt(row.get('compute_ms_per_exec', 0), 2)} ms/execution). "
        "Per-model breakdown (statistics API):",
        "",
        *_breakdown_table(level),
    ]


def _missed_section(target: Target, shown: dict[int, str]) -> list[str]:
    """Why a target was missed: the bottleneck at its level (once per level; later targets point back)."""
    out = ["", f"### Missed: {target.name}", ""]
    level = target.level
    if level is not None and level.breakdown:
        if id(level) in shown:
            out.append(f'Same level as "{shown[id(level)]}" above.')
        else:
            shown[id(level)] = target.name
            out += _bottleneck_lines(level)
    return out


def _recorded_cpu(all_rows: Sequence[Row]) -> bool:
    """Whether the run recorded its own CPU per level (runs before it did render without those columns)."""
    return any(level.run_cores is not None for row in all_rows for level in row.levels)


def _capacity_section(all_rows: Sequence[Row]) -> list[str]:
    rates = open_loop_rows(all_rows)
    if not rates:
        return []
    cpu = _recorded_cpu(rates)
    out = ["", "## Open loop (Poisson arrivals), Triton as configured: capacity at a p99 target", "",
           "Latency from each request's scheduled send; lag = how late the client sent (its own delay, included in "
           "the latency). A rate counts for capacity only if every repetition achieved >= 95% of the rate its Poisson "
           "schedule placed in the window, without errors.",
           "", "| offered req/s | achieved req/s | errors | p50 ms | p99 ms | client lag p99 ms | "
           + ("run cores | CPU ms/answer | " if cpu else "") + "counts |",
           "| ---: | ---: | ---: | ---: | ---: | ---: | " + ("---: | ---: | " if cpu else "") + "--- |"]  # fmt: skip
    for row in rates:
        usage = (f"{row.of(lambda x: x.run_cores).text(2)} | {row.of(LevelResult.cpu_ms_per_answer).text(2)} | "
                 if cpu else "")  # fmt: skip
        counts = "yes" if row.meets_rate() else "no"
        out.append(
            f"| {row.rate:g} | {row.of(lambda x: x.achieved_rps).text()} | {row.errors} | {row.p50.text()} | "
            f"{row.p99.text()} | {row.of(lambda x: x.lag_p99_ms).text()} | {usage}{counts} |"
        )
    lines = _cpu_per_answer_lines(all_rows, rates)
    out += ["", *lines] if lines else []
    out.append("")
    for target in CAPACITY_P99_MS:
        chosen, _ = capacity(all_rows, target)
        found = f"{chosen.rate:g} req/s" if chosen else "none of the measured rates"
        out.append(f"- capacity at p99 <= {target:g} ms: **{found}** (`trimodal plan --p99-ms {target:g}` shows the "
                   "arithmetic)")  # fmt: skip
    return out


def _cpu_per_answer_lines(all_rows: Sequence[Row], rates: Sequence[Row]) -> list[str]:
    """How the CPU per answer of the Poisson levels compares with saturation's (nothing for older results).

    Run cores = CPU of the whole run (the load generator and every server, idle ones included) over the level.
    Where an answer costs more CPU at a Poisson level than at saturation, the level keeps a larger share of the
    cores busy than its share of the saturation rate: batches are smaller there, so each execution's fixed cost
    (a Python-backend round trip per stage) is shared by fewer answers.
    """
    top = best(select(all_rows, "triton"))
    at_top = top.of(LevelResult.cpu_ms_per_answer) if top else None
    if top is None or at_top is None or math.isnan(at_top.median):
        return []
    lines = [f"Run cores = CPU of the whole run (load generator and servers) during a level; CPU ms/answer = run "
             f"cores / answers per second. At saturation ({top.label()}): {top.of(lambda x: x.run_cores).text(2)} "
             f"cores, {at_top.text(2)} ms/answer."]  # fmt: skip
    for row in rates:
        here = row.of(LevelResult.cpu_ms_per_answer)
        if math.isnan(here.median):
            continue
        lines.append(
            f"- Poisson {row.rate:g} req/s: {here.median / at_top.median:.2f}x the CPU per answer of saturation, "
            f"{row.of(lambda x: x.run_cores).median:.2f} cores busy."
        )
    return lines


def _row_label(row: Row) -> str:
    return LABELS.get(row.baseline, row.baseline) + (f" ({row.tool})" if row.baseline == "inprocess" else "")


def _levels_section(all_rows: Sequence[Row]) -> list[str]:
    cpu = _recorded_cpu(all_rows)
    out = ["", "## Closed loop: throughput and latency per concurrency (median [min-max])", "",
           "| baseline | c | throughput/s | p50 ms | p99 ms | errors | " + ("CPU ms/answer | " if cpu else "")
           + "outside cores (max) |",
           "| --- | ---: | ---: | ---: | ---: | ---: | " + ("---: | " if cpu else "") + "---: |"]  # fmt: skip
    for name in ORDER:
        for row in sorted(select(all_rows, name), key=lambda x: (x.tool, x.concurrency)):
            outside = spread([x.outside_cores for x in row.levels]).high
            usage = f"{row.of(LevelResult.cpu_ms_per_answer).text(2)} | " if cpu else ""
            out.append(f"| {_row_label(row)} | {row.concurrency} | {row.throughput.text()} | {row.p50.text()} | "
                       f"{row.p99.text()} | {row.errors} | {usage}{_fmt(outside, 2)} |")  # fmt: skip
    return out


def _comparison_section(all_rows: Sequence[Row]) -> list[str]:
    triton = best(select(all_rows, "triton"))
    if triton is None:
        return []
    out = ["", "## Comparisons (medians)", ""]
    bound = best(select(all_rows, "inprocess"))
    if bound:
        out.append(f"- In-process bound: {bound.throughput.text()}/s ({bound.tool}, {bound.label()}); Triton as "
                   f"configured at its best {triton.throughput.text()}/s ({triton.label()}) = "
                   f"**{_ratio(triton.throughput.median, bound.throughput.median):.2f}** of the bound.")  # fmt: skip
    for name in ("naive", "naive_workers"):
        top = best(select(all_rows, name))
        if top:
            out.append(f"- {LABELS[name]}: best {top.throughput.text()}/s at {top.label()} (p99 {top.p99.text()} ms); "
                       f"Triton at its best / this at its best = "
                       f"**{_ratio(triton.throughput.median, top.throughput.median):.2f}x**.")  # fmt: skip
    others = [name for name in ("inprocess", "naive", "naive_workers", "triton_nobatch", "triton_fp32pad")
              if select(all_rows, name)]  # fmt: skip
    out += ["", "Throughput of Triton as configured / other, at equal concurrency:", "",
            "| c | " + " | ".join(f"vs {name}" for name in others) + " |",
            "| ---: | " + " | ".join("---:" for _ in others) + " |"]  # fmt: skip
    for row in select(all_rows, "triton"):
        cells = []
        for name in others:
            ref = at_concurrency(select(all_rows, name), row.concurrency)
            cells.append(f"{_ratio(row.throughput.median, ref.throughput.median):.2f}x" if ref and row.valid else "-")
        out.append(f"| {row.concurrency} | " + " | ".join(cells) + " |")
    return out


def _perf_section(perf: Sequence[LevelResult]) -> list[str]:
    if not perf:
        return []
    out = ["", "## perf_analyzer (Triton as configured), a cross-check of the asyncio client", "",
           "| mode | level | throughput/s | p50 ms | p95 ms | p99 ms | bottleneck (utilization) |",
           "| --- | ---: | ---: | ---: | ---: | ---: | --- |"]  # fmt: skip
    for x in sorted(perf, key=lambda x: (x.baseline, x.mode, x.rate or 0, x.concurrency)):
        stage = bottleneck(x.breakdown, exclude=(ENSEMBLE,))
        util = f"{stage} ({100 * x.breakdown[stage]['utilization']:.0f}%)" if stage else "-"
        level = f"{x.rate:g} req/s" if x.mode == "rate" else str(x.concurrency)
        out.append(f"| {x.mode} | {level} | {_fmt(x.throughput)} | {_fmt(x.p50_ms)} | {_fmt(x.p95_ms)} | "
                   f"{_fmt(x.p99_ms)} | {util} |")  # fmt: skip
    return out


def _saturation_section(all_rows: Sequence[Row]) -> list[str]:
    sat = best(select(all_rows, "triton"))
    if not (sat and representative(sat).breakdown):
        return []
    return ["", f"## Per-model breakdown, Triton as configured at {sat.label()} (saturation, median repetition)", "",
            *_breakdown_table(representative(sat))]  # fmt: skip


def _tuning_section(tuning: Sequence[TuningResult]) -> list[str]:
    if not tuning:
        return []
    return ["", "## Config variants tried (rendered into temporary repositories, same workload)", "",
            "| variant | settings | result |", "| --- | --- | --- |",
            *(f"| {x.name} | `{x.settings}` | {x.summary} |" for x in tuning)]  # fmt: skip


def _files_section() -> list[str]:
    return ["", "## Files", "", "`results.json` (everything, incl. every repetition and per-model breakdowns), "
            "`levels.csv`, `perf/*.csv` (perf_analyzer `--verbose-csv`), `throughput.png`, `latency.png`."]  # fmt: skip


def render_report(results: BenchResults) -> str:
    """The markdown report of a run's results."""
    targets = evaluate(results)
    all_rows = rows(results.levels)
    out = [*_header_section(results.meta), *_load_section(results), *_targets_section(targets)]
    shown: dict[int, str] = {}
    for target in targets:
        if target.passed is False:
            out += _missed_section(target, shown)
    if results.notes:
        out += [""] + [f"- {n}" for n in results.notes]
    out += _capacity_section(all_rows)
    out += _levels_section(all_rows)
    out += _comparison_section(all_rows)
    out += _perf_section(results.perf)
    out += _saturation_section(all_rows)
    out += _tuning_section(results.tuning)
    out += _files_section()
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------------------


def write_levels_csv(levels: Sequence[LevelResult], path: Path) -> None:
    """A flat CSV of every level (no breakdowns)."""
    import csv

    fields = ["baseline", "tool", "mode", "concurrency", "rate", "repetition", "requests", "errors", "duration_s",
              "throughput", "achieved_rps", "scheduled_rps", "p50_ms", "p95_ms", "p99_ms", "mean_ms", "lag_p99_ms",
              "lag_max_ms", "load_1m", "outside_cores", "run_cores", "correct"]  # fmt: skip
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
