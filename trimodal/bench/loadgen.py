"""Closed- and open-loop load generation and latency statistics shared by every baseline.

Closed loop: a level = one concurrency for a fixed duration: ``concurrency`` workers each send a request, wait
for the validated answer and send the next (no think time). Requests that finish during the warm-up are not
counted. Closed-loop latency hides queueing (a slow answer delays the next send: coordinated omission), so
capacity and latency targets come from the open loop only.

Open loop (:func:`open_loop`): requests are sent at Poisson arrival times regardless of answers, and each
request's latency is timed from its **scheduled** send, so a client that falls behind shows up as latency;
the level also records how late the sends went out (``lag_*``) and the achieved vs offered rate.

The in-process pipeline has no requests: it runs batches of samples back to back (what a batching server
would form from that many requests in flight) in one or more workers, and each sample's latency is its batch's.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from trimodal.bench.workload import WorkItem

LOGGER = logging.getLogger(__name__)

PERCENTILES: tuple[int, ...] = (50, 95, 99)


OPTIONAL_FIELDS = frozenset(
    {
        "repetition",
        "achieved_rps",
        "scheduled_rps",
        "lag_p99_ms",
        "lag_max_ms",
        "load_1m",
        "outside_cores",
        "run_cores",
        "correct",
    }
)


def settle_heap() -> int:
    """Collect the load generator's garbage now and freeze what survives, before a measured level.

    The bench process holds the workload, every result so far and gRPC's objects, and a full collection of that
    heap pauses every request in flight in it (each is timed as that much slower). Collecting between levels and
    freezing the survivors (``gc.freeze``: later collections skip them) leaves mostly the level's own new objects
    for the collections that still happen inside a level to scan.

    Returns:
        The number of frozen objects.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


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
    repetition: int | None = None  # 1..repetitions of the same level in one run (None: older runs, one each)
    achieved_rps: float | None = None  # open loop: successful answers per second inside the window
    # open loop: sends the Poisson schedule placed inside the window, per second (the offered rate as it fell out)
    scheduled_rps: float | None = None
    lag_p99_ms: float | None = None  # open loop: p99 of (actual send - scheduled send), the client's own lag
    lag_max_ms: float | None = None
    load_1m: float | None = None  # os.getloadavg()[0] just before the level
    outside_cores: float | None = None  # CPU cores busy with processes outside this run during the level
    run_cores: float | None = None  # CPU cores busy with this run's processes (client and servers) during the level
    correct: int | None = None  # answers whose label matched the sample's class (when checked)

    def meets_rate(self, min_fraction: float = 0.95) -> bool:
        """Open loop: no errors and the achieved rate >= ``min_fraction`` of the offered (False for closed loop).

        The offered rate is the one the Poisson schedule actually placed in the window (``scheduled_rps``) where
        recorded: over a few seconds it differs from the nominal rate by chance (about 3.5% for 800 arrivals),
        which says nothing about whether the server kept up. Older results without it use the nominal rate.
        """
        if self.mode != "rate" or not self.rate or self.achieved_rps is None:
            return False
        offered = self.scheduled_rps or self.rate
        return self.errors == 0 and self.achieved_rps >= min_fraction * offered

    def cpu_ms_per_answer(self) -> float | None:
        """CPU milliseconds this run's processes spent per successful answer (None when not recorded).

        The run's cores over the level (warm-up included, at the same load) divided by the answers per second
        inside the window (``achieved_rps`` in the open loop, ``throughput`` in the closed loop).
        """
        answers = self.achieved_rps if self.mode == "rate" else self.throughput
        if self.run_cores is None or not answers:
            return None
        return 1000.0 * self.run_cores / answers

    def to_dict(self) -> dict[str, object]:
        """JSON-able form (the fields added with repetitions and the open loop are left out when not recorded)."""
        return {k: v for k, v in asdict(self).items() if v is not None or k not in OPTIONAL_FIELDS}

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
    call: Callable[[WorkItem], Awaitable[object]],
    items: Sequence[WorkItem],
    concurrency: int,
    duration_s: float,
    warmup_s: float,
    baseline: str,
) -> LevelResult:
    """Run ``concurrency`` workers that call ``call(item)`` back to back for ``warmup_s + duration_s``.

    Args:
        call: sends one request and validates the answer (raises on failure); returns True when the
            answer's label is the item's class (counted in ``correct``).
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
    errors = completed = correct = 0
    first_error: str | None = None

    async def worker(offset: int) -> None:
        nonlocal errors, first_error, completed, correct
        index = offset
        while loop.time() < stop_at:
            item = items[index % len(items)]
            index += concurrency
            sent = time.perf_counter()
            sent_loop = loop.time()
            try:
                answer = await call(item)
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
                    correct += answer is True

    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    result = summarize(baseline, concurrency, latencies, errors, duration_s, samples=completed, first_error=first_error)
    result.correct = correct
    return result


async def open_loop(
    call: Callable[[WorkItem], Awaitable[object]],
    items: Sequence[WorkItem],
    rate_rps: float,
    duration_s: float,
    warmup_s: float,
    baseline: str,
    seed: int = 0,
) -> LevelResult:
    """Send requests at Poisson arrivals of ``rate_rps`` for ``warmup_s + duration_s``, regardless of answers.

    Latency is timed from each request's scheduled send (no coordinated omission); requests scheduled in the
    measured window count, and the call returns once each has an answer or failed (``call`` carries the
    deadline). ``achieved_rps`` = successful answers inside the window / its length; ``scheduled_rps`` = sends
    scheduled inside the window / its length (what :meth:`LevelResult.meets_rate` compares it with).

    Args:
        call: sends one request and validates the answer (raises on failure).
        items: the workload (round-robin).
        rate_rps: offered requests per second.
        duration_s: measured seconds.
        warmup_s: seconds sent before measuring.
        baseline: name for the result.
        seed: seed of the arrival times.

    Returns:
        The level (``mode="rate"``, ``rate`` = offered, ``concurrency`` 0).
    """
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    t0 = loop.time()
    measure_from, stop_at = t0 + warmup_s, t0 + warmup_s + duration_s
    latencies: list[float] = []
    lags: list[float] = []
    errors = completed = correct = 0
    first_error: str | None = None

    async def one(item: WorkItem, scheduled: float) -> None:
        nonlocal errors, completed, correct, first_error
        counted = scheduled >= measure_from
        if counted:
            lags.append(max(0.0, loop.time() - scheduled))
        try:
            answer = await call(item)
        except Exception as exc:  # every failure is counted, the first one is kept for the report
            if counted:
                errors += 1
                first_error = first_error or f"{type(exc).__name__}: {exc}"[:300]
            return
        finished = loop.time()
        completed += measure_from <= finished <= stop_at
        if counted:
            latencies.append(finished - scheduled)
            correct += answer is True

    tasks, sent = [], []
    scheduled, index = t0, 0
    while scheduled < stop_at:
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.ensure_future(one(items[index % len(items)], scheduled)))
        sent.append(scheduled)
        index += 1
        scheduled += rng.expovariate(rate_rps)
    await asyncio.gather(*tasks)
    result = summarize(baseline, 0, latencies, errors, duration_s, samples=completed, first_error=first_error)
    result.mode, result.rate, result.achieved_rps = "rate", round(rate_rps, 2), result.throughput
    if duration_s > 0:
        result.scheduled_rps = round(sum(measure_from <= s < stop_at for s in sent) / duration_s, 2)
    result.correct = correct
    if lags:
        lag_ms = np.asarray(lags) * 1000.0
        result.lag_p99_ms, result.lag_max_ms = float(np.percentile(lag_ms, 99)), float(lag_ms.max())
    return result


@dataclass
class BatchRun:
    """What one in-process worker measured (picklable, so worker processes can return it)."""

    latencies: list[float] = field(default_factory=list)
    samples: int = 0
    errors: int = 0
    first_error: str | None = None


def run_batches(
    classify: Callable[[Sequence[WorkItem]], None], items: Sequence[WorkItem], batch: int, duration_s: float,
    warmup_s: float, offset: int = 0,
) -> BatchRun:  # fmt: skip
    """Run ``classify(batch of items)`` back to back in the calling thread for ``warmup_s + duration_s``.

    Args:
        classify: classifies and validates one batch.
        items: the workload (starting at ``offset``).
        batch: samples per call.
        duration_s: measured seconds.
        warmup_s: seconds before measuring.
        offset: first item.

    Returns:
        Per-sample latencies (each sample's is its batch's) and samples completed inside the window.
    """
    start = time.perf_counter()
    measure_from, stop_at = start + warmup_s, start + warmup_s + duration_s
    run = BatchRun()
    index = offset
    while time.perf_counter() < stop_at:
        chunk = [items[(index + k) % len(items)] for k in range(batch)]
        index += batch
        sent = time.perf_counter()
        try:
            classify(chunk)
        except Exception as exc:  # counted like a server error
            if sent >= measure_from:
                run.errors += batch
                run.first_error = run.first_error or f"{type(exc).__name__}: {exc}"[:300]
            continue
        finished = time.perf_counter()
        if sent >= measure_from and finished <= stop_at:
            run.latencies.extend([finished - sent] * batch)
            run.samples += batch
    return run


def merge_batches(runs: Sequence[BatchRun], baseline: str, concurrency: int, duration_s: float) -> LevelResult:
    """One level from the workers that ran side by side over the same window."""
    latencies = [x for run in runs for x in run.latencies]
    first_error = next((run.first_error for run in runs if run.first_error), None)
    errors, samples = sum(run.errors for run in runs), sum(run.samples for run in runs)
    return summarize(baseline, concurrency, latencies, errors, duration_s, samples=samples, first_error=first_error)


def batched_loop(
    classify: Callable[[Sequence[WorkItem]], None],
    items: Sequence[WorkItem],
    batch: int,
    duration_s: float,
    warmup_s: float,
    baseline: str,
) -> LevelResult:
    """Run ``classify(batch of items)`` back to back in this thread (one in-process worker).

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
    return merge_batches([run_batches(classify, items, batch, duration_s, warmup_s)], baseline, batch, duration_s)
