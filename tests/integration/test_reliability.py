"""Overload, graceful shutdown and soak on the real ensemble.

Short variants run in `make test`; `TRIMODAL_FULL_RELIABILITY=1` runs the full ones (60 s overload,
10 min soak) whose figures are recorded in benchmarks/RELIABILITY.md. Results go to build/reliability/.
"""

import asyncio
import json
import os
import re
import time
import urllib.request
from pathlib import Path

import pytest

from trimodal.bench.drift import soak_drift
from trimodal.bench.traffic import LoadGenerator, process_group_rss_mb, samples_from_split
from trimodal.layout import Layout
from trimodal.triton.install import missing_artifacts
from trimodal.triton.server import ServerConfig, TritonServer, free_port

REPOSITORY = Layout.default().repository.root

pytestmark = [pytest.mark.integration, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
FULL = os.environ.get("TRIMODAL_FULL_RELIABILITY") == "1"
OVERLOAD_S = 60.0 if FULL else 15.0
SOAK_S = 600.0 if FULL else 60.0
DEADLINE_S = 5.0
BUILD = Layout.default().build.root
RESULTS = BUILD / "reliability"
SUSTAINED_P99_MS = 500.0  # open-loop capacity: the highest Poisson rate with no error and p99 under this
# Soak drift, last window / first (trimodal/bench/drift.py; the p99 as the median of three sub-windows). The full
# 10-minute soak's 60 s windows hold 1.2x. A 15 s window of the short one moves with the shared machine: CI on a
# slower 2-core Xeon measured p50 54 -> 86 ms (1.58x) and p99 112 -> 242 ms (2.17x) at 70% load with every request
# OK and memory flat, +16 MB (benchmarks/reliability/soak-xeon-noisy.json). So the short soak bounds the ratio at
# 2.5x and leaves a queue growing from the start to the ceiling check, which the machine's speed does not move (the
# last window's p50 under the p99 the same server showed at its open-loop capacity; tests/unit/test_drift.py).
DRIFT_LIMIT = 1.2 if FULL else 2.5


def _config(work: Path, exit_timeout_s: int = 15) -> ServerConfig:
    if missing_artifacts(REPOSITORY):
        pytest.skip("model repository not built: run `make build` first")
    return ServerConfig(
        model_repository=REPOSITORY, http_port=free_port(), grpc_port=free_port(),
        metrics_port=free_port(), work_dir=work, exit_timeout_s=exit_timeout_s,
    )  # fmt: skip


def _record(name: str, payload: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}{'-full' if FULL else ''}.json").write_text(json.dumps(payload, indent=2))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with TritonServer(_config(tmp_path_factory.mktemp("reliability"))).start(timeout_s=240) as started:
        yield started


@pytest.fixture(scope="module")
def generator(server) -> LoadGenerator:
    return LoadGenerator(server.config.grpc_url, samples_from_split(BUILD), deadline_s=DEADLINE_S)


@pytest.fixture(scope="module")
def capacity(generator) -> float:
    """Saturation throughput (closed loop, 16 in flight), requests per second."""
    asyncio.run(generator.closed_loop(4, 2.0))  # warm up
    result = asyncio.run(generator.closed_loop(16, 8.0))
    assert result.statuses() == {"OK": len(result.outcomes)}, result.summary()
    return result.throughput()


def _counters(server) -> dict[tuple[str, str], float]:
    """Per model: ("success", model) and ("failure", model) (all reasons summed) from the metrics endpoint."""
    with urllib.request.urlopen(server.config.metrics_url, timeout=10) as response:
        text = response.read().decode()
    counters: dict[tuple[str, str], float] = {}
    pattern = r'^nv_inference_request_(success|failure)\{model="(\w+)",(?:reason="\w+",)?version="1"\} (\S+)$'
    for match in re.finditer(pattern, text, re.M):
        key = (match.group(1), match.group(2))
        counters[key] = counters.get(key, 0.0) + float(match.group(3))
    return counters


# The ensemble's longest path queues at four stages in turn: a preprocessor, an encoder, the fusion head, the
# postprocess step.
QUEUED_STAGES = ("preprocess_text", "text_encoder", "fusion_classifier", "postprocess")


def _queueing_bound_ms() -> float:
    """What a success can have waited at most: each queued stage's queue timeout (pipeline.yaml), in turn."""
    from trimodal.spec import load_spec

    serving = load_spec(None).serving
    return sum(serving.resolved(model).queue_timeout_us for model in QUEUED_STAGES) / 1000.0


def test_overload_sheds_with_unavailable(capacity, tmp_path: Path) -> None:
    """Open-loop load at 2x capacity: every failure is UNAVAILABLE (but for Triton 2.51's few INVALID_ARGUMENT
    answers under heavy shedding, counted and bounded), every request is answered within its
    deadline, successes keep a p99 below the queueing bound (the queue timeouts of the four stages a request
    passes in turn: 4 s as configured, under the 5 s deadline), the server stays live, and the client's counts
    match the server's.

    Runs on a server of its own: should a request be cancelled by its deadline after all, Triton 2.51's
    ensemble can crash or wedge (benchmarks/RELIABILITY.md), which must not take other tests down.
    """
    with TritonServer(_config(tmp_path / "work", exit_timeout_s=5)).start(timeout_s=240) as server:
        generator = LoadGenerator(server.config.grpc_url, samples_from_split(BUILD), deadline_s=DEADLINE_S)
        asyncio.run(generator.closed_loop(4, 2.0))  # warm up
        _overload(server, generator, capacity)


def _settled_counters(server, timeout_s: float = 5.0) -> dict[tuple[str, str], float]:
    """The counters once nothing is pending and two reads agree: when a shed request's ensemble has answered, its
    sibling branches' inner requests can still sit in their queues until their own timeout (1 s) and are counted
    then (CI: the server had counted 5070 of 5098 requests at the client's last answer)."""
    from trimodal.triton.drain import pending_requests

    deadline = time.monotonic() + timeout_s
    previous = _counters(server)
    while time.monotonic() < deadline:
        time.sleep(0.25)
        current = _counters(server)
        if current == previous and not any(pending_requests(server).values()):
            return current
        previous = current
    return previous


def _overload(server: TritonServer, generator: LoadGenerator, capacity: float) -> None:
    before = _counters(server)
    result = asyncio.run(generator.open_loop(rate_rps=2 * capacity, duration_s=OVERLOAD_S))
    after = _settled_counters(server)
    delta = {key: after.get(key, 0.0) - before.get(key, 0.0) for key in after}
    statuses = result.statuses()
    received = delta[("success", "preprocess_text")] + delta.get(("failure", "preprocess_text"), 0.0)
    summary = {
        "capacity_rps": round(capacity, 2), "offered_rps": round(2 * capacity, 2), **result.summary(),
        "server_received": received, "server_successes": delta[("success", "multimodal")],
        "server_failures_multimodal_other": delta.get(("failure", "multimodal"), 0.0),
        "shed_messages": sorted({o.message[:90] for o in result.outcomes if o.status != "OK"})[:5],
    }  # fmt: skip
    defects = [o for o in result.outcomes if o.status == "INVALID_ARGUMENT"]
    summary["triton_defect_invalid_argument"] = len(defects)
    _record("overload", summary)
    # Triton 2.51 answers some valid requests INVALID_ARGUMENT when timeouts shed at high rates: it reads the
    # inputs of a request it has already failed, and its two messages for BYTES inputs read from freed memory are
    # "incomplete string data for inference input" (lengths like 2365234640 read from an 869-byte element) and
    # "unexpected number of string elements 2 for inference input 'AUDIO', expecting 1". Measured on 2-core
    # machines: none at 240 req/s (EPYC), 0.27% at 645 and 1.0% at 844 req/s (Xeon): it grows with the shedding
    # rate. Only those two messages, at most 5% of the requests, counted in the file.
    assert {"OK", "UNAVAILABLE"} <= set(statuses) <= {"OK", "UNAVAILABLE", "INVALID_ARGUMENT"}, summary
    defect_messages = ("incomplete string data for inference input", "unexpected number of string elements")
    assert all(any(text in o.message for text in defect_messages) for o in defects), defects[:3]
    assert len(defects) <= 0.05 * len(result.outcomes), summary
    shed = [o for o in result.outcomes if o.status == "UNAVAILABLE"]
    assert all("timeout" in o.message.lower() or "queue" in o.message.lower() for o in shed), shed[:3]
    assert max(o.latency_s for o in result.outcomes) < DEADLINE_S, "a request was not answered within its deadline"
    assert result.percentile_ms(99) < _queueing_bound_ms(), summary
    assert server.is_live() and server.is_ready()
    # Client and server agree: every request the client sent reached the server, its successes are the
    # server's, and its UNAVAILABLE answers are the server's failures (received - succeeded). (The ensemble's own
    # failure counter counts a request rejected in two branches twice, so it is recorded, not compared.)
    # Exactly, unless Triton's defect answered some requests: CI saw the server count 3728 successes where the
    # client had 3727 OK beside 103 defect answers, so each defect answer may also skew the counters by one.
    # (With every request received and each answered OK, UNAVAILABLE or a defect, the server's failures then
    # equal the client's UNAVAILABLE + defect answers within the same skew: no separate check is needed.)
    assert received == len(result.outcomes), summary
    assert abs(summary["server_successes"] - statuses["OK"]) <= len(defects), summary


def open_loop_capacity(generator: LoadGenerator, closed_loop_rps: float) -> tuple[float, list[dict]]:
    """The highest Poisson rate the server sustains open loop: every request OK and p99 (timed from each
    request's scheduled send, so a backlog shows) under SUSTAINED_P99_MS. Swept from 40% to 100% of the closed-loop
    saturation; returns the rate and the sweep."""
    sweep, best = [], 0.0
    for fraction in (0.4, 0.6, 0.8, 1.0):
        rate = fraction * closed_loop_rps
        for attempt in (1, 2):
            result = asyncio.run(generator.open_loop(rate_rps=rate, duration_s=6.0, seed=int(fraction * 10) + attempt))
            ok = result.statuses() == {"OK": len(result.outcomes)}
            sustained = ok and result.percentile_ms(99) < SUSTAINED_P99_MS
            sweep.append({"rate_rps": round(rate, 1), "attempt": attempt, **result.summary(), "sustained": sustained})
            # Every request OK but p99 over the bound: one 0.5-0.6 s stall of the server (max latency 588 ms at
            # 84 req/s here, p99 169 ms) puts a 6 s window's p99 there at low rates (CI on an AMD EPYC: the 40%
            # level missed). Measured once more; a rate that is really past capacity misses again.
            if sustained or not ok:
                break
        if not sustained:
            break
        best = rate
    return best, sweep


def test_soak_stays_flat(server, generator, capacity) -> None:
    """Soak at 70% of the OPEN-loop capacity (not of overload goodput); drift compared after warm-up."""
    open_capacity, sweep = open_loop_capacity(generator, capacity)
    assert open_capacity > 0, [(x["rate_rps"], x["statuses"], x["p99_ms"], x["max_latency_ms"]) for x in sweep]
    pgid = server.process.pid
    rss_start = process_group_rss_mb(pgid)
    rate = 0.7 * open_capacity
    result = asyncio.run(generator.open_loop(rate_rps=rate, duration_s=SOAK_S))
    rss_end = process_group_rss_mb(pgid)
    window = 60.0 if FULL else 15.0
    warmup = window  # the first window (caches, allocator, branch predictors) is not the baseline
    ceiling = [entry for entry in sweep if entry["sustained"]][-1]["p99_ms"]  # the p99 at open-loop capacity
    drift = soak_drift(result, warmup, window, SOAK_S, ceiling_ms=ceiling, limit=DRIFT_LIMIT)
    summary = {**result.summary(), "closed_loop_capacity_rps": round(capacity, 2),
               "open_loop_capacity_rps": round(open_capacity, 2), "sweep": sweep, "rate_rps": round(rate, 2),
               "rss_start_mb": round(rss_start, 1), "rss_end_mb": round(rss_end, 1),
               "p99_after_warmup_ms": round(result.percentile_ms(99, (warmup, warmup + window)), 2),
               "p99_last_window_ms": round(result.percentile_ms(99, (SOAK_S - window, SOAK_S)), 2),
               "drift": drift.to_dict(), "window_s": window, "warmup_s": warmup}  # fmt: skip
    _record("soak", summary)
    assert result.statuses() == {"OK": len(result.outcomes)}, summary
    assert rss_end - rss_start < 100.0, summary
    assert drift.within_ratio, summary
    assert drift.under_ceiling, summary


def test_shutdown_after_drain_is_clean(tmp_path: Path) -> None:
    """The production shutdown sequence: traffic drained at the load balancer (preStop), then SIGTERM.

    The server exits 0 well within --exit-timeout-secs + 5 s, leaves no stub process and no /dev/shm
    segment, and later requests are refused with UNAVAILABLE. What Triton 2.51 does NOT do is drain ensemble
    requests that are between two steps at SIGTERM (their next step is refused because the server is
    stopping; measured in benchmarks/RELIABILITY.md), which is why the deployments drain first.
    """
    config = _config(tmp_path / "work", exit_timeout_s=10)
    server = TritonServer(config).start(timeout_s=240)
    pgid = server.process.pid
    generator = LoadGenerator(config.grpc_url, samples_from_split(BUILD, count=32), deadline_s=DEADLINE_S)
    before = asyncio.run(generator.closed_loop(8, 4.0))
    started = time.perf_counter()
    code = server.stop()
    exit_s = time.perf_counter() - started
    after = asyncio.run(generator.closed_loop(1, 0.5))
    summary = {"exit_s": round(exit_s, 2), "exit_code": code, "before": before.summary(),
               "after_exit": dict(after.statuses())}  # fmt: skip
    _record("shutdown", summary)
    assert before.statuses() == {"OK": len(before.outcomes)}, summary
    assert code == 0, summary
    assert exit_s < config.exit_timeout_s + 5, summary
    assert set(after.statuses()) == {"UNAVAILABLE"}, summary
    leftover = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _pgid(p) == pgid]
    assert leftover == [], "processes of the server's group outlived it"
    assert server.shm_segments() == []


def _pgid(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])
    except (OSError, ValueError, IndexError):
        return None


def test_helm_liveness_probe_catches_a_dead_stub(tmp_path: Path) -> None:
    """The chart's liveness script passes on a healthy server and fails once a stub is killed."""
    import signal
    import subprocess
    import sys

    script = ROOT / "deploy" / "helm" / "trimodal" / "files" / "liveness.py"
    with TritonServer(_config(tmp_path / "work")).start(timeout_s=240) as server:
        command = [sys.executable, str(script), f"--port={server.config.http_port}", "preprocess_text"]
        healthy = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert healthy.returncode == 0, healthy.stderr
        stubs = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _pgid(p) == server.process.pid
                 and b"preprocess_audio" in (p / "cmdline").read_bytes()]  # fmt: skip
        assert stubs, "no preprocess_audio stub found"
        os.kill(int(stubs[0].name), signal.SIGKILL)
        time.sleep(0.5)
        # (Triton 2.51 may still report every model ready here: that is why the probe sends an inference.)
        broken = subprocess.run(command, capture_output=True, text=True, timeout=30)
        assert broken.returncode == 1
        assert "not healthy" in broken.stderr or "failed" in broken.stderr, broken.stderr
