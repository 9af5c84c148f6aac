"""Serve in the foreground: the server, its supervisor and the signals that stop them, wired once.

``trimodal serve`` calls :func:`serve_forever`; SIGTERM and Ctrl-C stop the supervisor, drain the server
(every accepted request completes, later ones get UNAVAILABLE: :mod:`trimodal.triton.drain`), then stop
tritonserver (which removes its ``/dev/shm`` segments and stub processes). A second signal during the drain
stops at once.
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable
from pathlib import Path

from trimodal import contract
from trimodal.errors import TrimodalError
from trimodal.triton.install import missing_artifacts
from trimodal.triton.server import ServerConfig, StopReport, TritonServer
from trimodal.triton.supervisor import Supervisor, completed_requests, inference_probe

LOGGER = logging.getLogger(__name__)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def stop_on_signals() -> None:
    """Turn SIGTERM (and SIGINT) into KeyboardInterrupt so every ``finally`` stops the server."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)


def check_servable(config: ServerConfig) -> None:
    """Refuse to start the CPU target before the build has filled the repository.

    Raises:
        TrimodalError: naming the missing artifacts and the command that makes them.
    """
    if config.model_config_name != "cpu":
        return
    missing = missing_artifacts(Path(config.model_repository))
    if missing:
        raise TrimodalError(f"missing {', '.join(map(str, missing))}: run `trimodal build` first")


def supervisor_for(server: TritonServer, ready_timeout_s: float) -> Supervisor:
    """A supervisor whose probe is a real inference through the ensemble (when the repository has one)."""
    config = server.config
    has_ensemble = (Path(config.model_repository) / contract.ENSEMBLE).is_dir()
    probe = inference_probe(config.http_url, timeout_s=3.0) if has_ensemble else None
    progress = completed_requests(config.metrics_url, contract.ENSEMBLE)
    return Supervisor(
        server, ready_timeout_s=ready_timeout_s, probe=probe, progress=progress, unhealthy_after=2, stop_grace_s=1.0
    )


def serve_forever(
    config: ServerConfig,
    *,
    ready_timeout_s: float = 240.0,
    supervise: bool = True,
    on_ready: Callable[[TritonServer], None] | None = None,
) -> StopReport | None:
    """Start tritonserver (and its supervisor) and serve until SIGTERM or Ctrl-C; always stop both.

    Args:
        config: how to run the server.
        ready_timeout_s: how long to wait for readiness (also used for restarts).
        supervise: restart the server when a stub dies or the probe inference fails.
        on_ready: called once the server is ready (prints the addresses, runs the demo).

    Returns:
        What the stop found (:class:`~trimodal.triton.server.StopReport`, recorded before any forced cleanup).

    Raises:
        TrimodalError: if the repository is not built or the server does not start.
    """
    check_servable(config)
    server = TritonServer(config)
    supervisor = supervisor_for(server, ready_timeout_s)
    stop_on_signals()
    try:
        server.start(ready_timeout_s)
        if supervise:
            supervisor.start()
        if on_ready is not None:
            on_ready(server)
        while True:
            signal.pause()
    except KeyboardInterrupt:
        LOGGER.info("stopping: draining in-flight requests (signal again to stop at once)")
        supervisor.stop()
        server.drain()
    finally:
        supervisor.stop()
        server.stop()
    return server.last_stop


def describe_stop(report: StopReport | None) -> str:
    """One line for the log: exit code, time, what was left behind, how the drain went."""
    if report is None:
        return "stopped (the server had not started)"
    left = ", ".join([*report.stubs_left, *report.shm_left]) or "nothing"
    drain = (
        "no drain"
        if report.drain is None
        else (f"drain {'complete' if report.drain.complete else 'INCOMPLETE'} in {report.drain.seconds:.1f} s")
    )
    return (
        f"stopped: tritonserver exit code {report.exit_code} after {report.seconds:.1f} s; {drain}; left behind: {left}"
    )


def clean(report: StopReport | None) -> bool:
    """True when the server exited 0, drained completely (if it drained) and left nothing behind."""
    if report is None:
        return True
    drained = report.drain is None or report.drain.complete
    return report.clean_exit and drained and not report.stubs_left and not report.shm_left
