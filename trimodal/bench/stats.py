"""Per-composing-model breakdown from Triton's statistics API (snapshots before and after a load level).

For each model, over the level: requests, executions, average batch size, average queue time per request,
compute time (input + infer + output) per execution, and utilization = busy time / (wall time x instances),
where busy time sums the per-execution compute times of ``batch_stats`` (the per-request ``inference_stats``
count a batch's compute once per request). The composing model with the highest utilization is the
bottleneck stage.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

LOGGER = logging.getLogger(__name__)

STAGES: tuple[str, ...] = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass
class Snapshot:
    """Cumulative statistics of every model at one instant."""

    taken_ns: int
    models: dict[str, dict[str, int]]


def _int(value: object) -> int:
    try:
        return int(value)  # type: ignore[call-overload]
    except (TypeError, ValueError):
        return 0


def parse_statistics(payload: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Flatten the JSON of ``get_inference_statistics`` into cumulative counters per model.

    Args:
        payload: ``{"model_stats": [...]}`` as returned with ``as_json=True`` (uint64 values may be strings).

    Returns:
        ``{model: {"requests", "executions", "inferences", "<stage>_ns", "busy_ns"}}``.
    """
    models: dict[str, dict[str, int]] = {}
    for entry in payload.get("model_stats", []):
        stats = entry.get("inference_stats", {})
        row = {
            "requests": _int(stats.get("success", {}).get("count")),
            "failures": _int(stats.get("fail", {}).get("count")),
            "executions": _int(entry.get("execution_count")),
            "inferences": _int(entry.get("inference_count")),
        }
        for stage in STAGES:
            row[f"{stage}_ns"] = _int(stats.get(stage, {}).get("ns"))
        busy = 0
        for batch in entry.get("batch_stats", []):
            for stage in ("compute_input", "compute_infer", "compute_output"):
                busy += _int(batch.get(stage, {}).get("ns"))
        row["busy_ns"] = busy
        name = entry.get("name", "?")
        if name in models:  # several versions: add up
            for key, value in row.items():
                models[name][key] += value
        else:
            models[name] = row
    return models


def snapshot(url: str, timeout_s: float = 10.0) -> Snapshot:
    """Take a statistics snapshot of every model over gRPC.

    Args:
        url: Triton gRPC ``host:port``.
        timeout_s: deadline.

    Returns:
        The snapshot.
    """
    import tritonclient.grpc as grpcclient

    with grpcclient.InferenceServerClient(url) as client:
        taken = time.monotonic_ns()
        payload = client.get_inference_statistics(as_json=True, client_timeout=timeout_s)
    return Snapshot(taken, parse_statistics(payload))


def breakdown(
    before: Snapshot, after: Snapshot, instances: Mapping[str, int] | None = None
) -> dict[str, dict[str, float]]:
    """Per-model averages over the interval between two snapshots.

    Args:
        before: earlier snapshot.
        after: later snapshot.
        instances: instance count per model (default 1) for the utilization.

    Returns:
        ``{model: {requests, executions, avg_batch, queue_ms, compute_input_ms, compute_infer_ms,
        compute_output_ms, compute_ms_per_exec, utilization}}`` for models that served requests;
        ``queue_ms`` and ``compute_*_ms`` are per request (as Triton reports them).
    """
    wall_ns = max(1, after.taken_ns - before.taken_ns)
    result: dict[str, dict[str, float]] = {}
    for model, now in after.models.items():
        then = before.models.get(model, dict.fromkeys(now, 0))
        delta = {key: now[key] - then.get(key, 0) for key in now}
        requests = delta["requests"]
        if requests <= 0:
            continue
        executions = max(delta["executions"], 0)
        row: dict[str, float] = {
            "requests": float(requests),
            "executions": float(executions),
            "avg_batch": delta["inferences"] / executions if executions else 0.0,
        }
        for stage in STAGES:
            row[f"{stage}_ms"] = delta[f"{stage}_ns"] / requests / 1e6
        row["compute_ms_per_exec"] = delta["busy_ns"] / executions / 1e6 if executions else 0.0
        count = max(1, (instances or {}).get(model, 1))
        row["utilization"] = delta["busy_ns"] / (wall_ns * count)
        result[model] = {key: round(value, 4) for key, value in row.items()}
    return result


def bottleneck(rows: Mapping[str, Mapping[str, float]], exclude: tuple[str, ...] = ()) -> str | None:
    """The model with the highest utilization (ensembles and ``exclude`` skipped), or None."""
    candidates = {m: r.get("utilization", 0.0) for m, r in rows.items() if m not in exclude}
    candidates = {m: u for m, u in candidates.items() if u > 0}
    return max(candidates, key=candidates.__getitem__) if candidates else None
