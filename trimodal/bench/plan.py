"""Capacity planner: replicas and per-model instance counts for a target load under a p99 target.

From a results folder of ``trimodal bench``:

1. per-replica capacity ``X`` = the highest **offered Poisson rate** of Triton as configured at which every
   repetition's p99, timed from each request's scheduled send, meets the target, with every repetition achieving
   >= 95% of the rate its schedule placed in the window, without errors (:func:`trimodal.bench.aggregate.capacity`).
   Closed-loop levels are never used: a closed-loop client waits for answers before sending, so its p99 hides the
   queueing (coordinated omission);
2. ``replicas = ceil(R / (X * headroom))`` (headroom keeps spare capacity for spikes and for losing one replica);
3. per model ``m`` at that level (served throughput ``T``): busy instances ``b_m = utilization_m * instances_m``;
   at the planned per-replica load ``r = R / replicas`` they become ``b_m * r / T``;
   ``instances_m = max(1, ceil(b_m * r / T / u_target))``;
4. the chart's request-rate target per pod (``autoscaling.metrics.requestRate.target``) = ``floor(0.7 * X)``:
   a replica is added before one reaches 70% of its capacity.

The numbers hold for the hardware the results were measured on; measure on the target machine to plan for it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from trimodal.bench.aggregate import Row, capacity, open_loop_rows, rows
from trimodal.bench.loadgen import LevelResult
from trimodal.bench.results import RESULTS_FILE, BenchResults
from trimodal.contract import ENSEMBLE
from trimodal.errors import BenchError

LOGGER = logging.getLogger(__name__)

DEFAULT_HEADROOM = 0.8
DEFAULT_TARGET_UTILIZATION = 0.7
HPA_FRACTION = 0.7  # the chart's per-pod request-rate target, as a fraction of the planned capacity
CHART_P99_MS = 250.0  # the p99 target the chart's request-rate target is planned for


@dataclass
class Plan:
    """The planner's answer and the arithmetic behind it."""

    replicas: int
    capacity_rps: float
    level: LevelResult
    instances: dict[str, int]
    lines: list[str] = field(default_factory=list)
    hpa_target: int = 0  # autoscaling.metrics.requestRate.target per pod


def latest_results(root: Path) -> Path:
    """The newest results folder (by name: timestamps sort) under ``root`` holding a results.json.

    Raises:
        BenchError: if there is none.
    """
    folders = sorted(p.parent for p in Path(root).glob(f"*/{RESULTS_FILE}"))
    if not folders:
        raise BenchError(f"no benchmark results under {root}: run `trimodal bench` first")
    return folders[-1]


def _check_arguments(rps: float, p99_ms: float, headroom: float, target_utilization: float) -> None:
    if rps <= 0 or p99_ms <= 0:
        raise BenchError(f"--rps and --p99-ms must be > 0 (got {rps:g}, {p99_ms:g})")
    if not 0 < headroom <= 1 or not 0 < target_utilization <= 1:
        raise BenchError("headroom and target utilization must lie in (0, 1]")


def capacity_row(results: BenchResults, p99_ms: float) -> tuple[Row, list[str]]:
    """The open-loop row of Triton as configured that sets the capacity, and the rates walked.

    Raises:
        BenchError: if there is no open-loop level timed from scheduled send, or the lowest rate misses.
    """
    all_rows = rows(results.levels)
    if not open_loop_rows(all_rows):
        raise BenchError(
            "the results hold no open-loop (Poisson) level of Triton as configured timed from scheduled send: "
            "re-run `trimodal bench` (closed-loop levels hide queueing and are not used for capacity)"
        )
    chosen, walked = capacity(all_rows, p99_ms)
    if chosen is None:
        raise BenchError(
            f"no open-loop level meets p99 <= {p99_ms:g} ms:\n" + "\n".join(walked) + "\nmore replicas cannot "
            "lower latency below one replica's; tune the pipeline, use faster hardware or measure lower rates"
        )
    return chosen, walked


def _median_level(row: Row) -> LevelResult:
    """The repetition with the median p99 (its breakdown explains the row)."""
    ordered = sorted(row.levels, key=lambda x: x.p99_ms)
    return ordered[(len(ordered) - 1) // 2]


def _instances(
    level: LevelResult, configured: dict[str, int], per_replica: float, target_utilization: float
) -> tuple[dict[str, int], list[str]]:
    """Instance counts per model at the planned per-replica load, and the arithmetic."""
    if not level.breakdown:
        return {}, ["no per-model breakdown at that level: keep the configured instance counts"]
    capacity = level.throughput
    instances: dict[str, int] = {}
    lines = [f"instances per model = max(1, ceil(utilization * instances_now * r / T / {target_utilization:g})), "
             f"T = {capacity:.1f} req/s served at that level:"]  # fmt: skip
    for model, row in sorted(level.breakdown.items()):
        if model == ENSEMBLE:
            continue
        now = int(configured.get(model, 1))
        busy = row.get("utilization", 0.0) * now * per_replica / capacity
        need = max(1, math.ceil(busy / target_utilization - 1e-9))
        instances[model] = need
        lines.append(
            f"  {model:18s} {row.get('utilization', 0.0):.2f} * {now} * {per_replica:.1f} / {capacity:.1f} "
            f"/ {target_utilization:g} = {busy / target_utilization:.2f} -> {need} (configured {now})"
        )
    return instances, lines


def make_plan(
    results: BenchResults, rps: float, p99_ms: float, headroom: float = DEFAULT_HEADROOM,
    target_utilization: float = DEFAULT_TARGET_UTILIZATION,
) -> Plan:  # fmt: skip
    """Plan replicas and instance counts.

    Args:
        results: a run's results (:meth:`BenchResults.load`).
        rps: target load, requests per second.
        p99_ms: p99 latency target in milliseconds.
        headroom: fraction of the measured capacity to plan with (0 < headroom <= 1).
        target_utilization: busy fraction per model instance to plan for.

    Returns:
        The plan.

    Raises:
        BenchError: for invalid arguments or a p99 target no measured level meets.
    """
    _check_arguments(rps, p99_ms, headroom, target_utilization)
    row, walked = capacity_row(results, p99_ms)
    level = _median_level(row)
    capacity = float(row.rate or 0.0)
    usable = capacity * headroom
    replicas = max(1, math.ceil(rps / usable))
    per_replica = rps / replicas
    meta = results.meta
    lines = [
        f"results: {meta.timestamp or '?'} on {meta.machine}",
        f"target: {rps:g} req/s with p99 <= {p99_ms:g} ms",
        f"open-loop (Poisson) levels of Triton as configured, {len(row.levels)} repetition(s) each, p99 from "
        "scheduled send (median [min-max]); a rate counts if every repetition achieved >= 95% of the rate its Poisson "
        "schedule placed in the window, error-free, and every repetition's p99 meets the target:",
        *walked,
        f"per-replica capacity X = {capacity:g} req/s: the highest offered rate meeting p99 <= {p99_ms:g} ms "
        f"(p99 {row.p99.text()} ms, the worst window's {row.p99.high:.1f})",
        f"replicas = ceil(R / (X * headroom)) = ceil({rps:g} / ({capacity:.1f} * {headroom:g})) "
        f"= ceil({rps / usable:.2f}) = {replicas}",
        f"load per replica r = {rps:g} / {replicas} = {per_replica:.1f} req/s "
        f"({100 * per_replica / capacity:.0f}% of X)",
    ]
    instances, arithmetic = _instances(level, meta.instances, per_replica, target_utilization)
    lines += arithmetic
    hpa = math.floor(HPA_FRACTION * capacity)
    lines.append(
        f"chart autoscaling.metrics.requestRate.target = floor({HPA_FRACTION:g} * X) = floor({HPA_FRACTION:g} * "
        f"{capacity:g}) = {hpa} req/s per pod"
    )
    lines.append(
        "instances share the replica's cores on the CPU target: more instances than cores do not add capacity; "
        "these numbers hold for the measured hardware (re-run `trimodal bench` on the target machine)."
    )
    return Plan(replicas, capacity, level, instances, lines, hpa)


def plan_from_folder(
    folder: Path, rps: float, p99_ms: float, headroom: float = DEFAULT_HEADROOM,
    target_utilization: float = DEFAULT_TARGET_UTILIZATION,
) -> Plan:  # fmt: skip
    """:func:`make_plan` over the results in ``folder``."""
    return make_plan(BenchResults.load(folder), rps, p99_ms, headroom, target_utilization)
