"""CPU per request split into a per-sample part and a per-stage-execution part (``benchmarks/cpu/batch_cost.py``).

Each closed-loop level gives, per process, the CPU milliseconds per answered request and, per composing model,
its executions per request (1 / average batch). Over the levels a least-squares line

    cpu_ms_per_request = per_request_ms + per_execution_ms x executions_per_request

separates what a request costs wherever it is batched from what every execution of a stage costs however many
requests share it. A stub is fitted on its own model's executions, tritonserver on the executions summed over
every composing model, the client on a constant (it does not batch).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from trimodal import contract
from trimodal.bench.cpuload import process_cpu_s
from trimodal.bench.stats import breakdown, snapshot

if TYPE_CHECKING:
    from trimodal.bench.traffic import LoadGenerator

SERVER = "tritonserver"
CLIENT = "client"


@dataclass(frozen=True)
class CostFit:
    """One process's fitted costs (``r2`` NaN for the client's constant)."""

    per_request_ms: float
    per_execution_ms: float
    r2: float


def measure_level(
    url: str, names: Mapping[int, str], load: LoadGenerator, concurrency: int, seconds: float, settle_s: float = 1.0
) -> dict[str, Any]:
    """One closed-loop level: CPU ms per answered request per process, and executions per request per model.

    Args:
        url: the server's gRPC address (statistics API).
        names: pid -> process name (:func:`trimodal.triton.processes.named_members`); the client is this process.
        load: the load generator.
        concurrency: requests in flight.
        seconds: measured seconds.
        settle_s: unmeasured seconds at this concurrency first, so the batch sizes settle (0: none).

    Returns:
        ``concurrency``, ``requests_per_s``, ``errors``, ``p50_ms``, ``cpu_ms_per_request`` ({process: ms}, the
        client under :data:`CLIENT`) and ``executions_per_request`` ({composing model: executions / requests}).
    """
    if settle_s > 0:
        asyncio.run(load.closed_loop(concurrency, settle_s))
    stats0, cpu0 = snapshot(url), {pid: process_cpu_s(pid) for pid in names}
    client0, wall0 = time.process_time(), time.monotonic()
    result = asyncio.run(load.closed_loop(concurrency, seconds))
    wall, client = time.monotonic() - wall0, time.process_time() - client0
    spent = {pid: process_cpu_s(pid) - cpu0[pid] for pid in names}
    models = breakdown(stats0, snapshot(url))
    ok = result.statuses()["OK"]
    cpu = {CLIENT: 1000 * client / ok}
    for pid, name in names.items():
        cpu[name] = cpu.get(name, 0.0) + 1000 * spent[pid] / ok
    executions = {m: row["executions"] / row["requests"] for m, row in models.items() if m != contract.ENSEMBLE}
    return {"concurrency": concurrency, "requests_per_s": ok / wall, "errors": len(result.outcomes) - ok,
            "p50_ms": result.percentile_ms(50), "cpu_ms_per_request": cpu,
            "executions_per_request": executions}  # fmt: skip


def executions_per_request(level: Mapping[str, Any], process: str) -> float:
    """What ``process``'s per-execution cost multiplies at one level (1 for the client: one call per request)."""
    per_model = level["executions_per_request"]
    if process == CLIENT:
        return 1.0
    if process == SERVER:
        return float(sum(per_model.values()))
    return float(per_model.get(process, 0.0))


def fit(levels: Sequence[Mapping[str, Any]], process: str) -> CostFit:
    """Least-squares per-request and per-execution CPU of one process over the levels.

    Args:
        levels: ``{"cpu_ms_per_request": {process: ms}, "executions_per_request": {model: n}}`` per level.
        process: ``tritonserver``, ``client`` or a composing model's name.

    Returns:
        The fit (the client: its mean CPU per request, no per-execution part).
    """
    cpu = np.array([level["cpu_ms_per_request"].get(process, 0.0) for level in levels], dtype=np.float64)
    if process == CLIENT:
        return CostFit(float(cpu.mean()), 0.0, float("nan"))
    x = np.array([executions_per_request(level, process) for level in levels], dtype=np.float64)
    design = np.stack([np.ones_like(x), x], axis=1)
    coefficients, *_ = np.linalg.lstsq(design, cpu, rcond=None)
    residual = cpu - design @ coefficients
    spread = float(((cpu - cpu.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / spread if spread > 0 else float("nan")
    return CostFit(float(coefficients[0]), float(coefficients[1]), r2)


def fits(levels: Sequence[Mapping[str, Any]]) -> dict[str, CostFit]:
    """:func:`fit` for every process that appears in the levels."""
    processes = sorted({name for level in levels for name in level["cpu_ms_per_request"]})
    return {name: fit(levels, name) for name in processes}


def median_level(levels: Sequence[Mapping[str, Any]], concurrency: int) -> Mapping[str, Any]:
    """The repetition of one concurrency with the median throughput."""
    same = sorted((x for x in levels if x["concurrency"] == concurrency), key=lambda x: x["requests_per_s"])
    if not same:
        raise ValueError(f"no level at concurrency {concurrency}")
    return same[len(same) // 2]


def ends(levels: Sequence[Mapping[str, Any]]) -> tuple[Mapping[str, Any], Mapping[str, Any]]:
    """The median repetitions of the lowest and of the highest concurrency measured."""
    concurrencies = sorted({x["concurrency"] for x in levels})
    return median_level(levels, concurrencies[0]), median_level(levels, concurrencies[-1])


def stage_execution_ms(costs: Mapping[str, CostFit]) -> float:
    """CPU of one execution of every stage: the stubs' per-execution parts added up (tritonserver not included)."""
    return sum(fit.per_execution_ms for name, fit in costs.items() if name not in (SERVER, CLIENT))


def table(levels: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown: the fit per process and its CPU per request at the lowest and highest concurrency."""
    costs = fits(levels)
    low, high = ends(levels)
    c_low, c_high = low["concurrency"], high["concurrency"]
    lines = [f"| process | per request ms | per execution ms | R^2 | CPU ms/request at c={c_low} | at c={c_high} | "
             f"executions/request at c={c_high} |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]  # fmt: skip
    for name in sorted(costs, key=lambda name: -low["cpu_ms_per_request"].get(name, 0.0)):
        cost = costs[name]
        r2 = "-" if np.isnan(cost.r2) else f"{cost.r2:.2f}"
        at_low, at_high = (x["cpu_ms_per_request"].get(name, 0.0) for x in (low, high))
        lines.append(f"| {name} | {cost.per_request_ms:.2f} | {cost.per_execution_ms:.2f} | {r2} | {at_low:.2f} | "
                     f"{at_high:.2f} | {executions_per_request(high, name):.2f} |")  # fmt: skip
    total_low, total_high = (sum(x["cpu_ms_per_request"].values()) for x in (low, high))
    lines.append(f"| **total** | | | | {total_low:.2f} | {total_high:.2f} | |")
    lines += ["", f"Requests/s: {low['requests_per_s']:.1f} at c={c_low}, {high['requests_per_s']:.1f} at c={c_high}. "
              f"One execution of every stage costs {stage_execution_ms(costs):.2f} ms of CPU in the stubs; "
              f"tritonserver adds {costs[SERVER].per_execution_ms:.2f} ms per stage execution."]  # fmt: skip
    return lines
