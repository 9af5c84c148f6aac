"""gRPC traffic against the ensemble with a per-request outcome: for overload, soak and shutdown tests.

Unlike :mod:`trimodal.bench.loadgen` (closed-loop throughput/latency levels for the benchmarks), this
records every request with its start time, latency, gRPC status and message, so callers can check that
every request got an answer or hit its deadline, how overload was shed, and how latency drifted over time.
Open loop (Poisson or uniform arrivals, no coordinated omission: latency is timed from each request's
scheduled send, so a client that falls behind shows up as latency) and closed loop. Every request carries its
deadline and a server-side timeout (:func:`trimodal.client.server_timeout_us`).
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from trimodal import contract
from trimodal.client import Sample, build_inputs, build_outputs, parse_result, server_timeout_us


@dataclass(frozen=True)
class Outcome:
    """One request: when it started (s since the run began), how long it took, its status and message."""

    start_s: float
    latency_s: float
    status: str
    message: str = ""


@dataclass
class LoadResult:
    """All outcomes of a run plus summary helpers."""

    outcomes: list[Outcome] = field(default_factory=list)
    duration_s: float = 0.0

    def statuses(self) -> Counter[str]:
        """Count per gRPC status (``OK`` for successes)."""
        return Counter(outcome.status for outcome in self.outcomes)

    def successes(self) -> list[Outcome]:
        """The successful requests."""
        return [outcome for outcome in self.outcomes if outcome.status == "OK"]

    def throughput(self) -> float:
        """Successful requests per second."""
        return len(self.successes()) / self.duration_s if self.duration_s else 0.0

    def percentile_ms(self, q: float, window: tuple[float, float] | None = None) -> float:
        """Latency percentile of successes in milliseconds, optionally within a start-time window."""
        latencies = [
            o.latency_s for o in self.successes() if window is None or window[0] <= o.start_s < window[1]
        ]  # fmt: skip
        return float(np.percentile(latencies, q) * 1000.0) if latencies else float("nan")

    def summary(self) -> dict[str, object]:
        """A JSON-friendly summary."""
        return {
            "requests": len(self.outcomes),
            "duration_s": round(self.duration_s, 2),
            "throughput_rps": round(self.throughput(), 2),
            "statuses": dict(self.statuses()),
            "p50_ms": round(self.percentile_ms(50), 2),
            "p99_ms": round(self.percentile_ms(99), 2),
            "max_latency_ms": round(max((o.latency_s for o in self.outcomes), default=0.0) * 1000.0, 2),
        }


def _status(exc: Exception) -> str:
    status = exc.status() if hasattr(exc, "status") else None
    return str(status).rsplit(".", 1)[-1] if status else type(exc).__name__


class LoadGenerator:
    """Sends requests built from ``samples`` to the ensemble over one async gRPC channel.

    Args:
        url: gRPC ``host:port``.
        samples: payloads, used round-robin.
        deadline_s: deadline of every request.
        validate: check every successful answer (finite probabilities summing to 1).
        server_timeout: also send the server-side timeout with each request.
    """

    def __init__(
        self, url: str, samples: Sequence[Sample], deadline_s: float = 5.0, validate: bool = True,
        server_timeout: bool = True,
    ) -> None:  # fmt: skip
        self.url = url
        self.samples = list(samples)
        self.deadline_s = deadline_s
        self.validate = validate
        self.timeout_us = server_timeout_us(deadline_s) if server_timeout else None

    async def _one(
        self, client: object, index: int, t0: float, result: LoadResult, scheduled: float | None = None
    ) -> None:
        import tritonclient.grpc.aio as aioclient
        from tritonclient.utils import InferenceServerException

        sample = self.samples[index % len(self.samples)]
        started = time.perf_counter() if scheduled is None else scheduled
        try:
            response = await client.infer(  # type: ignore[attr-defined]
                contract.ENSEMBLE, build_inputs([sample], aioclient), outputs=build_outputs(aioclient, 1),
                client_timeout=self.deadline_s, timeout=self.timeout_us,
            )  # fmt: skip
            status, message = "OK", ""
            if self.validate:
                probabilities = parse_result(response)[0].probabilities
                if not (np.isfinite(probabilities).all() and abs(float(probabilities.sum()) - 1.0) < 1e-3):
                    status, message = "INVALID_RESPONSE", f"probabilities {probabilities.tolist()}"
        except InferenceServerException as exc:
            status, message = _status(exc), exc.message() or ""
        ended = time.perf_counter()
        result.outcomes.append(Outcome(started - t0, ended - started, status, message))

    async def open_loop(self, rate_rps: float, duration_s: float, poisson: bool = True, seed: int = 0) -> LoadResult:
        """Send at ``rate_rps`` for ``duration_s`` regardless of answers (arrivals Poisson or uniform).

        Returns once every request has an answer or hit its deadline.
        """
        import tritonclient.grpc.aio as aioclient

        rng = random.Random(seed)
        result = LoadResult()
        client = aioclient.InferenceServerClient(self.url)
        tasks = []
        t0 = time.perf_counter()
        next_at = 0.0
        index = 0
        try:
            while next_at < duration_s:
                delay = next_at - (time.perf_counter() - t0)
                if delay > 0:
                    await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(self._one(client, index, t0, result, t0 + next_at)))
                index += 1
                next_at += rng.expovariate(rate_rps) if poisson else 1.0 / rate_rps
            await asyncio.gather(*tasks)
        finally:
            await client.close()
        result.duration_s = time.perf_counter() - t0
        return result

    async def closed_loop(self, concurrency: int, duration_s: float) -> LoadResult:
        """``concurrency`` workers, each sending its next request when the previous one is answered."""
        import tritonclient.grpc.aio as aioclient

        result = LoadResult()
        client = aioclient.InferenceServerClient(self.url)
        t0 = time.perf_counter()
        counter = iter(range(10**9))

        async def worker() -> None:
            while time.perf_counter() - t0 < duration_s:
                await self._one(client, next(counter), t0, result)

        try:
            await asyncio.gather(*(worker() for _ in range(concurrency)))
        finally:
            await client.close()
        result.duration_s = time.perf_counter() - t0
        return result


def samples_from_split(build_dir: Path, split: str = "test", count: int = 64) -> list[Sample]:
    """Payloads (all three modalities) from a dataset split."""
    from trimodal.training.data.dataset import load_split

    data = load_split(build_dir, split)
    return [Sample(image=data.images[i], text=data.texts[i], audio=data.audio[i]) for i in range(min(count, len(data)))]


def process_group_rss_mb(pgid: int) -> float:
    """Resident memory of every process in a process group (server + Python stubs), in MB."""
    total_kb = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2]) != pgid:
                continue
            for line in (proc / "status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total_kb / 1024.0
