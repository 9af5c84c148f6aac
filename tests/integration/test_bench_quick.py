"""The benchmark machinery against the real server: closed loop + statistics API, perf_analyzer, report, plan."""

from pathlib import Path

import pytest

from trimodal import contract
from trimodal.bench import BenchError
from trimodal.bench.baselines import instance_counts, run_inprocess, run_triton
from trimodal.bench.plan import make_plan
from trimodal.bench.report import write_report
from trimodal.bench.results import BenchMeta, BenchResults
from trimodal.bench.workload import DEFAULT_MIX, build_workload, parse_mix
from trimodal.layout import Layout

REPOSITORY = Layout.default().repository.root

pytestmark = pytest.mark.integration


def test_bench_machinery_end_to_end(server, spec, test_split, tmp_path: Path) -> None:
    from trimodal.bench import perf

    items = build_workload(test_split, parse_mix(DEFAULT_MIX), 64)
    url = server.config.grpc_url
    instances = instance_counts(spec)
    levels = run_triton(url, "triton", spec, items, [1, 8], duration_s=4.0, warmup_s=1.0, instances=instances)
    # The server's queue policy may time out a request or two on a busy shared machine; answers are validated.
    assert all(x.errors <= 0.05 * max(1, x.requests) for x in levels), [x.first_error for x in levels]
    assert all(x.throughput > 0 for x in levels), [x.to_dict() for x in levels]
    busy = levels[-1].breakdown
    assert set(contract.ENCODERS) <= set(busy), busy.keys()
    assert all(busy[m]["avg_batch"] >= 1 and 0 < busy[m]["utilization"] <= 1.05 for m in contract.ENCODERS)
    levels += run_inprocess(spec, REPOSITORY, items, [1, 8], duration_s=1.0, warmup_s=0.2)

    results = BenchResults(meta=BenchMeta(timestamp="test", machine="test"), levels=levels)
    try:
        binary, env = perf.find_perf_analyzer(), perf.perf_env(tmp_path / "lib")
    except BenchError as exc:
        pytest.skip(f"perf_analyzer unavailable: {exc}")
    input_json = perf.write_input_data(items, tmp_path / "input.json")
    level = perf.run_level(url, input_json, tmp_path / "perf", "triton", "concurrency", 2, measurement_ms=1500,
                           instances=instances, env=env, binary=binary)  # fmt: skip
    log = (tmp_path / "perf" / "triton_concurrency_2.log").read_text()
    assert level.throughput > 0 and level.p99_ms > 0, log
    assert perf._command(binary, url, input_json, tmp_path / "x.csv", "concurrency", 2, 1500)[3:7] == [
        "-u", url, "-i", "grpc"], "perf_analyzer runs over gRPC, without the admin key"  # fmt: skip
    assert level.breakdown["fusion_classifier"]["requests"] > 0
    results.perf.append(level)

    report = write_report(tmp_path, results, plots=True).read_text()
    assert "Triton as configured" in report and (tmp_path / "throughput.png").stat().st_size > 0
    plan = make_plan(results, rps=100, p99_ms=10_000)
    assert plan.replicas >= 1 and plan.instances
