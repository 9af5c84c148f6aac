"""Simulation of the chart's autoscaling policy (HPA autoscaling/v2 semantics) against a load curve.

What is simulated, every ``step_s`` seconds:

* **Load**: an arrival rate (requests/s) from a recorded curve (CSV ``t_s,rps``) or a synthetic diurnal curve
  with a spike (:func:`synthetic_load`).
* **Serving**: ``ready`` Triton replicas, each able to serve ``capacity_rps`` requests/s (from a benchmark results
  file, :func:`capacity_from_benchmark`). Envoy spreads requests per request, so the pool is modelled as one
  M/M/c queue with c = ready replicas and service rate mu = capacity_rps per replica.
* **Latency**: p99 = ``base_p99_ms`` (the unloaded p99 measured by the benchmarks) + the p99 of the M/M/c
  waiting time, P(W > t) = C(c, a) * exp(-(c*mu - lambda) * t) with C the Erlang C probability of waiting.
  At or above saturation (lambda >= c*mu) the queue grows without bound; Triton's queue policy then rejects
  requests after ``timeout_s``, so p99 is reported as ``timeout_s`` and the step counts as overloaded.
  This is an estimate: dynamic batching makes real service times load-dependent (better than M/M/c at high
  load), and per-request round robin is not a perfect shared queue (a little worse). Use it to compare
  policies and start-up delays, and check the chosen one with a load test.
* **Metric** seen by the HPA (through Prometheus rate windows): the mean over the last ``metric_window_s`` of
  the per-pod value, either the queue/compute time ratio (mean wait / service time) or pending requests per pod.
* **HPA**: every ``sync_period_s``: desired = ceil(ready * metric / target) (pods without metrics count as 0
  when scaling up, as the HPA does), skipped within the 10 % tolerance; stabilization (scale-up: min of the
  recommendations in its window; scale-down: max in its window); scale-up/down policies limit the change per
  period (``selectPolicy`` Max/Min); clamped to [min, max].
* **Pods**: a new replica serves only after ``startup_delay_s`` (node scale-up, image pull, engine build and
  warm-up); a removed one stops serving at once (it drains in-flight requests, no new ones).

``python deploy/autoscale/simulate.py --out deploy/autoscale.png`` writes the plot used in deploy/KUBERNETES.md
(``--help`` lists the options: recorded load curve, benchmark results, pod start-up, SLO).
"""

from __future__ import annotations

import csv
import json
import logging
import math
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from itertools import pairwise
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml

from trimodal.errors import AutoscaleError, TrimodalError

LOGGER = logging.getLogger(__name__)

CHART_VALUES = Path(__file__).resolve().parent.parent / "helm" / "trimodal" / "values.yaml"
METRICS = ("requestRate", "queueComputeRatio", "pendingRequests")


@dataclass(frozen=True)
class ScalingRule:
    """One HPA scaling policy: at most ``value`` pods or percent change per ``period_s`` seconds."""

    kind: str  # "Pods" | "Percent"
    value: int
    period_s: int


@dataclass(frozen=True)
class ScalingPolicy:
    """The autoscaler's settings, as in the chart's ``autoscaling`` values, plus pod start-up time."""

    min_replicas: int = 2
    max_replicas: int = 8
    # (metric, per-pod target): the HPA takes the largest recommendation over them.
    metrics: tuple[tuple[str, float], ...] = (("requestRate", 401.0), ("queueComputeRatio", 1.0))
    tolerance: float = 0.1
    sync_period_s: float = 15.0
    metric_window_s: float = 60.0
    scale_up_window_s: float = 30.0
    scale_down_window_s: float = 600.0
    scale_up_rules: tuple[ScalingRule, ...] = (ScalingRule("Percent", 100, 60), ScalingRule("Pods", 2, 60))
    scale_up_select: str = "Max"
    scale_down_rules: tuple[ScalingRule, ...] = (ScalingRule("Pods", 1, 120),)
    scale_down_select: str = "Min"
    startup_delay_s: float = 180.0

    def __post_init__(self) -> None:
        if not self.metrics:
            raise AutoscaleError("metrics: at least one (metric, target) is needed")
        for name, target in self.metrics:
            if name not in METRICS:
                raise AutoscaleError(f"metrics: expected names from {METRICS}, got {name!r}")
            if target <= 0:
                raise AutoscaleError(f"metrics: target of {name} must be > 0, got {target}")
        if not 1 <= self.min_replicas <= self.max_replicas:
            raise AutoscaleError(
                f"min_replicas/max_replicas: need 1 <= min <= max, got {self.min_replicas}, {self.max_replicas}"
            )

    @classmethod
    def from_chart_values(cls, path: Path = CHART_VALUES, **overrides: Any) -> ScalingPolicy:
        """Read the policy from the Helm chart's values (``autoscaling`` section).

        Args:
            path: a values.yaml of deploy/helm/trimodal (or a file overriding its ``autoscaling`` keys).
            **overrides: ScalingPolicy fields to set afterwards (e.g. ``startup_delay_s``).

        Returns:
            The policy the chart renders into the HPA / ScaledObject.
        """
        try:
            auto = yaml.safe_load(Path(path).read_text())["autoscaling"]
            scale_on = auto["scaleOn"]
            behavior = auto["behavior"]
            up, down = behavior["scaleUp"], behavior["scaleDown"]
            policy = cls(
                min_replicas=int(auto["minReplicas"]),
                max_replicas=int(auto["maxReplicas"]),
                metrics=tuple((m, parse_quantity(auto["metrics"][m]["target"])) for m in scale_on),
                metric_window_s=parse_duration(auto.get("rateWindow", "1m")),
                scale_up_window_s=float(up.get("stabilizationWindowSeconds", 0)),
                scale_down_window_s=float(down.get("stabilizationWindowSeconds", 300)),
                scale_up_rules=tuple(_rule(p) for p in up["policies"]),
                scale_up_select=up.get("selectPolicy", "Max"),
                scale_down_rules=tuple(_rule(p) for p in down["policies"]),
                scale_down_select=down.get("selectPolicy", "Max"),
            )
        except (KeyError, TypeError) as exc:
            raise AutoscaleError(f"{path}: autoscaling values incomplete: missing {exc}") from exc
        return replace(policy, **overrides)


def _rule(spec: dict[str, Any]) -> ScalingRule:
    return ScalingRule(kind=str(spec["type"]), value=int(spec["value"]), period_s=int(spec["periodSeconds"]))


def parse_quantity(value: str | float | int) -> float:
    """Kubernetes quantity to float: ``"500m"`` -> 0.5, ``"16"`` -> 16.0."""
    text = str(value).strip()
    if text.endswith("m"):
        return float(text[:-1]) / 1000.0
    return float(text)


def parse_duration(value: str | float | int) -> float:
    """Prometheus duration to seconds: ``"1m"`` -> 60, ``"30s"`` -> 30."""
    text = str(value).strip()
    units = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
    for suffix in ("ms", "s", "m", "h"):
        if text.endswith(suffix):
            return float(text[: -len(suffix)]) * units[suffix]
    return float(text)


@dataclass(frozen=True)
class ServiceModel:
    """How one replica serves: capacity (req/s), unloaded p99 and the server-side timeout."""

    capacity_rps: float = 400.0
    base_p99_ms: float = 25.0
    timeout_s: float = 1.0

    def __post_init__(self) -> None:
        if self.capacity_rps <= 0:
            raise AutoscaleError(f"capacity_rps: must be > 0, got {self.capacity_rps}")


def erlang_c(servers: int, offered: float) -> float:
    """Erlang C: probability that an arrival waits in an M/M/c queue.

    Args:
        servers: c, the number of servers (ready replicas).
        offered: a = lambda / mu, the offered load in Erlangs.

    Returns:
        P(wait > 0); 1.0 when the queue is unstable (a >= c), 0.0 without load.
    """
    if offered <= 0:
        return 0.0
    if servers <= 0 or offered >= servers:
        return 1.0
    # Erlang B by the stable recurrence, then C from B.
    b = 1.0
    for k in range(1, servers + 1):
        b = offered * b / (k + offered * b)
    rho = offered / servers
    return b / (1.0 - rho + rho * b)


@dataclass(frozen=True)
class QueueState:
    """The M/M/c estimate at one instant."""

    p99_ms: float
    mean_wait_s: float
    overloaded: bool
    queue_compute_ratio: float
    pending_per_pod: float


def queue_state(rate_rps: float, ready: int, service: ServiceModel, ratio_cap: float = 10.0) -> QueueState:
    """Estimate latency and the autoscaling metrics for ``rate_rps`` over ``ready`` replicas.

    Args:
        rate_rps: arrival rate (requests/s).
        ready: replicas that serve.
        service: per-replica capacity, unloaded p99, timeout.
        ratio_cap: cap on the queue/compute ratio when overloaded (what rate() windows show is finite).

    Returns:
        p99 (ms), mean wait (s), whether the pool is saturated, and the metrics the HPA would see per pod.
    """
    mu = service.capacity_rps
    if ready <= 0 or rate_rps >= ready * mu:
        pending = (rate_rps * service.timeout_s) / max(ready, 1)
        return QueueState(service.timeout_s * 1000.0, service.timeout_s, rate_rps > 0, ratio_cap, pending)
    c_wait = erlang_c(ready, rate_rps / mu)
    spare = ready * mu - rate_rps
    mean_wait = c_wait / spare
    p99_wait = math.log(c_wait / 0.01) / spare if c_wait > 0.01 else 0.0
    p99_ms = min(service.base_p99_ms + p99_wait * 1000.0, service.timeout_s * 1000.0)
    ratio = min(mean_wait * mu, ratio_cap)  # mean queue time / mean compute time (1/mu)
    pending = rate_rps * mean_wait / ready  # Little's law, per pod
    return QueueState(p99_ms, mean_wait, False, ratio, pending)


@dataclass
class SimulationResult:
    """Time series of one simulation (one entry per step)."""

    t_s: list[float] = field(default_factory=list)
    load_rps: list[float] = field(default_factory=list)
    desired: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    metric: list[float] = field(default_factory=list)  # the first metric's per-pod value, as the HPA sees it
    p99_ms: list[float] = field(default_factory=list)
    overloaded: list[bool] = field(default_factory=list)

    def record(self, t_s: float, load_rps: float, desired: int, ready: int, metric: float, state: QueueState) -> None:
        """Append one step."""
        self.t_s.append(t_s)
        self.load_rps.append(load_rps)
        self.desired.append(desired)
        self.ready.append(ready)
        self.metric.append(metric)
        self.p99_ms.append(state.p99_ms)
        self.overloaded.append(state.overloaded)

    def summary(self, slo_ms: float = 100.0) -> dict[str, float]:
        """Headline numbers: peak replicas, replica-hours, share of time over the p99 SLO or saturated."""
        steps = max(len(self.t_s), 1)
        step = (self.t_s[1] - self.t_s[0]) if len(self.t_s) > 1 else 0.0
        return {
            "max_ready": float(max(self.ready, default=0)),
            "max_desired": float(max(self.desired, default=0)),
            "replica_hours": sum(self.ready) * step / 3600.0,
            "p99_max_ms": max(self.p99_ms, default=0.0),
            "time_over_slo": sum(p > slo_ms for p in self.p99_ms) / steps,
            "time_overloaded": sum(self.overloaded) / steps,
            "scale_events": float(sum(1 for a, b in pairwise(self.desired) if a != b)),
        }


def _limit(
    rules: Sequence[ScalingRule], select: str, history: deque[tuple[float, int]], now: float, current: int, up: bool
) -> int:
    """The replica bound the scaling policies allow now (HPA's periodStartReplicas rule)."""
    limits = []
    for rule in rules:
        # replicas at the start of the rule's period: current minus the changes made within it
        changes = sum(delta for t, delta in history if now - t < rule.period_s and (delta > 0) == up)
        start = current - changes
        if rule.kind == "Pods":
            limits.append(start + rule.value if up else start - rule.value)
        elif rule.kind == "Percent":
            if up:
                limits.append(math.ceil(start * (1 + rule.value / 100.0)))
            else:
                limits.append(math.floor(start * (1 - rule.value / 100.0)))
        else:
            raise AutoscaleError(f"scaling policy type: expected Pods or Percent, got {rule.kind!r}")
    if not limits:
        return current
    # Max = the policy allowing the largest change; Min = the smallest; Disabled = no change.
    if select == "Disabled":
        return current
    if up:
        return max(limits) if select == "Max" else min(limits)
    return min(limits) if select == "Max" else max(limits)


def recommend(policy: ScalingPolicy, averaged: dict[str, float], ready: int, current: int) -> int:
    """The HPA's replica recommendation from the windowed per-pod metrics, before stabilization.

    Each metric proposes ``ceil(ready * value / target)`` (pods without metrics, i.e. not ready, count as 0 on the
    way up), or ``current`` within the tolerance; no scale-down while pods are still starting. The largest
    proposal wins, clamped to [min, max].

    Args:
        policy: the autoscaler settings (metrics, targets, tolerance, bounds).
        averaged: per-pod value of each metric, averaged over the metric window.
        ready: replicas that serve (and report metrics).
        current: replicas the Deployment has now, ready or starting.

    Returns:
        The recommended replica count.
    """
    proposals = []
    for name, target in policy.metrics:
        value = averaged[name]
        usage = (ready * value) / (target * max(current, 1))
        if abs(usage - 1.0) <= policy.tolerance or ready == 0:
            proposals.append(current)
        else:
            proposal = math.ceil(ready * value / target)
            if proposal < current and ready < current:
                proposal = current  # the HPA does not scale down while pods are still starting
            proposals.append(proposal)
    return min(max(max(proposals), policy.min_replicas), policy.max_replicas)


@dataclass
class _Autoscaler:
    """The HPA's memory between steps and the pods it manages.

    Attributes:
        policy: the autoscaler settings.
        initial_replicas: replicas (all ready) at t=0; None means ``policy.min_replicas``.
        ready_since: start time of each pod, ready ones first.
        samples: (t, per-pod metrics) within the metric window.
        recommendations: (t, recommendation) within the stabilization windows.
        changes: (t, replica delta) within the longest scaling-policy period.
    """

    policy: ScalingPolicy
    initial_replicas: int | None = None
    ready_since: list[float] = field(default_factory=list)
    samples: deque[tuple[float, dict[str, float]]] = field(default_factory=deque)
    recommendations: deque[tuple[float, int]] = field(default_factory=deque)
    changes: deque[tuple[float, int]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        policy = self.policy
        replicas = self.initial_replicas if self.initial_replicas is not None else policy.min_replicas
        replicas = min(max(replicas, policy.min_replicas), policy.max_replicas)
        self.ready_since = [-policy.startup_delay_s] * replicas

    @property
    def replicas(self) -> int:
        """Replicas the Deployment has (desired), ready or starting."""
        return len(self.ready_since)

    def ready(self, now: float) -> int:
        """Replicas that have finished starting up at ``now`` and serve."""
        return sum(1 for started in self.ready_since if now - started >= self.policy.startup_delay_s)

    def observe(self, now: float, rate: float, ready: int, state: QueueState) -> dict[str, float]:
        """Record this step's per-pod metrics; return each policy metric averaged over the metric window."""
        per_pod = {
            "requestRate": rate / ready if ready else 0.0,
            "queueComputeRatio": state.queue_compute_ratio,
            "pendingRequests": state.pending_per_pod,
        }
        samples = self.samples
        samples.append((now, per_pod))
        while samples and now - samples[0][0] > self.policy.metric_window_s:
            samples.popleft()
        return {name: sum(v[name] for _, v in samples) / len(samples) for name, _ in self.policy.metrics}

    def sync(self, now: float, ready: int, averaged: dict[str, float]) -> None:
        """One HPA sync: recommend, stabilize, apply the scaling policies, then add or remove pods."""
        current = self.replicas
        desired = self.stabilized(now, current, recommend(self.policy, averaged, ready, current))
        self.scale(now, current, desired)
        if desired != current:
            LOGGER.debug("t=%.0fs metrics=%s replicas %d -> %d", now, averaged, current, desired)

    def stabilized(self, now: float, current: int, recommendation: int) -> int:
        """Desired replicas after the stabilization windows and the scale-up/down policy limits.

        Scale-up follows the smallest recommendation within its window, scale-down the largest within its
        window; the change is then bounded by the scaling policies (:func:`_limit`) and clamped to [min, max].
        """
        policy, recommendations = self.policy, self.recommendations
        recommendations.append((now, recommendation))
        horizon = max(policy.scale_up_window_s, policy.scale_down_window_s)
        while recommendations and now - recommendations[0][0] > horizon:
            recommendations.popleft()
        up_floor = min(r for t, r in recommendations if now - t <= policy.scale_up_window_s)
        down_ceiling = max(r for t, r in recommendations if now - t <= policy.scale_down_window_s)
        desired = current
        if up_floor > current:
            limit = _limit(policy.scale_up_rules, policy.scale_up_select, self.changes, now, current, up=True)
            desired = min(up_floor, limit)
        elif down_ceiling < current:
            limit = _limit(policy.scale_down_rules, policy.scale_down_select, self.changes, now, current, up=False)
            desired = max(down_ceiling, limit)
        return min(max(desired, policy.min_replicas), policy.max_replicas)

    def scale(self, now: float, current: int, desired: int) -> None:
        """Start or remove pods, and remember the change for the scaling policies' periods."""
        if desired > current:
            self.ready_since.extend([now] * (desired - current))
        elif desired < current:
            # the ReplicaSet removes not-ready and youngest pods first
            self.ready_since.sort()
            del self.ready_since[desired:]
        if desired != current:
            self.changes.append((now, desired - current))
        rules = self.policy.scale_up_rules + self.policy.scale_down_rules
        longest = max([r.period_s for r in rules] or [0])
        while self.changes and now - self.changes[0][0] > longest:
            self.changes.popleft()


def simulate(
    load: Callable[[float], float],
    duration_s: float,
    policy: ScalingPolicy | None = None,
    service: ServiceModel | None = None,
    step_s: float = 5.0,
    initial_replicas: int | None = None,
) -> SimulationResult:
    """Run the HPA policy against a load curve.

    Args:
        load: arrival rate (requests/s) as a function of time (s).
        duration_s: simulated time.
        policy: the autoscaler settings (default: the chart's values).
        service: per-replica capacity and latency model.
        step_s: simulation step; the HPA acts every ``policy.sync_period_s``.
        initial_replicas: ready replicas at t=0 (default: min_replicas).

    Returns:
        Replicas (desired and ready), the metric, estimated p99 and saturation over time.
    """
    policy = policy or ScalingPolicy.from_chart_values()
    service = service or ServiceModel()
    hpa = _Autoscaler(policy, initial_replicas)
    first_metric = policy.metrics[0][0]
    result = SimulationResult()
    next_sync = 0.0
    for i in range(math.ceil(duration_s / step_s) + 1):
        now = i * step_s
        rate = max(float(load(now)), 0.0)
        ready = hpa.ready(now)
        state = queue_state(rate, ready, service)
        averaged = hpa.observe(now, rate, ready, state)
        if now >= next_sync:
            next_sync += policy.sync_period_s
            hpa.sync(now, ready, averaged)
        result.record(now, rate, hpa.replicas, ready, averaged[first_metric], state)
    return result


def synthetic_load(
    base_rps: float = 300.0,
    peak_rps: float = 1900.0,
    day_s: float = 86400.0,
    spike_at_s: float = 0.62 * 86400.0,
    spike_rps: float = 900.0,
    spike_s: float = 1200.0,
) -> Callable[[float], float]:
    """A diurnal curve (trough at t=0, peak at mid-day) plus a flash-crowd spike.

    Args:
        base_rps: the night-time rate.
        peak_rps: the mid-day rate (before the spike).
        day_s: length of the cycle.
        spike_at_s: when the spike starts.
        spike_rps: extra rate during the spike (fast ramp, plateau, fast decay).
        spike_s: spike plateau length.

    Returns:
        rate(t) in requests/s.
    """

    def rate(t: float) -> float:
        diurnal = base_rps + (peak_rps - base_rps) * 0.5 * (1.0 - math.cos(2.0 * math.pi * t / day_s))
        dt = t - spike_at_s
        ramp = 60.0
        if dt < 0 or dt > spike_s + ramp:
            spike = 0.0
        elif dt < ramp:
            spike = spike_rps * dt / ramp
        elif dt <= spike_s:
            spike = spike_rps
        else:
            spike = spike_rps * (1.0 - (dt - spike_s) / ramp)
        return diurnal + spike

    return rate


def load_curve(path: Path) -> tuple[Callable[[float], float], float]:
    """A recorded load curve: CSV with columns ``t_s`` and ``rps`` (e.g. from locust's stats history).

    Returns:
        rate(t) (piecewise linear) and the curve's duration in seconds.
    """
    with Path(path).open(newline="") as handle:
        try:
            rows = [(float(r["t_s"]), float(r["rps"])) for r in csv.DictReader(handle)]
        except (KeyError, TypeError, ValueError) as exc:
            raise AutoscaleError(f"{path}: expected CSV columns t_s,rps with numbers ({exc})") from exc
    if len(rows) < 2:
        raise AutoscaleError(f"{path}: need at least two rows of t_s,rps")
    rows.sort()
    times = [t for t, _ in rows]
    t0 = times[0]

    def rate(t: float) -> float:
        t = t + t0
        if t <= times[0]:
            return rows[0][1]
        if t >= times[-1]:
            return rows[-1][1]
        lo = max(i for i, x in enumerate(times) if x <= t)
        (ta, ra), (tb, rb) = rows[lo], rows[lo + 1]
        return ra + (rb - ra) * (t - ta) / (tb - ta) if tb > ta else rb

    return rate, times[-1] - t0


def _from_bench_results(data: dict, replicas: int) -> ServiceModel:
    """``trimodal bench``'s results.json: saturation throughput, and the median p99 of Triton at concurrency 1."""
    unloaded = sorted(
        level["p99_ms"]
        for level in data.get("levels", [])
        if level.get("baseline") == "triton" and level.get("concurrency") == 1 and level.get("mode") == "concurrency"
    )
    p99 = unloaded[len(unloaded) // 2] if unloaded else ServiceModel.base_p99_ms
    return ServiceModel(capacity_rps=float(data["meta"]["saturation_rps"]) / replicas, base_p99_ms=float(p99))


def capacity_from_benchmark(path: Path, replicas: int = 1) -> ServiceModel:
    """Per-replica capacity and unloaded p99 from a benchmark results file.

    Accepts ``trimodal bench``'s ``results.json`` (Triton's saturation throughput and its median p99 at
    concurrency 1), JSON with ``capacity_rps`` (or ``throughput_rps``) and optionally ``p99_ms`` (``base_p99_ms``),
    or perf_analyzer's CSV (``Inferences/Second`` and ``p99 latency`` in microseconds: the highest
    throughput row gives the capacity, the lowest-concurrency row the unloaded p99).

    Args:
        path: the results file.
        replicas: how many replicas the benchmark ran against (capacity is divided by it).

    Returns:
        The service model for the simulation.
    """
    path = Path(path)
    if path.suffix == ".json":
        data = json.loads(path.read_text())
        if "saturation_rps" in data.get("meta", {}):
            return _from_bench_results(data, replicas)
        capacity = data.get("capacity_rps", data.get("throughput_rps"))
        if capacity is None:
            raise AutoscaleError(f"{path}: expected capacity_rps or throughput_rps")
        p99 = data.get("base_p99_ms", data.get("p99_ms", ServiceModel.base_p99_ms))
        return ServiceModel(capacity_rps=float(capacity) / replicas, base_p99_ms=float(p99))
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))
    try:
        capacity = max(float(r["Inferences/Second"]) for r in rows)
        base = float(rows[0]["p99 latency"]) / 1000.0
    except (KeyError, ValueError) as exc:
        raise AutoscaleError(f"{path}: expected perf_analyzer CSV columns 'Inferences/Second', 'p99 latency'") from exc
    return ServiceModel(capacity_rps=capacity / replicas, base_p99_ms=base)


def plot(
    result: SimulationResult,
    out: Path,
    service: ServiceModel,
    policy: ScalingPolicy,
    title: str = "",
    slo_ms: float = 100.0,
) -> Path:
    """Write load vs capacity, replicas and estimated p99 over time as a PNG (matplotlib, imported here)."""
    import matplotlib  # lazy: only the plot needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [t / 3600.0 for t in result.t_s]
    fig, axes = plt.subplots(3, 1, figsize=(11, 9.5), sharex=True)
    ax = axes[0]
    ax.plot(hours, result.load_rps, label="load (req/s)", color="tab:blue")
    ax.plot(
        hours,
        [r * service.capacity_rps for r in result.ready],
        label="ready capacity (req/s)",
        color="tab:green",
        linestyle="--",
    )
    ax.set_ylabel("requests/s")
    ax.legend(loc="upper left")
    ax = axes[1]
    ax.step(hours, result.desired, where="post", label="desired replicas (HPA)", color="tab:orange")
    ax.step(hours, result.ready, where="post", label="ready replicas", color="tab:green")
    ax.axhline(policy.max_replicas, color="grey", linestyle=":", label=f"max {policy.max_replicas}")
    ax.set_ylabel("replicas")
    ax.legend(loc="upper left")
    ax = axes[2]
    ax.plot(hours, result.p99_ms, label="estimated p99 (ms)", color="tab:red")
    ax.axhline(slo_ms, color="grey", linestyle=":", label=f"SLO {slo_ms:.0f} ms")
    ax.set_yscale("log")
    ax.set_ylabel("p99 (ms)")
    ax.set_xlabel("time (h)")
    ax.legend(loc="upper left")
    s = result.summary(slo_ms)
    metrics = ", ".join(f"{n}={t:g}" for n, t in policy.metrics)
    fig.suptitle(
        (title or "HPA policy simulation") + f"\nscale on {metrics}; pod start-up {policy.startup_delay_s:.0f} s; "
        f"capacity {service.capacity_rps:.0f} req/s per replica"
        f"\np99 over {slo_ms:.0f} ms {100 * s['time_over_slo']:.1f}% of the time; "
        f"saturated {100 * s['time_overloaded']:.1f}%; {s['replica_hours']:.0f} replica-hours; "
        f"{s['scale_events']:.0f} scale events"
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


app = typer.Typer(add_completion=False, help=__doc__.splitlines()[0])


@app.command()
def run(
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")] = Path("deploy/autoscale.png"),
    values: Annotated[
        Path, typer.Option("--values", exists=True, dir_okay=False, help="Chart values with an autoscaling section.")
    ] = CHART_VALUES,
    load: Annotated[
        Path | None,
        typer.Option(
            "--load", exists=True, dir_okay=False, help="Recorded load curve CSV (t_s,rps); default: synthetic day."
        ),
    ] = None,
    benchmark: Annotated[
        Path | None,
        typer.Option("--benchmark", exists=True, dir_okay=False, help="Benchmark results (JSON or perf_analyzer CSV)."),
    ] = None,
    capacity: Annotated[float, typer.Option("--capacity", help="Req/s per replica.")] = ServiceModel.capacity_rps,
    base_p99_ms: Annotated[float, typer.Option("--base-p99-ms", help="Unloaded p99 (ms).")] = ServiceModel.base_p99_ms,
    startup: Annotated[float, typer.Option("--startup", help="Pod start-up (s).")] = ScalingPolicy.startup_delay_s,
    slo_ms: Annotated[float, typer.Option("--slo-ms", help="p99 SLO (ms) for the summary.")] = 100.0,
) -> None:
    """Simulate the chart's autoscaling policy on a load curve and write the plot."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        policy = ScalingPolicy.from_chart_values(values, startup_delay_s=startup)
        service = (
            capacity_from_benchmark(benchmark)
            if benchmark
            else ServiceModel(capacity_rps=capacity, base_p99_ms=base_p99_ms)
        )
        if load:
            rate, duration = load_curve(load)
            title = f"HPA policy simulation on {load.name}"
        else:
            rate, duration = synthetic_load(), 86400.0
            title = "HPA policy simulation: synthetic diurnal load + flash crowd"
        result = simulate(rate, duration, policy, service)
    except TrimodalError as exc:
        typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
        raise typer.Exit(code=1) from None
    summary = result.summary(slo_ms)
    LOGGER.info("summary: %s", json.dumps({k: round(v, 3) for k, v in summary.items()}))
    plot(result, out, service, policy, title=title, slo_ms=slo_ms)
    LOGGER.info("wrote %s", out)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``) and return its exit status.

    Args:
        argv: command-line arguments, without the program name.

    Returns:
        0 on success, 1 on an invalid policy, load curve or benchmark file, 2 on a usage error.
    """
    try:
        app(args=None if argv is None else list(argv), prog_name="simulate.py")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
