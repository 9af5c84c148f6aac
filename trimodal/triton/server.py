"""Start, watch and stop a real ``tritonserver``.

By default the binary shipped in the ``nvidia-pytriton`` wheel is used (Triton 2.51 with the Python
backend), started with ``--model-config-name cpu`` so that the encoders run their ONNX graphs in ONNX
Runtime. ``TRIMODAL_TRITONSERVER`` points at another binary (e.g. inside NVIDIA's container).

The server always runs in its own process group, watched by a :mod:`~trimodal.triton.watchdog` process
that stops it if the process that started it dies (even by SIGKILL). :meth:`TritonServer.start` refuses
ports held by a stale server (naming its pid), waits for readiness with a timeout and, on failure, stops
everything and raises :class:`ServerError` with the tail of the log (a Python stub that cannot start makes
Triton hang forever otherwise). With explicit model control (the default), :meth:`TritonServer.drain` lets
every accepted ensemble request finish first (:mod:`trimodal.triton.drain`). :meth:`TritonServer.stop`
sends SIGTERM, waits ``exit_timeout + 5`` seconds, records what was left (:class:`StopReport`), kills it
and removes this server's ``/dev/shm`` segments.
"""

from __future__ import annotations

import contextlib
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from trimodal import contract
from trimodal.errors import ServerError
from trimodal.layout import Layout, pytriton_dir, pytriton_libs
from trimodal.triton.processes import group_members, running_servers, stub_processes

if TYPE_CHECKING:
    from trimodal.triton.drain import DrainReport

LOGGER = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
# APIs that need the admin key (header ADMIN_HEADER): whatever changes the server (loading models, shared-memory
# regions, log and trace settings). Inference, health, metadata, statistics and model-config READ stay open:
# perf_analyzer over gRPC (it cannot send headers there), Model Analyzer and tritonclient's get_model_config need
# the config, and it holds nothing the committed model_repository/*.pbtxt does not (deploy/SECURITY.md).
RESTRICTED_APIS: tuple[str, ...] = ("model-repository", "shared-memory", "logging", "trace")
ADMIN_HEADER = "admin-key"  # the HTTP header; gRPC clients send it as GRPC_ADMIN_HEADER metadata
GRPC_ADMIN_HEADER = f"triton-grpc-protocol-{ADMIN_HEADER}"


@dataclass(frozen=True)
class TlsConfig:
    """gRPC TLS settings.

    The server presents ``server_cert``/``server_key``; with ``root_cert`` and ``mutual``, clients must present
    a certificate signed by that root (mTLS).
    """

    server_cert: Path
    server_key: Path
    root_cert: Path | None = None
    mutual: bool = False

    def args(self) -> list[str]:
        """The tritonserver flags for these settings."""
        args = ["--grpc-use-ssl=true", f"--grpc-server-cert={self.server_cert}", f"--grpc-server-key={self.server_key}"]
        if self.root_cert is not None:
            args.append(f"--grpc-root-cert={self.root_cert}")
        if self.mutual:
            if self.root_cert is None:
                raise ServerError("TLS: mutual authentication needs root_cert (the CA that signs client certificates)")
            args.append("--grpc-use-ssl-mutual=true")
        return args


@dataclass
class ServerConfig:
    """How to run tritonserver. Defaults are Triton's ports bound to loopback."""

    model_repository: Path
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    model_config_name: str | None = "cpu"
    exit_timeout_s: int = 30
    log_verbose: int = 0
    work_dir: Path = field(default_factory=lambda: Layout.default().build.triton)
    binary: Path | None = None
    # Key that unlocks RESTRICTED_APIS (header "admin-key"); None = a random key per start, written to
    # work_dir/admin-key (mode 0600). The restricted APIs are never left open.
    admin_key: str | None = None
    tls: TlsConfig | None = None
    extra_args: Sequence[str] = field(default_factory=tuple)
    # "explicit": every model is loaded at start and the model-repository API (behind the admin key) can swap
    # the ensemble for its drain stand-in; "none": the repository is fixed (no drain).
    model_control: Literal["explicit", "none"] = "explicit"
    drain_timeout_s: float = 20.0
    watchdog_grace_s: float = 2.0

    @property
    def grpc_url(self) -> str:
        """``host:port`` of the gRPC endpoint."""
        return f"{self.host}:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        """``http://host:port`` of the HTTP endpoint."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        """URL of the Prometheus metrics endpoint."""
        return f"http://{self.host}:{self.metrics_port}/metrics"


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free right now on ``host`` (for tests and parallel servers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_tritonserver(binary: Path | None = None) -> Path:
    """Locate the tritonserver binary: argument, ``TRIMODAL_TRITONSERVER``, else the pytriton wheel's.

    Raises:
        ServerError: if it does not exist.
    """
    candidate = binary or os.environ.get("TRIMODAL_TRITONSERVER")
    path = Path(candidate) if candidate else pytriton_dir() / "bin" / "tritonserver"
    if not path.is_file():
        raise ServerError(f"tritonserver binary not found at {path}")
    return path


def prepare_backends(work_dir: Path) -> Path:
    """Lay out a backends directory with the Python backend and the stub for this interpreter.

    Args:
        work_dir: where to create ``backends/``.

    Returns:
        The backends directory to pass as ``--backend-directory``.
    """
    source = pytriton_dir()
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.is_file():
        raise ServerError(f"no Triton Python backend stub for Python {version} in {stub.parent.parent}")
    target = work_dir / "backends" / "python"
    target.mkdir(parents=True, exist_ok=True)
    for item in [*(source / "backends" / "python").iterdir(), stub]:
        if item.is_file():
            destination = target / item.name
            if not destination.exists() or destination.stat().st_size != item.stat().st_size:
                shutil.copy2(item, destination)
    return target.parent


def _control_args(mode: str) -> list[str]:
    if mode == "explicit":
        return ["--model-control-mode=explicit", "--load-model=*"]
    if mode == "none":
        return ["--model-control-mode=none"]
    raise ServerError(f"model_control: expected 'explicit' or 'none', got {mode!r}")


def check_ports_free(config: ServerConfig) -> None:
    """Refuse to start on ports that are taken, naming a stale tritonserver that holds them.

    Raises:
        ServerError: naming the port, and the stale server's pid and repository when one holds it.
    """
    wanted = {config.http_port, config.grpc_port, config.metrics_port}
    for port in sorted(wanted):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((config.host, port))
                continue
            except OSError:
                pass
        holders = [server for server in running_servers() if port in server.ports]
        who = (
            f"a stale tritonserver ({holders[0].describe()}); stop it with `kill {holders[0].pid}`"
            if holders
            else ("another process")
        )
        raise ServerError(f"port {port} on {config.host} is already in use by {who}")


@dataclass(frozen=True)
class StopReport:
    """What :meth:`TritonServer.stop` found, recorded BEFORE it killed or removed anything."""

    exit_code: int | None
    clean_exit: bool
    seconds: float
    stubs_left: tuple[str, ...]
    shm_left: tuple[str, ...]
    drain: DrainReport | None = None


def server_env(embedded: bool) -> dict[str, str]:
    """The environment tritonserver runs in: this venv's bin first on PATH, the wheel's libraries when embedded.

    Args:
        embedded: the binary is the nvidia-pytriton wheel's (its Python stub needs ``nvidia_pytriton.libs``).

    Returns:
        A copy of this process's environment with PATH (and LD_LIBRARY_PATH) set.
    """
    env = dict(os.environ)
    # The Python stub runs in isolated mode: it sees this venv's packages only when its bin is first on PATH.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    if embedded:
        libs = str(pytriton_libs())
        env["LD_LIBRARY_PATH"] = os.pathsep.join(filter(None, [libs, env.get("LD_LIBRARY_PATH")]))
    return env


class TritonServer:
    """A tritonserver process: ``with TritonServer(config) as server: ...`` starts and always stops it."""

    def __init__(self, config: ServerConfig) -> None:
        self.config = config
        self.process: subprocess.Popen[bytes] | None = None
        self.shm_prefix = f"trimodal_{os.getpid()}_{uuid.uuid4().hex[:8]}_"
        self.log_path = config.work_dir / f"tritonserver-{config.grpc_port}.log"
        self.admin_key = config.admin_key or os.environ.get("TRIMODAL_ADMIN_KEY") or secrets.token_hex(16)
        self.last_stop: StopReport | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None
        self._watchdog_pipe: int | None = None
        self._drained: DrainReport | None = None

    def command(self) -> list[str]:
        """The full tritonserver command line."""
        cfg = self.config
        binary = find_tritonserver(cfg.binary)
        embedded = cfg.binary is None and not os.environ.get("TRIMODAL_TRITONSERVER")
        args = [
            str(binary),
            f"--model-repository={cfg.model_repository}",
            *_control_args(cfg.model_control),
            "--strict-readiness=true",
            f"--exit-timeout-secs={cfg.exit_timeout_s}",
            f"--http-address={cfg.host}",
            f"--http-port={cfg.http_port}",
            f"--grpc-address={cfg.host}",
            f"--grpc-port={cfg.grpc_port}",
            f"--metrics-address={cfg.host}",
            f"--metrics-port={cfg.metrics_port}",
            "--allow-metrics=true",
            "--allow-gpu-metrics=false",
            f"--backend-config=python,shm-region-prefix-name={self.shm_prefix}",
            f"--log-verbose={cfg.log_verbose}",
            f"--grpc-restricted-protocol={','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={self.admin_key}",
            f"--http-restricted-api={','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={self.admin_key}",
        ]
        if cfg.tls is not None:
            args.extend(cfg.tls.args())
        if embedded:
            args.append(f"--backend-directory={prepare_backends(cfg.work_dir)}")
        if cfg.model_config_name:
            args.append(f"--model-config-name={cfg.model_config_name}")
        args.extend(cfg.extra_args)
        return args

    def start(self, timeout_s: float = 180.0) -> TritonServer:
        """Start the server and wait until it is ready.

        Args:
            timeout_s: how long to wait for readiness.

        Returns:
            self.

        Raises:
            ServerError: if it exits or is not ready in time (with the log tail); the server is stopped.
        """
        if self.process is not None:
            raise ServerError("server already started")
        self.config.work_dir.mkdir(parents=True, exist_ok=True)
        key_file = self.config.work_dir / "admin-key"
        key_file.write_text(self.admin_key + "\n")
        key_file.chmod(0o600)
        check_ports_free(self.config)
        command = self.command()
        embedded = self.config.binary is None and not os.environ.get("TRIMODAL_TRITONSERVER")
        LOGGER.info("starting tritonserver: gRPC %s, HTTP %s", self.config.grpc_url, self.config.http_url)
        LOGGER.debug("command: %s", " ".join(command).replace(self.admin_key, "<admin-key>"))
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=server_env(embedded), start_new_session=True
            )
        self._start_watchdog(self.process.pid)
        try:
            self.wait_ready(timeout_s)
        except BaseException:
            self.stop()
            raise
        LOGGER.info("tritonserver ready (pid %d, log %s)", self.process.pid, self.log_path)
        return self

    def is_ready(self) -> bool:
        """True when the HTTP readiness endpoint answers 200 (every model is ready)."""
        try:
            with urllib.request.urlopen(f"{self.config.http_url}/v2/health/ready", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def is_live(self) -> bool:
        """True when the HTTP liveness endpoint answers 200."""
        try:
            with urllib.request.urlopen(f"{self.config.http_url}/v2/health/live", timeout=2) as response:
                return response.status == 200
        except (urllib.error.URLError, OSError):
            return False

    def wait_ready(self, timeout_s: float) -> None:
        """Poll readiness until ``timeout_s``.

        Raises:
            ServerError: if the process exits or the timeout passes, with the log tail.
        """
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process is None or self.process.poll() is not None:
                code = None if self.process is None else self.process.returncode
                raise ServerError(f"tritonserver exited with code {code} before it was ready:\n{self.log_tail()}")
            if self.is_ready():
                return
            time.sleep(0.25)
        raise ServerError(f"tritonserver was not ready after {timeout_s:.0f} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the server log."""
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def _start_watchdog(self, pid: int) -> None:
        read_end, self._watchdog_pipe = os.pipe()
        try:
            self._watchdog = subprocess.Popen(
                [sys.executable, "-m", "trimodal.triton.watchdog", str(pid), self.shm_prefix,
                 str(self.config.watchdog_grace_s)],
                stdin=read_end, start_new_session=True,
            )  # fmt: skip
        finally:
            os.close(read_end)

    def _release_watchdog(self) -> None:
        """Tell the watchdog the server was stopped on purpose (it exits without touching anything)."""
        from trimodal.triton.watchdog import STOPPED

        pipe, self._watchdog_pipe = self._watchdog_pipe, None
        if pipe is not None:
            with contextlib.suppress(OSError):
                os.write(pipe, STOPPED)
            os.close(pipe)
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                watchdog.wait(timeout=10)

    def drain(self) -> DrainReport | None:
        """Let every accepted ensemble request finish; later ones get UNAVAILABLE (:mod:`~trimodal.triton.drain`).

        Returns:
            The drain report, or None when there is nothing to drain (no ensemble, or model control ``none``).

        Raises:
            ServerError: if the server refuses the swap.
        """
        from trimodal.triton.drain import drain_ensemble

        if self.process is None or self.config.model_control != "explicit":
            return None
        if not (Path(self.config.model_repository) / contract.ENSEMBLE).is_dir():
            return None
        self._drained = drain_ensemble(self, timeout_s=self.config.drain_timeout_s)
        return self._drained

    def _close_after_drain(self, pid: int) -> None:
        """Every accepted request has completed: refuse the rest at the socket before Triton starts unloading.

        Closing the HTTP and gRPC ports (:mod:`~trimodal.triton.frontdoor`) turns what Triton 2.51 would answer
        in its last second (NOT_FOUND while the stand-in unloads, CANCELLED when its gRPC server stops) into
        UNAVAILABLE for every client. Where the kernel refuses, the stand-in is unloaded first instead, which
        leaves about a second of NOT_FOUND.
        """
        from trimodal.triton.drain import retire_stand_in
        from trimodal.triton.frontdoor import close_front_door

        try:
            ports = (self.config.http_port, self.config.grpc_port)
            close_front_door(pid, ports, keep_listening=(self.config.http_port,))  # see frontdoor: libevent
        except OSError as exc:
            LOGGER.warning("could not close the server's ports before stopping it (%s); unloading the stand-in", exc)
            retire_stand_in(self)

    def stop(self, grace_s: float | None = None) -> int | None:
        """SIGTERM the server, wait ``grace_s`` (default ``exit_timeout + 5``) s, SIGKILL its group, remove shm.

        What was left when the server exited (stub processes, /dev/shm segments) is recorded in
        :attr:`last_stop` before anything is killed or removed, so tests can assert on it.

        Args:
            grace_s: how long to wait for a clean exit after SIGTERM.

        Returns:
            The server's exit code (None if it was never started).
        """
        process, self.process = self.process, None
        if process is None:
            return None
        started = time.monotonic()
        code = process.poll()
        if code is None and self._drained is not None and self._drained.complete:
            self._close_after_drain(process.pid)
        if code is None:
            # SIGTERM to tritonserver only: it drains in-flight requests and stops its Python stubs itself
            # (signalling the whole group would kill the stubs under the requests they are serving).
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=self.config.exit_timeout_s + 5 if grace_s is None else grace_s)
            except subprocess.TimeoutExpired:
                LOGGER.warning("tritonserver did not exit in time; killing it")
                code = None
        self.last_stop = StopReport(
            exit_code=code, clean_exit=code == 0, seconds=time.monotonic() - started,
            stubs_left=tuple(sorted(stub_processes(process.pid).values())),
            shm_left=tuple(p.name for p in self.shm_segments()), drain=self._drained,
        )  # fmt: skip
        # Stubs live in the same process group: make sure none outlives the server.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if code is None:
            code = process.wait(timeout=10)
        self._remove_shm()
        self._release_watchdog()
        self._drained = None
        LOGGER.info("tritonserver stopped (exit code %s)", code)
        return code

    def _remove_shm(self) -> None:
        for segment in SHM_DIR.glob(f"{self.shm_prefix}*"):
            with contextlib.suppress(OSError):
                segment.unlink()

    def stub_instances(self) -> set[str]:
        """Names of the model instances whose Python-backend stub process is alive (e.g. ``echo_0_0``).

        Triton 2.51 keeps reporting a model ready after its stub died, so this census is how a dead stub is
        noticed (see :mod:`trimodal.triton.supervisor`).
        """
        if self.process is None:
            return set()
        return set(stub_processes(self.process.pid).values())

    def group_pids(self) -> list[int]:
        """Pids of every live process of the server's group (tritonserver and its stubs)."""
        return [] if self.process is None else group_members(self.process.pid)

    def shm_segments(self) -> list[Path]:
        """This server's /dev/shm segments (empty after :meth:`stop`)."""
        return sorted(SHM_DIR.glob(f"{self.shm_prefix}*"))

    def __enter__(self) -> TritonServer:
        if self.process is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@contextlib.contextmanager
def serving(config: ServerConfig, timeout_s: float = 180.0) -> Iterator[TritonServer]:
    """Context manager: a started server that is always stopped.

    Args:
        config: server settings.
        timeout_s: readiness timeout.

    Yields:
        The ready server.
    """
    server = TritonServer(config).start(timeout_s)
    try:
        yield server
    finally:
        server.stop()
