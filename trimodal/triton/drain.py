"""Drain a running server without losing an accepted request (explicit model control, admin key).

Triton 2.51 does not drain ensemble requests that are between two steps at SIGTERM: their next step is
refused because the server is stopping. So the ensemble is drained first, with Triton's own model
lifecycle: :func:`drain_ensemble` loads a stand-in under the ensemble's name (a Python model that answers
UNAVAILABLE, see :mod:`trimodal.runtime.backends.drain`); Triton swaps it in once it is ready, keeps the old
ensemble until every request it accepted has completed, then unloads it and logs
``successfully unloaded '<ensemble>'``. Requests that arrive before the swap are served normally; requests
after it get UNAVAILABLE (retry elsewhere). When that log line is there and no composing model has a
pending request, the composing models are unloaded (each after its in-flight requests), the server's ports
are closed (:mod:`trimodal.triton.frontdoor`: later clients get UNAVAILABLE from the socket) and SIGTERM
finds nothing in flight.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2 as mc

from trimodal import contract
from trimodal.errors import ServerError
from trimodal.triton.config import drain_config

if TYPE_CHECKING:
    from trimodal.triton.server import TritonServer

LOGGER = logging.getLogger(__name__)

DRAIN_MODEL = "trimodal.runtime.backends.drain:DrainModel"
PENDING = re.compile(r'^nv_inference_pending_request_count\{model="([^"]+)",version="[^"]+"\} (\S+)$', re.M)


@dataclass(frozen=True)
class DrainReport:
    """How a drain went: seconds from start to idle, and whether the old ensemble was seen unloaded."""

    seconds: float
    swapped_s: float
    unloaded: bool
    idle: bool

    @property
    def complete(self) -> bool:
        """True when every accepted request has completed (safe to SIGTERM)."""
        return self.unloaded and self.idle


def _request(server: TritonServer, path: str, body: dict | None = None, timeout_s: float = 60.0) -> bytes:
    from trimodal.triton.server import ADMIN_HEADER

    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        f"{server.config.http_url}{path}",
        data=data,
        headers={ADMIN_HEADER: server.admin_key, "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            return response.read()
    except urllib.error.HTTPError as exc:
        raise ServerError(
            f"drain: {path} answered HTTP {exc.code}: {exc.read().decode(errors='replace')[:300]}"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"drain: {path} failed: {exc}") from None


def stand_in_request(ensemble: mc.ModelConfig) -> dict:
    """The model-repository load request that swaps the stand-in in for ``ensemble``."""
    from trimodal.triton.repository import shim_source

    config = json_format.MessageToJson(drain_config(ensemble), preserving_proto_field_name=True)
    model_py = base64.b64encode(shim_source(DRAIN_MODEL).encode()).decode()
    return {"parameters": {"config": config, "file:1/model.py": model_py}}


def _log_since(path: Path, offset: int) -> str:
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            return handle.read().decode(errors="replace")
    except OSError:
        return ""


def pending_requests(server: TritonServer) -> dict[str, float]:
    """Requests waiting in each model's queue, from the metrics endpoint."""
    with urllib.request.urlopen(server.config.metrics_url, timeout=5) as response:
        text = response.read().decode()
    return {model: float(value) for model, value in PENDING.findall(text)}


def _wait(condition: object, deadline: float, poll_s: float = 0.05) -> bool:
    while time.monotonic() < deadline:
        if condition():  # type: ignore[operator]
            return True
        time.sleep(poll_s)
    return bool(condition())  # type: ignore[operator]


def _index(server: TritonServer) -> list[dict]:
    return json.loads(_request(server, "/v2/repository/index", {}) or b"[]")


def _unload_all_but(server: TritonServer, keep: str, deadline: float) -> bool:
    """Unload every (idle) model except the stand-in, so that SIGTERM finds only the stand-in to unload.

    Triton finishes a model's in-flight requests before it unloads it, so once these are gone nothing but the
    stand-in's refusals is in flight, and the ports can be closed (:mod:`trimodal.triton.frontdoor`).
    """
    names = [entry["name"] for entry in _index(server) if entry["name"] != keep and entry.get("state") == "READY"]
    for name in names:
        _request(server, f"/v2/repository/models/{name}/unload", {})
    gone = lambda: not any(e["name"] in names and e.get("state") != "UNAVAILABLE" for e in _index(server))  # noqa: E731
    return _wait(gone, deadline, poll_s=0.1)


def retire_stand_in(server: TritonServer, ensemble: str = contract.ENSEMBLE, timeout_s: float = 10.0) -> bool:
    """Unload the stand-in (the last model left after a drain) and return once it is gone; SIGTERM follows at once.

    The fallback where the server's ports cannot be closed (:mod:`trimodal.triton.frontdoor`): Triton 2.51
    answers NOT_FOUND for a model from the moment its unload starts (about a second for a Python stub) until the
    process exits; unloading the stand-in here and sending SIGTERM the moment it is gone (polled every 10 ms)
    keeps that window to the stub's unload instead of adding Triton's once-a-second stop loop to it.

    Returns:
        True when the stand-in was seen unloaded within ``timeout_s``.
    """
    try:
        _request(server, f"/v2/repository/models/{ensemble}/unload", {}, timeout_s=timeout_s)
    except ServerError as exc:
        LOGGER.warning("drain: could not retire the stand-in before SIGTERM: %s", exc)
        return False
    gone = lambda: all(e.get("state") == "UNAVAILABLE" for e in _index(server) if e["name"] == ensemble)  # noqa: E731
    return _wait(gone, time.monotonic() + timeout_s, poll_s=0.01)


def drain_ensemble(server: TritonServer, ensemble: str = contract.ENSEMBLE, timeout_s: float = 20.0) -> DrainReport:
    """Swap the stand-in in for the ensemble and wait until every request the ensemble accepted has completed.

    Args:
        server: a running server started with explicit model control.
        ensemble: the ensemble's name.
        timeout_s: how long to wait in total.

    Returns:
        The report (``complete`` False when the timeout passed first).

    Raises:
        ServerError: if the server refuses the swap.
    """
    started = time.monotonic()
    deadline = started + timeout_s
    config = json_format.Parse(
        _request(server, f"/v2/models/{ensemble}/config"), mc.ModelConfig(), ignore_unknown_fields=True
    )
    offset = server.log_path.stat().st_size if server.log_path.exists() else 0
    _request(server, f"/v2/repository/models/{ensemble}/load", stand_in_request(config), timeout_s=timeout_s)
    swapped = time.monotonic() - started
    LOGGER.info("drain: %s answers UNAVAILABLE from now on (swapped in %.1f s)", ensemble, swapped)
    marker = f"successfully unloaded '{ensemble}'"
    unloaded = _wait(lambda: marker in _log_since(server.log_path, offset), deadline)
    idle = _wait(lambda: not any(pending_requests(server).values()), deadline)
    if unloaded and idle:
        _unload_all_but(server, ensemble, deadline)
    report = DrainReport(seconds=time.monotonic() - started, swapped_s=swapped, unloaded=unloaded, idle=idle)
    level = logging.INFO if report.complete else logging.WARNING
    LOGGER.log(level, "drain: %s in %.1f s (old ensemble unloaded: %s, queues empty: %s)",
               "complete" if report.complete else "INCOMPLETE", report.seconds, unloaded, idle)  # fmt: skip
    return report
