"""Closed-loop load generation and latency statistics shared by every baseline.

A level = one concurrency for a fixed duration: ``concurrency`` workers each send a request, wait for the
validated answer and send the next (no think time). Requests that finish during the warm-up are not counted.
The in-process pipeline has no requests: it runs batches of ``concurrency`` samples back to back (what a
batching server would form from that many requests in flight), and each sample's latency is its batch's.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from trimodal.bench.workload import WorkItem

LOGGER = logging.getLogger(__name__)

PERCENTILES: tuple[int, ...] = (50, 95, 99)


@dataclass
class LevelResult:
    """Throughput and latency of one baseline at one load level."""

    baseline: str
    concurrency: int
    requests: int
    errors: int
    duration_s: float
    throughput: float  # successful samples per second
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    mode: str = "concurrency"  # or "rate" (open loop, Poisson arrivals)
    rate: float | None = None  # offered requests per second for mode == "rate"
    tool: str = "loadgen"  # loadgen | perf_analyzer
    first_error: str | None = None
    breakdown: dict[str, dict[str, float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        """JSON-able form."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, object]) -> LevelResult:
        """Inverse of :meth:`to_dict` (unknown keys are ignored)."""
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known)  # type: ignore[arg-type]


def summarize(
    baseline: str, concurrency: int, latencies_s: Sequence[float], errors: int, duration_s: float,
    samples: int | None = None, first_error: str | None = None,
) -> LevelResult:  # fmt: skip
    """Build a :class:`LevelResult` from per-request latencies.

    Args:
        baseline: baseline name.
        concurrency: requests in flight (or batch size for the in-process pipeline).
        latencies_s: latency of every successful request in seconds.
        errors: failed requests.
        duration_s: measured wall time.
        samples: samples completed (defaults to ``len(latencies_s)``).
        first_error: text of the first error, if any.

    Returns:
        The level result (NaN percentiles when nothing succeeded).
    """
    done = len(latencies_s) if samples is None else samples
    if latencies_s:
        ms = np.asarray(latencies_s, dtype=np.float64) * 1000.0
        p50, p95, p99 = (float(np.percentile(ms, q)) for q in PERCENTILES)
        mean = float(ms.mean())
    else:
        p50 = p95 = p99 = mean = math.nan
    throughput = done / duration_s if duration_s > 0 else 0.0
    return LevelResult(
        baseline=baseline, concurrency=concurrency, requests=len(latencies_s), errors=errors,
        duration_s=round(duration_s, 3), throughput=throughput, p50_ms=p50, p95_ms=p95, p99_ms=p99,
        mean_ms=mean, first_error=first_error,
    )  # fmt: skip


async def closed_loop(
    call: Callable[[WorkItem], Awaitable[None]],
    items: Sequence[WorkItem],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    baseline: str,
) -> LevelResult:
    """Run ``concurrency`` workers that call ``call(item)`` back to back for ``warmup_s + duration_s``.

    Args:
        call: sends one request and validates the answer (raises on failure).
        items: the workload (worker ``w`` starts at item ``w`` and strides by ``concurrency``).
        concurrency: workers.
        duration_s: measured seconds.
        warmup_s: seconds before measuring.
        baseline: name for the result.

    Returns:
        The level result.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    measure_from = start + warmup_s
    stop_at = measure_from + duration_s
    latencies: list[float] = []
    errors = completed = 0
    first_error: str | None = None

    async def worker(offset: int) -> None:
        nonlocal errors, first_error, completed
        index = offset
        while loop.time() < stop_at:
            item = items[index % len(items)]
            index += concurrency
            sent = time.perf_counter()
            sent_loop = loop.time()
            try:
                await call(item)
            except Exception as exc:  # every failure is counted, the first one is kept for the report
                if sent_loop >= measure_from:
                    errors += 1
                    first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
                await asyncio.sleep(0.01)
                continue
            finished = loop.time()
            if measure_from <= finished <= stop_at:
                completed += 1  # throughput: every completion inside the window
                if sent_loop >= measure_from:
                    latencies.append(time.perf_counter() - sent)

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    return summarize(baseline, concurrency, latencies, errors, duration_s, samples=completed, first_error=first_error)


def batched_loop(
    classify: Callable[[Sequence[WorkItem]], None],
    items: Sequence[WorkItem],
    batch: int,
    duration_s: float,
    warmup_s: float,
    baseline: str,
) -> LevelResult:
    """Run ``classify(batch of items)`` back to back in this thread (the in-process bound).

    Args:
        classify: classifies and validates one batch.
        items: the workload.
        batch: samples per call (= the concurrency it stands for).
        duration_s: measured seconds.
        warmup_s: seconds before measuring.
        baseline: name for the result.

    Returns:
        The level result (throughput in samples per second; each sample's latency is its batch's).
    """
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    latencies: list[float] = []
    errors, samples, index = 0, 0, 0
    first_error: str | None = None
    while time.perf_counter() < stop_at:
        chunk = [items[(index + k) % len(items)] for k in range(batch)]
        index += batch
        sent = time.perf_counter()
        try:
            classify(chunk)
        except Exception as exc:  # counted like a server error
            if sent >= measure_from:
                errors += batch
                first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
            continue
        finished = time.perf_counter()
        if sent >= measure_from and finished <= stop_at:
            latencies.extend([finished - sent] * batch)
            samples += batch
    return summarize(baseline, batch, latencies, errors, duration_s, samples=samples, first_error=first_error)
