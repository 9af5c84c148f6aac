"""tritonserver lifecycle on tiny repositories: readiness, errors with the log tail, clean stop."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from echo_repo import BROKEN, ECHO, echo_config, make_repo
from tritonclient.utils import InferenceServerException

from trimodal.errors import ServerError
from trimodal.triton.server import TritonServer, free_port

pytestmark = pytest.mark.integration


def _stubs_of(pgid: int) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pgid=,args="], capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if line.split(None, 1)[0] == str(pgid)]


def _infer(url: str, values: list[list[float]]) -> np.ndarray:
    client = grpcclient.InferenceServerClient(url)
    tensor = grpcclient.InferInput("X", [len(values), 2], "FP32")
    tensor.set_data_from_numpy(np.array(values, dtype=np.float32))
    return client.infer("echo", [tensor], client_timeout=10).as_numpy("Y")


def test_start_infer_reject_stop_leaves_nothing(tmp_path: Path) -> None:
    config = echo_config(make_repo(tmp_path / "repo", ECHO), tmp_path / "work")
    server = TritonServer(config).start(timeout_s=60)
    pgid = server.process.pid
    try:
        assert server.is_ready() and server.is_live()
        assert server.shm_segments(), "the Python backend should have created its shm region"
        np.testing.assert_allclose(_infer(config.grpc_url, [[1, 2]]), [[2, 4]])
        with pytest.raises(InferenceServerException) as info:
            _infer(config.grpc_url, [[-1, 2]])
        assert "INVALID_ARGUMENT" in str(info.value.status())
        assert "X: expected non-negative" in info.value.message()
        np.testing.assert_allclose(_infer(config.grpc_url, [[3, 4]]), [[6, 8]])
        assert "127.0.0.1" in " ".join(server.command())
    finally:
        code = server.stop()
    assert code == 0
    # Recorded when tritonserver exited, BEFORE stop() killed its group and removed segments (it can fail).
    report = server.last_stop
    assert report is not None and report.clean_exit, report
    assert report.stubs_left == () and report.shm_left == (), report
    assert _stubs_of(pgid) == []
    assert server.shm_segments() == []


def test_broken_model_fails_fast_with_log_tail(tmp_path: Path) -> None:
    config = echo_config(make_repo(tmp_path / "repo", BROKEN), tmp_path / "work")
    started = time.monotonic()
    server = TritonServer(config)
    with pytest.raises(ServerError) as info:
        server.start(timeout_s=60)
    assert time.monotonic() - started < 60
    assert "deliberately broken model" in str(info.value)
    assert server.process is None
    assert server.shm_segments() == []


def test_readiness_timeout_stops_the_server(tmp_path: Path) -> None:
    config = echo_config(make_repo(tmp_path / "repo", ECHO), tmp_path / "work")
    server = TritonServer(config)
    with pytest.raises(ServerError, match="not ready after"):
        server.start(timeout_s=0.01)
    assert server.process is None


def test_cli_serve_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    """`trimodal serve` on a tiny repository: ready, then SIGTERM -> exit 0, no stub, no shm left."""
    repo = make_repo(tmp_path / "repo", ECHO)
    ports = [str(free_port()) for _ in range(3)]
    env = {**os.environ, "TRIMODAL_TRITONSERVER": ""}
    process = subprocess.Popen(
        [sys.executable, "-m", "trimodal.cli", "serve", "--repository", str(repo), "--config-name", "",
         "--http-port", ports[0], "--grpc-port", ports[1], "--metrics-port", ports[2]],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        lines = []
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "Ctrl-C to stop" in line or process.poll() is not None:
                break
        assert "Ctrl-C to stop" in "".join(lines), "".join(lines)
        np.testing.assert_allclose(_infer(f"127.0.0.1:{ports[1]}", [[1, 1]]), [[2, 2]])
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=40) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    leftovers = [p for p in Path("/dev/shm").glob("trimodal_*") if str(process.pid) in p.name]
    assert leftovers == []
