"""The autoscaling policy simulation (deploy/autoscale/simulate.py): HPA semantics, queueing estimate, chart values.

Imported as ``simulate``: pytest puts this folder on sys.path (no __init__.py here, on purpose).
"""

from __future__ import annotations

import json
import math
from itertools import pairwise
from pathlib import Path

import pytest
from simulate import (
    AutoscaleError,
    ScalingPolicy,
    ServiceModel,
    capacity_from_benchmark,
    erlang_c,
    load_curve,
    main,
    queue_state,
    simulate,
    synthetic_load,
)

SERVICE = ServiceModel(capacity_rps=100.0, base_p99_ms=20.0, timeout_s=1.0)


def step_load(before: float, after: float, at: float):
    return lambda t: before if t < at else after


def policy(**kw) -> ScalingPolicy:
    return ScalingPolicy.from_chart_values(**kw)


def test_policy_defaults_are_the_chart_values() -> None:
    # ScalingPolicy() is documented as the chart's autoscaling values: a default that drifts from values.yaml
    # would simulate a policy the chart does not render (queueComputeRatio was 0.5 here, 1 in the chart)
    assert ScalingPolicy() == ScalingPolicy.from_chart_values()


def test_policy_is_read_from_the_chart_values() -> None:
    p = ScalingPolicy.from_chart_values()
    assert (p.min_replicas, p.max_replicas) == (2, 8)
    assert dict(p.metrics) == {"requestRate": 401.0, "queueComputeRatio": 1.0}
    assert p.scale_down_window_s == 600 and p.scale_up_window_s == 30
    assert p.metric_window_s == 60
    assert {r.kind for r in p.scale_up_rules} == {"Percent", "Pods"}


def test_invalid_policy_names_the_field() -> None:
    with pytest.raises(AutoscaleError, match="metrics"):
        ScalingPolicy(metrics=(("gpuMagic", 1.0),))
    with pytest.raises(AutoscaleError, match="min_replicas"):
        ScalingPolicy(min_replicas=5, max_replicas=2)


def test_erlang_c_matches_mm1() -> None:
    # M/M/1: P(wait) = rho
    assert erlang_c(1, 0.7) == pytest.approx(0.7)
    assert erlang_c(4, 0.0) == 0.0
    assert erlang_c(2, 2.5) == 1.0
    # Known value: c=2, a=1 -> C = 1/3
    assert erlang_c(2, 1.0) == pytest.approx(1 / 3)


def test_queue_state_grows_with_load_and_saturates() -> None:
    light, heavy = queue_state(50, 2, SERVICE), queue_state(190, 2, SERVICE)
    assert light.p99_ms < heavy.p99_ms
    assert light.queue_compute_ratio < heavy.queue_compute_ratio
    assert not heavy.overloaded
    over = queue_state(250, 2, SERVICE)
    assert over.overloaded and over.p99_ms == SERVICE.timeout_s * 1000
    # M/M/1 mean wait = rho / (mu - lambda)
    one = queue_state(70, 1, SERVICE)
    assert one.mean_wait_s == pytest.approx(0.7 / 30)


def test_replicas_rise_only_after_startup_delay() -> None:
    startup = 240.0
    p = policy(startup_delay_s=startup)
    at = 600.0
    result = simulate(step_load(100, 600, at), 3600, p, SERVICE, step_s=5)
    t, desired, ready = result.t_s, result.desired, result.ready
    first_desired = next(t[i] for i in range(len(t)) if desired[i] > p.min_replicas)
    first_ready = next(t[i] for i in range(len(t)) if ready[i] > p.min_replicas)
    assert at <= first_desired <= at + p.metric_window_s + p.sync_period_s + p.scale_up_window_s + 5
    assert first_ready >= first_desired + startup
    assert max(ready[i] for i in range(len(t)) if t[i] < first_desired + startup) == p.min_replicas
    # eventually enough capacity: 600 req/s on replicas of 100 req/s -> more than 6 (the queueing signal scales
    # past what the request-rate target alone, sized for the benchmarked CPU replica, would ask for)
    assert ready[-1] > math.ceil(600 / SERVICE.capacity_rps)
    assert result.p99_ms[-1] < 100


def test_never_exceeds_max_replicas() -> None:
    p = policy(max_replicas=5, startup_delay_s=60)
    result = simulate(step_load(100, 10_000, 300), 3600, p, SERVICE)
    assert max(result.desired) == 5 and max(result.ready) == 5
    assert result.summary()["time_overloaded"] > 0


def test_scale_up_rate_limited_by_policies() -> None:
    p = policy(startup_delay_s=30)
    result = simulate(step_load(100, 5000, 300), 1800, p, SERVICE, step_s=5)
    # 100% or 2 pods per 60 s (whichever is more): from 2 at most 4 within the first period
    desired = result.desired
    for i, t in enumerate(result.t_s):
        later = [desired[j] for j, u in enumerate(result.t_s) if t <= u < t + 59]
        assert max(later) <= max(2 * desired[i], desired[i] + 2)


def test_stabilization_prevents_flapping() -> None:
    # Load oscillating every 4 minutes between needing 2 and 4 replicas.
    def wavy(t: float) -> float:
        return 300.0 if (t // 120) % 2 else 900.0

    stable = simulate(wavy, 4 * 3600, policy(startup_delay_s=60), SERVICE)
    twitchy = simulate(wavy, 4 * 3600, policy(startup_delay_s=60, scale_down_window_s=0, scale_up_window_s=0), SERVICE)
    downs = lambda r: sum(1 for a, b in pairwise(r.desired) if b < a)  # noqa: E731
    assert downs(stable) <= 1
    assert downs(twitchy) > 10 * max(downs(stable), 1)
    # and the stable one never drops a replica within the window after a scale-up
    p = policy()
    last_up = -1e9
    for i in range(1, len(stable.desired)):
        if stable.desired[i] > stable.desired[i - 1]:
            last_up = stable.t_s[i]
        if stable.desired[i] < stable.desired[i - 1]:
            assert stable.t_s[i] - last_up >= p.scale_down_window_s


def test_scale_down_one_pod_per_period_after_window() -> None:
    p = policy(startup_delay_s=30)
    result = simulate(step_load(2000, 100, 1200), 7200, p, SERVICE, initial_replicas=8)
    drops = [result.t_s[i] for i in range(1, len(result.desired)) if result.desired[i] < result.desired[i - 1]]
    assert drops and drops[0] >= 1200 + p.scale_down_window_s - p.metric_window_s
    assert all(b - a >= 120 for a, b in pairwise(drops))
    assert result.desired[-1] == p.min_replicas


def test_synthetic_load_shape() -> None:
    rate = synthetic_load(base_rps=100, peak_rps=1000, spike_at_s=1000, spike_rps=500, spike_s=100)
    assert rate(0) == pytest.approx(100)
    assert rate(43200) == pytest.approx(1000)
    assert rate(1100) - rate(900) > 400


def test_load_curve_and_benchmark_files(tmp_path: Path) -> None:
    curve = tmp_path / "load.csv"
    curve.write_text("t_s,rps\n100,10\n200,30\n")
    rate, duration = load_curve(curve)
    assert duration == 100 and rate(50) == pytest.approx(20) and rate(500) == 30
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"throughput_rps": 900, "p99_ms": 12}))
    model = capacity_from_benchmark(bench, replicas=3)
    assert model.capacity_rps == 300 and model.base_p99_ms == 12
    pa = tmp_path / "perf.csv"
    pa.write_text("Concurrency,Inferences/Second,p99 latency\n1,100,8000\n8,450,21000\n16,480,40000\n")
    model = capacity_from_benchmark(pa)
    assert model.capacity_rps == 480 and model.base_p99_ms == 8
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    with pytest.raises(AutoscaleError, match="capacity_rps"):
        capacity_from_benchmark(bad)


def test_cli_writes_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib", reason="matplotlib not installed (dev extra)")
    curve = tmp_path / "load.csv"
    curve.write_text("t_s,rps\n0,100\n1800,900\n3600,200\n")
    out = tmp_path / "plot.png"
    assert main(["--out", str(out), "--load", str(curve), "--capacity", "300"]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_reports_invalid_input_without_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    values = tmp_path / "values.yaml"
    values.write_text("autoscaling:\n  minReplicas: 2\n")
    assert main(["--out", str(tmp_path / "plot.png"), "--values", str(values)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "autoscaling values incomplete" in err
    assert "Traceback" not in err
    curve = tmp_path / "load.csv"
    curve.write_text("time,rate\n0,1\n1,2\n")
    assert main(["--out", str(tmp_path / "plot.png"), "--load", str(curve)]) == 1
    assert "t_s,rps" in capsys.readouterr().err
    assert not (tmp_path / "plot.png").exists()


def test_capacity_from_bench_results_json(tmp_path: Path) -> None:
    """``trimodal bench``'s results.json: the saturation, and Triton's median p99 at concurrency 1."""
    row = {"baseline": "triton", "concurrency": 1, "mode": "concurrency"}
    levels = [{**row, "p99_ms": p99} for p99 in (15.0, 16.0, 21.0)]
    levels.append({"baseline": "naive", "concurrency": 1, "mode": "concurrency", "p99_ms": 99.0})
    path = tmp_path / "results.json"
    path.write_text(json.dumps({"meta": {"saturation_rps": 556.5}, "levels": levels}))
    assert capacity_from_benchmark(path) == ServiceModel(capacity_rps=556.5, base_p99_ms=16.0)
    assert capacity_from_benchmark(path, replicas=2).capacity_rps == pytest.approx(278.25)
