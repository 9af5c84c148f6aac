"""Stopping `trimodal serve` (the embedded target): SIGTERM drains every accepted request; SIGKILL leaves nothing.

SIGTERM with 32 requests in flight through the ensemble: every request the server accepted completes OK and
every later one is refused with UNAVAILABLE (the drain stand-in's answer, then the closed ports': connection
closed or refused; never NOT_FOUND, CANCELLED or an ensemble step failure), `trimodal serve` exits 0 within
30 s, and nothing is left behind: `serve` reports what tritonserver left at exit (recorded before any forced
cleanup), and the test checks the process table and /dev/shm itself.
`TRIMODAL_FULL_RELIABILITY=1` runs it 20 times in a row (2 otherwise). Figures go to build/reliability/
(see benchmarks/RELIABILITY.md).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from trimodal import contract
from trimodal.bench.traffic import samples_from_split
from trimodal.client import Sample, build_inputs, build_outputs, server_timeout_us
from trimodal.layout import Layout
from trimodal.runtime.backends.drain import DRAIN_MESSAGE
from trimodal.triton.install import missing_artifacts
from trimodal.triton.processes import group_members
from trimodal.triton.server import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]
LAYOUT = Layout.default()
FULL = os.environ.get("TRIMODAL_FULL_RELIABILITY") == "1"
RUNS = 20 if FULL else 2
IN_FLIGHT = 32
DEADLINE_S = 30.0
RESULTS = LAYOUT.build.root / "reliability"


class Serve:
    """`python -m trimodal.cli serve` on free ports, with its output collected."""

    def __init__(self, work: Path, ports: tuple[int, int, int] | None = None) -> None:
        if missing_artifacts(LAYOUT.repository.root):
            pytest.skip("model repository not built: run `make build` first")
        self.ports = ports or (free_port(), free_port(), free_port())
        env = {**os.environ, "TRIMODAL_BUILD_DIR": str(work), "TRIMODAL_TRITONSERVER": ""}
        command = [sys.executable, "-m", "trimodal.cli", "serve", "--repository", str(LAYOUT.repository.root),
                   "--http-port", str(self.ports[0]), "--grpc-port", str(self.ports[1]),
                   "--metrics-port", str(self.ports[2])]  # fmt: skip
        self.log = work / "serve.out"
        work.mkdir(parents=True, exist_ok=True)
        with self.log.open("w") as out:
            self.process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, text=True)
        self.url = f"127.0.0.1:{self.ports[1]}"

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_serving(self, timeout_s: float = 240.0) -> int:
        """Wait for "Ctrl-C to stop"; return tritonserver's pid (its process group)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            text = self.output()
            if "Ctrl-C to stop" in text:
                return int(re.search(r"tritonserver ready \(pid (\d+)", text).group(1))
            assert self.process.poll() is None, text[-3000:]
            time.sleep(0.2)
        raise AssertionError(f"not serving after {timeout_s} s:\n{self.output()[-3000:]}")

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


async def _worker(url: str, samples: list[Sample], stop_at: list[float], outcomes: list[tuple], n: int) -> None:
    import tritonclient.grpc.aio as aioclient
    from tritonclient.utils import InferenceServerException

    client = aioclient.InferenceServerClient(url)
    index = n
    try:
        while time.monotonic() < stop_at[0]:
            sample = samples[index % len(samples)]
            index += IN_FLIGHT
            sent = time.monotonic()
            try:
                await client.infer(
                    contract.ENSEMBLE, build_inputs([sample], aioclient), outputs=build_outputs(aioclient, 1),
                    client_timeout=DEADLINE_S, timeout=server_timeout_us(DEADLINE_S),
                )  # fmt: skip
                outcomes.append((sent, "OK", ""))
            except InferenceServerException as exc:
                status = str(exc.status()).rsplit(".", 1)[-1]
                outcomes.append((sent, status, exc.message() or ""))
                await asyncio.sleep(0.05)
    finally:
        await client.close()


async def _traffic_with_sigterm(serve: Serve, samples: list[Sample]) -> tuple[list[tuple], float, float]:
    stop_at = [time.monotonic() + 120.0]
    outcomes: list[tuple] = []
    workers = [asyncio.ensure_future(_worker(serve.url, samples, stop_at, outcomes, n)) for n in range(IN_FLIGHT)]
    await asyncio.sleep(2.0)  # 32 requests in flight, continuously
    sigterm_at = time.monotonic()
    serve.process.send_signal(signal.SIGTERM)
    code = await asyncio.to_thread(serve.process.wait, 60)
    exited_at = time.monotonic()
    stop_at[0] = exited_at + 1.0  # keep sending a little after the exit (connection refused = UNAVAILABLE)
    await asyncio.gather(*workers)
    assert code == 0, serve.output()[-3000:]
    return outcomes, sigterm_at, exited_at - sigterm_at


def _refused(outcome: tuple) -> bool:
    """A refusal, not a loss: UNAVAILABLE from the stand-in, a closed connection or a refused one. An ensemble
    step failure ("in ensemble ...") is an accepted request lost."""
    return outcome[1] == "UNAVAILABLE" and "in ensemble" not in outcome[2]


def _classify(outcomes: list[tuple], sigterm_at: float) -> dict[str, object]:
    before = [o for o in outcomes if o[0] < sigterm_at]
    after = [o for o in outcomes if o[0] >= sigterm_at]
    lost = [o for o in outcomes if o[1] != "OK" and not _refused(o)]
    return {
        "sent_before_sigterm": len(before), "ok_before_sigterm": sum(o[1] == "OK" for o in before),
        "after_sigterm": dict(Counter(o[1] for o in after)),
        "refusal_messages": sorted({o[2][:90] for o in after if o[1] != "OK"}),
        "lost": [(o[1], o[2][:120]) for o in lost][:5], "lost_count": len(lost),
        "stand_in_refusals": sum(DRAIN_MESSAGE in o[2] for o in after),
    }  # fmt: skip


def _leftovers(pgid: int, serve_pid: int) -> dict[str, list]:
    return {
        "processes": group_members(pgid),
        "shm": sorted(p.name for p in Path("/dev/shm").glob(f"trimodal_{serve_pid}_*")),
    }


def test_sigterm_with_32_in_flight_loses_nothing(tmp_path: Path) -> None:
    samples = samples_from_split(LAYOUT.build.root, count=64)
    runs = []
    for run in range(RUNS):
        serve = Serve(tmp_path / f"run{run}")
        try:
            pgid = serve.wait_serving()
            outcomes, sigterm_at, exit_s = asyncio.run(_traffic_with_sigterm(serve, samples))
        finally:
            serve.kill()
        summary = {"run": run, "exit_s": round(exit_s, 2), **_classify(outcomes, sigterm_at)}
        summary["serve_said"] = [line for line in serve.output().splitlines() if line.startswith("stopped:")]
        summary["left"] = _leftovers(pgid, serve.process.pid)  # nothing has cleaned up after `serve` here
        runs.append(summary)
        _record({"runs": runs})
        assert summary["ok_before_sigterm"] == summary["sent_before_sigterm"] >= IN_FLIGHT, summary
        assert summary["lost_count"] == 0, summary
        assert set(summary["after_sigterm"]) <= {"OK", "UNAVAILABLE"}, summary
        assert summary["stand_in_refusals"] > 0, "no request was refused by the drain stand-in after SIGTERM"
        assert exit_s < 30.0, summary
        assert summary["serve_said"] and "left behind: nothing" in summary["serve_said"][0], summary
        assert "drain complete" in summary["serve_said"][0], summary
        assert summary["left"] == {"processes": [], "shm": []}, summary


def _record(payload: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"sigterm{'-full' if FULL else ''}.json").write_text(json.dumps(payload, indent=2))


def _port_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def _load(url: str, samples: list[Sample], seconds: float) -> None:
    stop_at = [time.monotonic() + seconds]
    outcomes: list[tuple] = []
    await asyncio.gather(*(_worker(url, samples, stop_at, outcomes, n) for n in range(8)))


def test_sigkill_of_serve_leaves_nothing_running(tmp_path: Path) -> None:
    """`trimodal serve` killed hard under load: within 5 s no process of its server remains, the ports are free,
    and the next `trimodal serve` on the same ports starts cleanly."""
    samples = samples_from_split(LAYOUT.build.root, count=32)
    serve = Serve(tmp_path / "first")
    pgid = serve.wait_serving()
    loop = asyncio.new_event_loop()
    load = loop.create_task(_load(serve.url, samples, 4.0))
    loop.run_until_complete(asyncio.sleep(1.5))
    os.kill(serve.process.pid, signal.SIGKILL)
    killed_at = time.monotonic()
    serve.process.wait(timeout=10)
    while time.monotonic() - killed_at < 5.0 and (group_members(pgid) or not all(map(_port_free, serve.ports))):
        time.sleep(0.1)
    gone_s = time.monotonic() - killed_at
    left = _leftovers(pgid, serve.process.pid)
    ports_free = [_port_free(port) for port in serve.ports]
    loop.run_until_complete(load)
    loop.close()
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "sigkill.json").write_text(json.dumps({"gone_s": round(gone_s, 2), "left": left}, indent=2))
    assert left == {"processes": [], "shm": []} and all(ports_free), (left, ports_free, gone_s)
    assert gone_s < 5.0
    second = Serve(tmp_path / "second", ports=serve.ports)
    try:
        second.wait_serving()
    finally:
        second.process.send_signal(signal.SIGTERM)
        assert second.process.wait(timeout=60) == 0, second.output()[-2000:]
