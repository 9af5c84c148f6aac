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
from trimodal.triton.server import ServerConfig, TritonServer
from trimodal.triton.supervisor import Supervisor, inference_probe

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
    probe = inference_probe(config.http_url) if has_ensemble else None
    return Supervisor(server, ready_timeout_s=ready_timeout_s, probe=probe)


def serve_forever(
    config: ServerConfig,
    *,
    ready_timeout_s: float = 240.0,
    supervise: bool = True,
    on_ready: Callable[[TritonServer], None] | None = None,
) -> None:
    """Start tritonserver (and its supervisor) and serve until SIGTERM or Ctrl-C; always stop both.

    Args:
        config: how to run the server.
        ready_timeout_s: how long to wait for readiness (also used for restarts).
        supervise: restart the server when a stub dies or the probe inference fails.
        on_ready: called once the server is ready (prints the addresses, runs the demo).

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
