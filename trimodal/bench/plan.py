"""Capacity planner: replicas and per-model instance counts for a target load under a p99 target.

From a results folder of ``trimodal bench``:

1. per-replica capacity ``X`` = the highest measured throughput of Triton as configured among the levels whose
   p99 <= the target (closed-loop levels, perf_analyzer concurrency levels and Poisson-rate levels);
2. ``replicas = ceil(R / (X * headroom))`` (headroom keeps spare capacity for spikes and for losing one replica);
3. per model ``m`` at that level: busy instances ``b_m = utilization_m * instances_m``; at the planned per-replica
   load ``r = R / replicas`` they become ``b_m * r / X``; ``instances_m = max(1, ceil(b_m * r / X / u_target))``.

The numbers hold for the hardware the results were measured on; measure on the target machine to plan for it.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

from trimodal.bench.loadgen import LevelResult
from trimodal.bench.results import RESULTS_FILE, BenchResults
from trimodal.contract import ENSEMBLE
from trimodal.errors import BenchError

LOGGER = logging.getLogger(__name__)

DEFAULT_HEADROOM = 0.8
DEFAULT_TARGET_UTILIZATION = 0.7


@dataclass
class Plan:
    """The planner's answer and the arithmetic behind it."""

    replicas: int
    capacity_rps: float
    level: LevelResult
    instances: dict[str, int]
    lines: list[str] = field(default_factory=list)


def latest_results(root: Path) -> Path:
    """The newest results folder (by name: timestamps sort) under ``root`` holding a results.json.

    Raises:
        BenchError: if there is none.
    """
    folders = sorted(p.parent for p in Path(root).glob(f"*/{RESULTS_FILE}"))
    if not folders:
        raise BenchError(f"no benchmark results under {root}: run `trimodal bench` first")
    return folders[-1]


def _describe(level: LevelResult) -> str:
    where = f"Poisson {level.rate:g} req/s" if level.mode == "rate" else f"concurrency {level.concurrency}"
    return f"{where} ({level.tool})"


def _check_arguments(rps: float, p99_ms: float, headroom: float, target_utilization: float) -> None:
    if rps <= 0 or p99_ms <= 0:
        raise BenchError(f"--rps and --p99-ms must be > 0 (got {rps:g}, {p99_ms:g})")
    if not 0 < headroom <= 1 or not 0 < target_utilization <= 1:
        raise BenchError("headroom and target utilization must lie in (0, 1]")


def capacity_level(results: BenchResults, p99_ms: float) -> LevelResult:
    """The level of Triton as configured with the highest throughput whose p99 meets the target.

    Raises:
        BenchError: if Triton was not measured, or no level meets the target.
    """
    candidates = [
        x for x in [*results.levels, *results.perf]
        if x.baseline == "triton" and x.throughput > 0 and not math.isnan(x.p99_ms)
    ]  # fmt: skip
    if not candidates:
        raise BenchError("the results hold no level of Triton as configured")
    meeting = [x for x in candidates if x.p99_ms <= p99_ms]
    if not meeting:
        best = min(candidates, key=lambda x: x.p99_ms)
        raise BenchError(
            f"no measured level meets p99 <= {p99_ms:g} ms (the lowest measured p99 is {best.p99_ms:.1f} ms at "
            f"{_describe(best)}): more replicas cannot lower latency below one replica's; tune the pipeline or use "
            "faster hardware"
        )
    return max(meeting, key=lambda x: x.throughput)


def _instances(
    level: LevelResult, configured: dict[str, int], per_replica: float, target_utilization: float
) -> tuple[dict[str, int], list[str]]:
    """Instance counts per model at the planned per-replica load, and the arithmetic."""
    if not level.breakdown:
        return {}, ["no per-model breakdown at that level: keep the configured instance counts"]
    capacity = level.throughput
    instances: dict[str, int] = {}
    lines = [f"instances per model = max(1, ceil(utilization * instances_now * r / X / {target_utilization:g})):"]
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
    level = capacity_level(results, p99_ms)
    capacity = level.throughput
    usable = capacity * headroom
    replicas = max(1, math.ceil(rps / usable))
    per_replica = rps / replicas
    meta = results.meta
    lines = [
        f"results: {meta.timestamp or '?'} on {meta.machine}",
        f"target: {rps:g} req/s with p99 <= {p99_ms:g} ms",
        f"per-replica capacity X = {capacity:.1f} req/s: the highest throughput with p99 <= {p99_ms:g} ms "
        f"({_describe(level)}, p99 {level.p99_ms:.1f} ms)",
        f"replicas = ceil(R / (X * headroom)) = ceil({rps:g} / ({capacity:.1f} * {headroom:g})) "
        f"= ceil({rps / usable:.2f}) = {replicas}",
        f"load per replica r = {rps:g} / {replicas} = {per_replica:.1f} req/s "
        f"({100 * per_replica / capacity:.0f}% of X)",
    ]
    instances, arithmetic = _instances(level, meta.instances, per_replica, target_utilization)
    lines += arithmetic
    lines.append(
        "instances share the replica's cores on the CPU target: more instances than cores do not add capacity; "
        "these numbers hold for the measured hardware (re-run `trimodal bench` on the target machine)."
    )
    return Plan(replicas, capacity, level, instances, lines)


def plan_from_folder(
    folder: Path, rps: float, p99_ms: float, headroom: float = DEFAULT_HEADROOM,
    target_utilization: float = DEFAULT_TARGET_UTILIZATION,
) -> Plan:  # fmt: skip
    """:func:`make_plan` over the results in ``folder``."""
    return make_plan(BenchResults.load(folder), rps, p99_ms, headroom, target_utilization)
