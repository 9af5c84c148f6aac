"""What the process table says about tritonservers: process groups, Python-backend stubs, stale servers.

Read from ``/proc`` (Linux), so it needs no extra package and sees processes of any parent.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

LOGGER = logging.getLogger(__name__)

PROC = Path("/proc")
STUB_BINARY = b"triton_python_backend_stub"
SERVER_BINARY = b"tritonserver"
PORT_FLAGS = ("--http-port=", "--grpc-port=", "--metrics-port=")


def _argv(pid: Path) -> list[bytes]:
    return (pid / "cmdline").read_bytes().split(b"\0")


def _pgid(pid: Path) -> int:
    return int((pid / "stat").read_text().rsplit(")", 1)[1].split()[2])


def _processes() -> list[Path]:
    return [entry for entry in PROC.iterdir() if entry.name.isdigit()]


def _state(proc: Path) -> str:
    return (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running process (not gone, not a zombie)."""
    try:
        return _state(PROC / str(pid)) != "Z"
    except (OSError, IndexError):
        return False


def group_members(pgid: int) -> list[int]:
    """Pids of every live process in a process group (a server and its stubs share one)."""
    members = []
    for proc in _processes():
        try:
            if _pgid(proc) == pgid and _state(proc) != "Z":
                members.append(int(proc.name))
        except (OSError, ValueError, IndexError):
            continue
    return members


def stop_group(process: subprocess.Popen, grace_s: float = 15.0) -> None:
    """SIGTERM the process group ``process`` leads, SIGKILL it after ``grace_s`` s; return once it has exited.

    Args:
        process: a child started with ``start_new_session=True`` (it leads its own process group).
        grace_s: how long to wait for a clean exit after SIGTERM.
    """
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def stub_processes(pgid: int) -> dict[int, str]:
    """The Python-backend stubs of a server's process group: pid -> model instance name (e.g. ``echo_0_0``)."""
    stubs = {}
    for proc in _processes():
        try:
            argv = _argv(proc)
            if argv and argv[0].endswith(STUB_BINARY) and len(argv) > 3 and _pgid(proc) == pgid:
                stubs[int(proc.name)] = argv[-3].decode(errors="replace")
        except (OSError, ValueError, IndexError):
            continue
    return stubs


INSTANCE_SUFFIX = re.compile(r"_\d+_\d+$")  # a stub serves instance <model>_<group>_<index>


def named_members(pgid: int, server: str = "tritonserver") -> dict[int, str]:
    """Every process of a server's group, named by what it runs: ``server``, or the model a stub serves.

    Args:
        pgid: the server's process group (its pid when started with ``start_new_session``).
        server: the name given to every process that is not a stub.

    Returns:
        pid -> ``server`` or model name (the instances of one model share its name).
    """
    stubs = {pid: INSTANCE_SUFFIX.sub("", instance) for pid, instance in stub_processes(pgid).items()}
    return {pid: stubs.get(pid, server) for pid in group_members(pgid)}


@dataclass(frozen=True)
class ServerProcess:
    """A running tritonserver found in the process table."""

    pid: int
    repository: str
    ports: tuple[int, ...]

    def describe(self) -> str:
        """One line for messages."""
        return f"pid {self.pid} serving {self.repository} on ports {', '.join(map(str, self.ports))}"


def _server_of(argv: list[bytes], pid: int) -> ServerProcess | None:
    if not argv or not argv[0].endswith(SERVER_BINARY):
        return None
    args = [arg.decode(errors="replace") for arg in argv[1:]]
    repository = next((a.split("=", 1)[1] for a in args if a.startswith("--model-repository=")), "")
    ports = tuple(int(a.split("=", 1)[1]) for a in args if a.startswith(PORT_FLAGS) and a.split("=", 1)[1].isdigit())
    return ServerProcess(pid=pid, repository=repository, ports=ports)


def running_servers(repository: Path | None = None) -> list[ServerProcess]:
    """Every running tritonserver (optionally only those serving ``repository``)."""
    found = []
    for proc in _processes():
        try:
            server = _server_of(_argv(proc), int(proc.name))
        except (OSError, ValueError):
            continue
        if server is not None and (repository is None or Path(server.repository) == Path(repository)):
            found.append(server)
    return found
