"""Headless locust smoke runs of benchmarks/locustfile.py against the real server (and a wrong one)."""

import csv
import os
import subprocess
from pathlib import Path

import pytest

from trimodal.layout import Layout
from trimodal.triton.server import free_port

REPOSITORY = Layout.default().repository.root

pytestmark = pytest.mark.integration
LOCUSTFILE = Layout.default().root / "benchmarks" / "locustfile.py"


# locust lives in a venv of its own (`make loadtest`: the `loadtest` extra, no server, a current locust).
LOCUST = Path(os.environ.get("TRIMODAL_LOCUST", Layout.default().root / ".venv-load" / "bin" / "locust"))
LOG: dict[str, str] = {}


def _locust(
    host: str, seconds: int, out: Path, *extra: str, build_dir: Path | None = None
) -> tuple[int, dict[str, dict[str, str]], str]:
    """Run locust headless; return its exit code, the stats rows by name, and the failures CSV text."""
    if not LOCUST.exists():
        pytest.skip(f"{LOCUST} is missing: `make loadtest` installs locust in its own venv")
    env = {**os.environ, "TRIMODAL_BUILD_DIR": str(build_dir or Layout.default().build.root)}
    env.pop("TRIMODAL_URL", None)
    command = [str(LOCUST), "-f", str(LOCUSTFILE), "--headless", "-u", "4", "-r", "4", "-t", f"{seconds}s",
               "--host", host, "--csv", str(out), "--only-summary", "--stop-timeout", "5", "--loglevel", "WARNING",
               *extra]  # fmt: skip
    completed = subprocess.run(
        command, env=env, capture_output=True, text=True, timeout=seconds + 90, check=False, stdin=subprocess.DEVNULL
    )
    LOG[str(out)] = completed.stdout + completed.stderr
    stats_path = Path(f"{out}_stats.csv")
    assert stats_path.exists(), f"locust wrote no stats (exit {completed.returncode}):\n{completed.stderr[-3000:]}"
    with stats_path.open(newline="") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    failures = Path(f"{out}_failures.csv")
    return completed.returncode, rows, failures.read_text() if failures.exists() else ""


def _own_server(work: Path):
    """A server of this test's own, so that load left by earlier tests on the shared one cannot stall it."""
    from trimodal.triton.server import ServerConfig, TritonServer

    config = ServerConfig(
        model_repository=REPOSITORY, http_port=free_port(), grpc_port=free_port(),
        metrics_port=free_port(), work_dir=work, exit_timeout_s=5,
    )  # fmt: skip
    return TritonServer(config)


def test_locust_is_current_and_apart_from_the_server() -> None:
    if not LOCUST.exists():
        pytest.skip(f"{LOCUST} is missing: `make loadtest`")
    version = subprocess.run([str(LOCUST), "--version"], capture_output=True, text=True, check=True).stdout
    assert version.startswith("locust 2.47.0"), version
    python = LOCUST.parent / "python"
    probe = "import importlib.util as u; print(u.find_spec('pytriton') is None)"
    assert subprocess.run([str(python), "-c", probe], capture_output=True, text=True).stdout.strip() == "True"


def test_smoke_run_has_no_failures(tmp_path: Path) -> None:
    """Against a server as a remote user would: no local build (no test split), the bundled samples instead."""
    with _own_server(tmp_path / "triton").start(timeout_s=240) as server:
        code, rows, failures = _locust(server.config.grpc_url, 15, tmp_path / "ok", "--deadline-s", "20",
                                       build_dir=tmp_path / "no-build")  # fmt: skip
    assert "drawing the workload from the samples" in LOG[str(tmp_path / "ok")]
    total = rows["Aggregated"]
    requests, failed = int(total["Request Count"]), int(total["Failure Count"])
    assert requests > 0, "no request was made"
    assert failed == 0, f"{failed}/{requests} requests failed:\n{failures}"
    assert code == 0
    subsets = [name for name in rows if name.startswith("multimodal[")]
    assert "multimodal[image+text+audio]" in subsets and len(subsets) >= 4, subsets


def test_wrong_port_counts_failures(tmp_path: Path) -> None:
    code, rows, failures = _locust(f"127.0.0.1:{free_port()}", 5, tmp_path / "bad", "--deadline-s", "1")
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0
    assert int(total["Failure Count"]) == int(total["Request Count"]), "a failed call was counted as a success"
    assert code != 0 and "UNAVAILABLE" in failures.upper()


def test_deadline_is_enforced(tmp_path: Path) -> None:
    """Every call carries the deadline: with 20 ms (shorter than most answers take) calls fail DEADLINE_EXCEEDED.

    Runs against a server of its own. (A 1 ms deadline cancels requests while the server is still receiving them;
    such a flood wedges Triton 2.51: tests/integration/test_cancellation.py and benchmarks/RELIABILITY.md.)"""
    with _own_server(tmp_path / "triton").start(timeout_s=240) as server:
        code, rows, failures = _locust(server.config.grpc_url, 5, tmp_path / "deadline", "--deadline-s", "0.02")
    total = rows["Aggregated"]
    assert int(total["Failure Count"]) > 0 and code != 0
    assert "DEADLINE" in failures.upper()
