"""Self-healing for a running tritonserver.

Triton does not restart a crashed Python-backend stub: the server stays live and (in Triton 2.51, measured
here) even keeps reporting the model ready, while every request to it fails with INTERNAL "Stub process
... is not healthy". :class:`Supervisor` therefore checks, every ``interval_s``: the process is running,
every stub process seen at start-up is still alive (:meth:`TritonServer.stub_instances`), and the server
is ready. A dead stub or an exited server triggers a restart at once; ``unhealthy_after`` consecutive
not-ready checks trigger one too, and so do ``unhealthy_after`` consecutive failed probe inferences while no
request completed (a wedged server: seen after floods of client-cancelled requests on 2.51). A probe
that fails while other requests keep completing is overload being shed (UNAVAILABLE), not a wedge, and never
restarts anything. It logs what happened and restarts the server on the same ports.
Model control mode is ``none`` (the repository API is locked), so a controlled restart is the recovery
path. In-flight requests get ``stop_grace_s`` to finish (a dead stub cannot answer anyway).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

from trimodal.errors import ServerError
from trimodal.triton.server import ADMIN_HEADER, TritonServer

LOGGER = logging.getLogger(__name__)


@dataclass
class Incident:
    """One detected failure and its recovery."""

    detected_at: float
    reason: str
    restored_at: float | None = None
    error: str | None = None

    @property
    def recovery_s(self) -> float | None:
        """Seconds from detection to ready again (None if not restored)."""
        return None if self.restored_at is None else self.restored_at - self.detected_at


PROBE_REQUEST = {
    "inputs": [
        {"name": "IMAGE", "shape": [1, 1], "datatype": "BYTES", "data": [""]},
        {"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["zero"]},
        {"name": "AUDIO", "shape": [1, 1], "datatype": "BYTES", "data": [""]},
    ],
    "outputs": [{"name": "PROBABILITIES"}],
}


def completed_requests(metrics_url: str, model: str = "multimodal") -> Callable[[], float | None]:
    """A progress counter: requests ``model`` completed successfully (metrics endpoint); None when unreachable.

    Under overload some requests still complete; on a wedged server (or a wedged stage of the ensemble) none do.
    """
    pattern = re.compile(rf'^nv_inference_request_success\{{model="{re.escape(model)}",[^}}]*\}} (\S+)$', re.M)

    def count() -> float | None:
        try:
            with urllib.request.urlopen(metrics_url, timeout=2) as response:
                text = response.read().decode()
        except (urllib.error.URLError, OSError):
            return None
        return sum(float(value) for value in pattern.findall(text))

    return count


def inference_probe(http_url: str, model: str = "multimodal", timeout_s: float = 10.0) -> Callable[[], str | None]:
    """A probe that sends one tiny real inference (text only) through the ensemble over HTTP.

    The empty image and audio elements still run through every preprocessor and encoder, so the probe
    fails when any stub is dead or the ensemble is wedged (both seen with Triton 2.51, where readiness
    stays true). Same request as the Helm chart's liveness probe.

    Args:
        http_url: ``http://host:port`` of the server.
        model: the ensemble.
        timeout_s: the probe's deadline.

    Returns:
        A callable returning None when healthy, else the reason.
    """

    def probe() -> str | None:
        request = urllib.request.Request(
            f"{http_url}/v2/models/{model}/infer",
            data=json.dumps(PROBE_REQUEST).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                body = json.loads(response.read())
        except urllib.error.HTTPError as exc:
            return f"probe inference failed: HTTP {exc.code} {exc.read()[:200].decode(errors='replace')}"
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return f"probe inference failed: {exc}"
        if not any(output.get("name") == "PROBABILITIES" for output in body.get("outputs", [])):
            return "probe inference returned no PROBABILITIES"
        return None

    return probe


@dataclass
class Supervisor:
    """Watches a started :class:`TritonServer` from a daemon thread and restarts it when unhealthy.

    Args:
        server: a started server.
        interval_s: seconds between readiness checks.
        unhealthy_after: consecutive failed checks before a restart.
        ready_timeout_s: readiness timeout of the restarted server.
        probe: optional end-to-end check (None = healthy, else the reason), run every ``probe_every`` checks;
            ``unhealthy_after`` consecutive failures trigger a restart (see :func:`inference_probe`).
        probe_every: how many checks between probes.
        progress: a counter of work done (e.g. :func:`completed_requests`); a failed probe counts toward a restart
            only when it did not advance since the previous check (None = every failed probe counts).
    """

    server: TritonServer
    interval_s: float = 1.0
    unhealthy_after: int = 3
    ready_timeout_s: float = 120.0
    stop_grace_s: float = 3.0
    probe: Callable[[], str | None] | None = None
    probe_every: int = 1
    progress: Callable[[], float | None] | None = None
    incidents: list[Incident] = field(default_factory=list)
    baseline: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def start(self) -> Supervisor:
        """Start watching in a daemon thread (the server must be started and ready)."""
        self.baseline = self.server.stub_instances()
        LOGGER.info("supervising %d Python-backend stub(s)", len(self.baseline))
        self._thread = threading.Thread(target=self._run, name="trimodal-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop watching (the server keeps running)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=self.interval_s * 2 + self.ready_timeout_s)

    def not_ready_models(self) -> list[str]:
        """Models of the repository index that report not ready (empty if the server is unreachable)."""
        request = urllib.request.Request(
            f"{self.server.config.http_url}/v2/repository/index",
            data=b"{}",
            headers={ADMIN_HEADER: self.server.admin_key, "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                index = json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError):
            return []
        return sorted(entry["name"] for entry in index if entry.get("state") != "READY")

    def fatal_problem(self) -> str | None:
        """A reason to restart at once: the server exited or a stub died (None when neither)."""
        process = self.server.process
        if process is None or process.poll() is not None:
            return f"tritonserver exited (code {None if process is None else process.returncode})"
        dead = sorted(self.baseline - self.server.stub_instances())
        if dead:
            return f"Python-backend stub(s) died: {', '.join(dead)} (Triton does not restart them)"
        return None

    def _probe_problem(self, progressed: bool) -> str | None:
        """The probe's failure reason, or None when healthy or merely overloaded (work still advancing)."""
        problem = self.probe() if self.probe is not None else None
        if problem and progressed:
            LOGGER.debug("probe failed while requests keep completing (overload shed, not a wedge): %s", problem)
            return None
        return problem

    def _progressed(self, last: list[float | None]) -> bool:
        if self.progress is None:
            return False
        now = self.progress()
        advanced = now is not None and last[0] is not None and now > last[0]
        last[0] = now
        return advanced

    def _run(self) -> None:
        failures = probe_failures = checks = 0
        last_progress: list[float | None] = [None]
        while not self._stop.wait(self.interval_s):
            checks += 1
            reason = self.fatal_problem()
            progressed = self._progressed(last_progress)
            if reason is None and self.probe is not None and checks % self.probe_every == 0:
                problem = self._probe_problem(progressed)
                probe_failures = probe_failures + 1 if problem else 0
                if problem:
                    LOGGER.warning("%s (%d/%d)", problem, probe_failures, self.unhealthy_after)
                if probe_failures >= self.unhealthy_after:
                    reason, probe_failures = f"{problem} ({probe_failures} probes in a row, nothing completing)", 0
            if reason is None and self.server.is_ready():
                failures = 0
                continue
            failures += 1
            if reason is None and failures < self.unhealthy_after:
                continue
            if reason is None:
                models = self.not_ready_models()
                reason = f"server not ready for {failures} checks; models not ready: {', '.join(models) or 'unknown'}"
            if self._stop.is_set():
                return
            self.restart(reason)
            failures = 0
            last_progress[0] = None

    def restart(self, reason: str) -> Incident:
        """Restart the server now and record the incident.

        Args:
            reason: why (logged and recorded).

        Returns:
            The incident, with ``restored_at`` set when the restart succeeded.
        """
        with self._lock:
            incident = Incident(detected_at=time.monotonic(), reason=reason)
            self.incidents.append(incident)
            LOGGER.warning("unhealthy: %s; restarting tritonserver", reason)
            self.server.stop(grace_s=self.stop_grace_s)
            try:
                self.server.start(self.ready_timeout_s)
            except ServerError as exc:
                incident.error = str(exc)
                LOGGER.error("restart failed: %s", exc)
                return incident
            incident.restored_at = time.monotonic()
            self.baseline = self.server.stub_instances()
            LOGGER.warning("service restored in %.1f s", incident.recovery_s)
            return incident
