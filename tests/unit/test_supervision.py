"""Supervisor decisions, the drain stand-in's config and the watchdog, without a server."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tritonclient.grpc import model_config_pb2 as mc

from trimodal import contract
from trimodal.spec import load_spec
from trimodal.triton.config import drain_config, ensemble_config
from trimodal.triton.drain import stand_in_request
from trimodal.triton.supervisor import Supervisor
from trimodal.triton.watchdog import STOPPED


class FakeServer:
    """What the supervisor reads from a server: alive, ready, its stubs."""

    def __init__(self) -> None:
        self.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        self.restarts = 0

    def stub_instances(self) -> set[str]:
        return {"m_0_0"}

    def is_ready(self) -> bool:
        return True


def _run_supervisor(progress_values: list[float], checks: int) -> Supervisor:
    server = FakeServer()
    values = iter(progress_values)
    supervisor = Supervisor(
        server, interval_s=0.01, unhealthy_after=2, probe=lambda: "probe inference failed: HTTP 503",
        progress=lambda: next(values, progress_values[-1]),
    )  # type: ignore[arg-type]  # fmt: skip
    restarted: list[str] = []
    supervisor.restart = lambda reason: restarted.append(reason)  # type: ignore[method-assign]
    supervisor.start()
    time.sleep(checks * 0.01 + 0.3)
    supervisor.stop()
    server.process.kill()
    supervisor.restarted = restarted  # type: ignore[attr-defined]
    return supervisor


def test_failed_probes_while_requests_complete_are_overload_not_a_wedge() -> None:
    supervisor = _run_supervisor([float(n) for n in range(1000)], checks=20)
    assert supervisor.restarted == []  # type: ignore[attr-defined]


def test_failed_probes_with_nothing_completing_restart() -> None:
    supervisor = _run_supervisor([5.0], checks=20)
    assert supervisor.restarted, "a wedged server (probe failing, nothing completing) was not restarted"  # type: ignore[attr-defined]
    assert "nothing completing" in supervisor.restarted[0]  # type: ignore[attr-defined]


def test_drain_stand_in_has_the_ensembles_tensors_and_no_labels() -> None:
    spec = load_spec()
    ensemble = ensemble_config(spec, contract.model_io(spec))
    stand_in = drain_config(ensemble)
    assert stand_in.name == ensemble.name and stand_in.backend == "python"
    assert [t.name for t in stand_in.input] == [t.name for t in ensemble.input]
    assert [t.name for t in stand_in.output] == [t.name for t in ensemble.output]
    assert any(t.label_filename for t in ensemble.output), "the ensemble should have a label file"
    assert not any(t.label_filename for t in stand_in.output)
    assert stand_in.max_batch_size == ensemble.max_batch_size
    assert not stand_in.HasField("ensemble_scheduling")
    assert stand_in.instance_group[0].kind == mc.ModelInstanceGroup.KIND_CPU
    request = stand_in_request(ensemble)
    assert set(request["parameters"]) == {"config", "file:1/model.py"}
    assert '"backend": "python"' in request["parameters"]["config"]


def _group(tmp_path: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)


def _watch(pid: int, prefix: str) -> tuple[subprocess.Popen[bytes], int]:
    read_end, write_end = os.pipe()
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "trimodal.triton.watchdog", str(pid), prefix, "0.5"], stdin=read_end,
        start_new_session=True,
    )  # fmt: skip
    os.close(read_end)
    return watchdog, write_end


def test_watchdog_stops_the_server_when_its_parent_is_gone(tmp_path: Path) -> None:
    server = _group(tmp_path)
    segment = Path("/dev/shm") / f"trimodal_test_{os.getpid()}_seg"
    segment.write_bytes(b"x")
    watchdog, pipe = _watch(server.pid, f"trimodal_test_{os.getpid()}_")
    os.close(pipe)  # what the kernel does when the parent dies, however it dies
    assert watchdog.wait(timeout=10) == 0
    assert server.wait(timeout=5) in (-signal.SIGTERM, -signal.SIGKILL)
    assert not segment.exists()


def test_watchdog_leaves_a_server_stopped_on_purpose_alone(tmp_path: Path) -> None:
    server = _group(tmp_path)
    watchdog, pipe = _watch(server.pid, "trimodal_none_")
    os.write(pipe, STOPPED)
    os.close(pipe)
    assert watchdog.wait(timeout=10) == 0
    time.sleep(0.2)
    assert server.poll() is None, "the watchdog killed a server it was told had been stopped"
    server.kill()
    server.wait(timeout=5)
