"""A flood of client-cancelled requests, then normal traffic: the server keeps answering.

2,000 requests with 50 ms deadlines at twice the capacity (each also carries the server-side timeout that
trimodal's clients send: Triton drops queued work itself before the client cancels it), then normal traffic
with 5 s deadlines: every normal request is answered OK once the flood's leftovers are shed (10 s after it)
or, where the flood wedged Triton (once in CI on a Xeon, at 50 ms), once the supervisor's restart has restored
service (within 15 s of the flood) and the client's channel has reconnected; any restart is counted and took
under 10 s. `TRIMODAL_FULL_RELIABILITY=1` also runs the pathological flood (1 ms deadlines, cancelled while
still being received), which wedges Triton 2.51 (benchmarks/RELIABILITY.md): there the supervisor's probe must
restore service within 10 s. Figures: build/reliability/cancel-*.json.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections import Counter
from pathlib import Path

import pytest

from trimodal.bench.traffic import LoadGenerator, samples_from_split
from trimodal.layout import Layout
from trimodal.triton.install import missing_artifacts
from trimodal.triton.serve import supervisor_for
from trimodal.triton.server import ServerConfig, TritonServer, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LAYOUT = Layout.default()
FULL = os.environ.get("TRIMODAL_FULL_RELIABILITY") == "1"
FLOOD_REQUESTS = 2000
DEADLINES = [0.05, 0.001] if FULL else [0.05]
SETTLE_S = 10.0
"""Normal traffic must be all OK from 10 s after the flood (its leftovers shed) ..."""
LATEST_RESTORE_S = 15.0
"""... or, where the flood wedged Triton, from the supervisor's restore, which must come within 15 s of the flood
(two failed probes to notice, under 10 s to restart) ..."""
RECONNECT_S = 2.0
"""... plus the time the client's gRPC channel takes to leave its reconnect backoff (seen: 0.24 s after a 5.7 s
restart), leaving at least 3 s of the 20 s of normal traffic."""


@pytest.mark.parametrize("deadline_s", DEADLINES)
def test_cancelled_flood_then_normal_traffic(tmp_path: Path, deadline_s: float) -> None:
    if missing_artifacts(LAYOUT.repository.root):
        pytest.skip("model repository not built: run `make build` first")
    config = ServerConfig(
        model_repository=LAYOUT.repository.root, http_port=free_port(), grpc_port=free_port(),
        metrics_port=free_port(), work_dir=tmp_path / "work", exit_timeout_s=10,
    )  # fmt: skip
    samples = samples_from_split(LAYOUT.build.root, count=64)
    server = TritonServer(config).start(timeout_s=240)
    supervisor = supervisor_for(server, ready_timeout_s=120.0).start()
    try:
        normal = LoadGenerator(config.grpc_url, samples, deadline_s=5.0)
        asyncio.run(normal.closed_loop(4, 2.0))  # warm up
        capacity = asyncio.run(normal.closed_loop(16, 6.0)).throughput()
        flood = LoadGenerator(config.grpc_url, samples, deadline_s=deadline_s)
        flooded = asyncio.run(flood.open_loop(2 * capacity, FLOOD_REQUESTS / (2 * capacity)))
        flood_end = time.monotonic()
        after = asyncio.run(normal.closed_loop(4, 20.0))
    finally:
        supervisor.stop()
        server.stop()
    restarts = [
        {"reason": i.reason[:160], "recovery_s": i.recovery_s, "after_flood_s": round(i.detected_at - flood_end, 2)}
        for i in supervisor.incidents
    ]
    # Settled: 10 s after the flood, or once the last restart (if one was needed) has restored service.
    restored_s = max([r["after_flood_s"] + r["recovery_s"] for r in restarts if r["recovery_s"] is not None], default=0)
    settle_s = max(SETTLE_S, restored_s + RECONNECT_S if restarts else 0.0)
    settled = [o for o in after.outcomes if o.start_s >= settle_s]
    summary = {
        "deadline_s": deadline_s, "capacity_rps": round(capacity, 1), "flood": flooded.summary(),
        "after_flood": after.summary(), "settled_statuses": dict(Counter(o.status for o in settled)),
        "restarts": restarts, "restored_after_flood_s": round(restored_s, 2), "settle_s": round(settle_s, 2),
        "first_ok_after_flood_s": round(min((o.start_s for o in after.successes()), default=float("nan")), 2),
    }  # fmt: skip
    results = LAYOUT.build.root / "reliability"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"cancel-{int(deadline_s * 1000)}ms.json").write_text(json.dumps(summary, indent=2, default=str))
    assert len(flooded.outcomes) >= FLOOD_REQUESTS * 0.95, summary
    # Floods also get a few INVALID_ARGUMENT answers to valid requests (Triton 2.51 reads the inputs of requests
    # cancelled while still arriving; seen at 50 ms and 1 ms): recorded in the figures, tolerated here.
    tolerated = {"OK", "DEADLINE_EXCEEDED", "UNAVAILABLE", "CANCELLED", "INVALID_ARGUMENT"}
    assert set(flooded.statuses()) <= tolerated, summary
    assert restored_s <= LATEST_RESTORE_S, f"service not restored within {LATEST_RESTORE_S} s of the flood: {summary}"
    assert settled and all(o.status == "OK" for o in settled), summary
    assert all(r["recovery_s"] is not None and r["recovery_s"] < 10.0 for r in restarts), summary
