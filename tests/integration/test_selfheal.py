"""Self-healing: a killed Python-backend stub is noticed and service restored, under load, with deadlines."""

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from echo_repo import ECHO, echo_config, make_repo
from tritonclient.utils import InferenceServerException

from trimodal.triton.server import TritonServer
from trimodal.triton.supervisor import Supervisor

pytestmark = pytest.mark.integration
DEADLINE_S = 2.0


def _stub_pids(server: TritonServer) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = (proc / "cmdline").read_bytes()
                pgid = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[2])
            except (OSError, ValueError):
                continue
            if pgid == server.process.pid and b"triton_python_backend_stub" in argv:
                pids.append(int(proc.name))
    return pids


def test_killed_stub_is_restored_under_load(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING", logger="trimodal.triton.supervisor")
    config = echo_config(make_repo(tmp_path / "repo", ECHO), tmp_path / "work")
    server = TritonServer(config).start(timeout_s=60)
    supervisor = Supervisor(server, interval_s=0.5).start()
    assert supervisor.baseline == {"echo_0_0"}
    calls: list[tuple[float, float, str]] = []  # (start, duration, outcome)
    stop = threading.Event()

    def load() -> None:
        client = grpcclient.InferenceServerClient(config.grpc_url)
        tensor = grpcclient.InferInput("X", [1, 2], "FP32")
        tensor.set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
        while not stop.is_set() and len(calls) < 5000:
            started = time.monotonic()
            try:
                client.infer("echo", [tensor], client_timeout=DEADLINE_S)
                outcome = "ok"
            except InferenceServerException as exc:
                outcome = str(exc.status())
            calls.append((started, time.monotonic() - started, outcome))
            time.sleep(0.02)

    workers = [threading.Thread(target=load) for _ in range(4)]
    try:
        for worker in workers:
            worker.start()
        time.sleep(1.0)
        killed_at = time.monotonic()
        os.kill(_stub_pids(server)[0], signal.SIGKILL)
        deadline = killed_at + 30
        while time.monotonic() < deadline and not (supervisor.incidents and supervisor.incidents[-1].restored_at):
            time.sleep(0.2)
        time.sleep(8.0)  # gRPC channels reconnect with exponential backoff (1 s, 1.6 s, ...)
    finally:
        stop.set()
        for worker in workers:
            worker.join(timeout=10)
        supervisor.stop()
        server.stop()
    assert supervisor.incidents, "the dead stub was not noticed"
    incident = supervisor.incidents[0]
    assert "echo_0_0" in incident.reason
    assert incident.restored_at is not None and incident.restored_at - killed_at < 30
    assert any("service restored" in record.message for record in caplog.records)
    assert max(duration for _, duration, _ in calls) < DEADLINE_S + 1.0, "a call outlived its deadline"
    settled = [outcome for started, _, outcome in calls if started > incident.restored_at + 5.0]
    assert settled and all(outcome == "ok" for outcome in settled), set(settled)
    assert any(outcome != "ok" for _, _, outcome in calls), "the kill should have failed some calls"


def test_wedged_stage_is_restarted_by_the_probe(tmp_path: Path) -> None:
    """A stage that hangs (live, ready, stub alive: only a real inference notices) is restarted by the probe.

    The figures "noticed within / restored in" of benchmarks/RELIABILITY.md come from this test
    (build/reliability/wedge.json).
    """
    import json
    import urllib.error
    import urllib.request

    from echo_repo import WEDGE

    from trimodal.triton.supervisor import completed_requests

    repo = make_repo(tmp_path / "repo", WEDGE)
    config = echo_config(repo, tmp_path / "work")
    server = TritonServer(config).start(timeout_s=60)

    def probe() -> str | None:
        body = json.dumps({"inputs": [{"name": "X", "shape": [1, 2], "datatype": "FP32", "data": [1, 1]}]}).encode()
        request = urllib.request.Request(f"{config.http_url}/v2/models/echo/infer", data=body)
        try:
            with urllib.request.urlopen(request, timeout=1.5):
                return None
        except (urllib.error.URLError, OSError) as exc:
            return f"probe inference failed: {exc}"

    supervisor = Supervisor(
        server, interval_s=0.5, unhealthy_after=2, probe=probe, progress=completed_requests(config.metrics_url, "echo"),
        stop_grace_s=1.0,
    ).start()  # fmt: skip
    try:
        assert probe() is None
        (repo / "echo" / "1" / "wedge").write_text(str(server.process.pid))
        wedged_at = time.monotonic()
        with pytest.raises(InferenceServerException):  # this request hangs in the wedged stage
            _echo(config.grpc_url, timeout_s=1.0)
        assert server.is_ready() and server.is_live(), "readiness and liveness miss a wedged stage"
        while time.monotonic() - wedged_at < 30 and not (supervisor.incidents and supervisor.incidents[0].restored_at):
            time.sleep(0.1)
        after = _echo(config.grpc_url, timeout_s=5.0)
    finally:
        supervisor.stop()
        server.stop()
    assert supervisor.incidents, "the wedged stage was not noticed"
    incident = supervisor.incidents[0]
    figures = {"noticed_s": round(incident.detected_at - wedged_at, 2), "restored_s": round(incident.recovery_s, 2),
               "total_s": round(incident.restored_at - wedged_at, 2), "reason": incident.reason}  # fmt: skip
    results = Path(__file__).resolve().parents[2] / "build" / "reliability"
    results.mkdir(parents=True, exist_ok=True)
    (results / "wedge.json").write_text(json.dumps(figures, indent=2))
    assert "probe" in incident.reason, figures
    assert incident.restored_at - wedged_at < 15.0, figures
    np.testing.assert_allclose(after, [[2, 2]])


def _echo(url: str, timeout_s: float) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("X", [1, 2], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 2), dtype=np.float32))
    return client.infer("echo", [tensor], client_timeout=timeout_s).as_numpy("Y")
