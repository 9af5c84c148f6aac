"""Benchmarks: workload, validation, statistics, variants, perf_analyzer input, report and planner (no server)."""

import base64
import csv
import gc
import json
import math
import re
import struct
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trimodal import contract
from trimodal.bench import BenchError
from trimodal.bench.baselines import naive_payload, no_batching_spec, render_variant, serving_variant
from trimodal.bench.commands import app as bench_app
from trimodal.bench.loadgen import LevelResult, batched_loop, closed_loop, open_loop, settle_heap, summarize
from trimodal.bench.perf import level_from_row, parse_csv, write_input_data
from trimodal.bench.plan import make_plan
from trimodal.bench.report import evaluate, render_report, write_report
from trimodal.bench.results import BenchMeta, BenchResults
from trimodal.bench.stats import Snapshot, bottleneck, breakdown, parse_statistics
from trimodal.bench.workload import (
    DEFAULT_MIX,
    SUBSETS,
    build_workload,
    check_label,
    check_probabilities,
    parse_label_entry,
    parse_mix,
)
from trimodal.layout import Layout, onnx_filename
from trimodal.spec import PRECISIONS, load_spec


@dataclass
class FakeSplit:
    images: list
    texts: list
    audio: list
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


def _split(n: int = 20) -> FakeSplit:
    return FakeSplit([b"png%d" % i for i in range(n)], [f"text {i}" for i in range(n)],
                     [b"wav%d" % i for i in range(n)], np.arange(n) % 10)  # fmt: skip


# --- workload --------------------------------------------------------------------------------------------


def test_default_mix_covers_every_subset_and_sums_to_one() -> None:
    mix = parse_mix(DEFAULT_MIX)
    assert set(mix) == set(SUBSETS)
    assert math.isclose(sum(mix.values()), 1.0)
    assert mix["image+text+audio"] > mix["text"]


def test_mix_is_order_insensitive_and_accepts_all() -> None:
    assert parse_mix("text+image=1, all=3") == {"image+text": 0.25, "image+text+audio": 0.75}


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("video=1", "mix entry 'video=1': expected a '+'-joined subset of ['image', 'text', 'audio']"),
        ("image=-1", "mix entry 'image=-1': weight must be a finite number >= 0, got '-1'"),
        ("image=x", "mix entry 'image=x': weight 'x' is not a number"),
        ("image=1,image=2", "mix entry 'image=2': subset 'image' is given twice"),
        ("image=0", "mix 'image=0': expected at least one subset with a weight > 0"),
        ("", "mix '': expected at least one subset with a weight > 0"),
        ("image+image=1", "mix entry 'image+image=1': expected a '+'-joined subset"),
    ],
)
def test_bad_mix_is_refused_with_the_entry(bad: str, says: str) -> None:
    with pytest.raises(BenchError, match=re.escape(says)):
        parse_mix(bad)


def test_workload_is_deterministic_and_respects_the_subsets() -> None:
    split = _split()
    mix = parse_mix("image=1,text+audio=1")
    first, second = build_workload(split, mix, 50, seed=3), build_workload(split, mix, 50, seed=3)
    assert [(w.subset, w.sample) for w in first] == [(w.subset, w.sample) for w in second]
    assert {w.subset for w in first} == {"image", "text+audio"}
    for item in first:
        image, text, audio = item.sample.encoded()
        assert bool(image) == ("image" in item.subset)
        assert bool(text) == ("text" in item.subset) and bool(audio) == ("audio" in item.subset)


def test_check_probabilities() -> None:
    good = np.full((1, 10), 0.1, dtype=np.float32)
    assert check_probabilities(good, 10).shape == (1, 10)
    with pytest.raises(BenchError, match="shape"):
        check_probabilities(good[:, :9], 10)
    with pytest.raises(BenchError, match="non-finite"):
        check_probabilities(np.where(np.arange(10) == 0, np.nan, 0.1)[None], 10)
    with pytest.raises(BenchError, match="sums to"):
        check_probabilities(good * 1.01, 10)
    with pytest.raises(BenchError, match="no PROBABILITIES"):
        check_probabilities(None, 10)


def test_labels() -> None:
    assert parse_label_entry(b"0.9:7:seven") == (0.9, 7, "seven")
    assert check_label("seven", ["six", "seven"]) == "seven"
    with pytest.raises(BenchError):
        check_label("eleven", ["six", "seven"])
    with pytest.raises(BenchError):
        parse_label_entry(b"garbage")


# --- load generation -------------------------------------------------------------------------------------


def test_summarize_percentiles_and_throughput() -> None:
    result = summarize("x", 4, [i / 1000 for i in range(1, 101)], errors=2, duration_s=2.0)
    assert result.requests == 100 and result.errors == 2 and result.throughput == 50.0
    assert result.p50_ms == pytest.approx(50.5) and result.p99_ms == pytest.approx(99.01)
    empty = summarize("x", 1, [], errors=3, duration_s=1.0)
    assert math.isnan(empty.p99_ms) and empty.throughput == 0.0


def test_closed_loop_counts_successes_and_failures() -> None:
    import asyncio

    items = build_workload(_split(), parse_mix("image=1"), 10)
    calls = {"n": 0}

    async def call(item) -> None:
        calls["n"] += 1
        await asyncio.sleep(0.002)
        if calls["n"] % 5 == 0:
            raise BenchError("bad answer")

    result = asyncio.run(closed_loop(call, items, 4, duration_s=0.3, warmup_s=0.05, baseline="fake"))
    assert result.requests > 10 and result.errors > 0 and "bad answer" in result.first_error
    assert result.throughput > 0 and result.p50_ms >= 2.0


def test_batched_loop_latency_is_the_batch_latency() -> None:
    items = build_workload(_split(), parse_mix("text=1"), 10)
    sizes = []

    def classify(chunk) -> None:  # a batch takes at least 10 ms, whatever its size
        sizes.append(len(chunk))
        time.sleep(0.010)

    result = batched_loop(classify, items, 8, duration_s=0.1, warmup_s=0.0, baseline="local")
    assert set(sizes) == {8} and result.requests % 8 == 0 and result.requests >= 8
    # every sample of a batch waited for the whole batch: >= 10 ms, not the 10 ms / 8 of a per-sample share
    assert result.p50_ms >= 10.0 and result.throughput <= 8 / 0.010


# --- statistics API --------------------------------------------------------------------------------------


def _stats(count: int, execs: int, busy_ns: int, queue_ns: int) -> dict:
    return {"model_stats": [{
        "name": "text_encoder", "version": "1", "execution_count": str(execs), "inference_count": str(count),
        "inference_stats": {"success": {"count": str(count), "ns": "1"}, "queue": {"count": str(count),
                            "ns": str(queue_ns)}, "compute_infer": {"count": str(count), "ns": "5"}},
        "batch_stats": [{"batch_size": "8", "compute_infer": {"count": str(execs), "ns": str(busy_ns)}}],
    }]}  # fmt: skip


def test_breakdown_utilization_batch_and_queue() -> None:
    before = Snapshot(0, parse_statistics(_stats(10, 2, 1_000_000, 0)))
    after = Snapshot(1_000_000_000, parse_statistics(_stats(90, 12, 501_000_000, 160_000_000)))
    rows = breakdown(before, after, {"text_encoder": 2})
    row = rows["text_encoder"]
    assert row["requests"] == 80 and row["avg_batch"] == 8.0
    assert row["queue_ms"] == 2.0 and row["compute_ms_per_exec"] == 50.0
    assert row["utilization"] == 0.25  # 500 ms busy over 1 s x 2 instances
    assert bottleneck(rows) == "text_encoder" and bottleneck({}) is None


# --- variants --------------------------------------------------------------------------------------------


def test_no_batching_variant() -> None:
    spec = load_spec()
    variant = no_batching_spec(spec)
    assert variant.serving.ensemble_max_batch_size == 1
    for model in (*contract.PREPROCESSORS, *contract.ENCODERS):
        resolved = variant.serving.resolved(model)
        assert resolved.max_batch_size == 1 and resolved.max_queue_delay_us == 0
        assert resolved.preferred_batch_sizes == []
        assert resolved.cpu_instances == spec.serving.resolved(model).cpu_instances
    assert spec.serving.ensemble_max_batch_size > 1  # the original is untouched


def test_serving_variant_merges_model_overrides() -> None:
    spec = load_spec()
    variant = serving_variant(spec, ort_threads=2, models={"text_encoder": {"cpu_instances": 3}})
    assert variant.serving.resolved("text_encoder").cpu_instances == 3
    assert variant.serving.resolved("image_encoder").ort_threads == 2
    with pytest.raises(BenchError):
        serving_variant(spec, max_batch_size=4)  # ensemble max batch would exceed it


def test_render_variant_links_the_artifacts(tmp_path: Path) -> None:
    from trimodal.triton.validate import load_config

    source = _built_repo(tmp_path / "source")
    target = render_variant(no_batching_spec(load_spec()), source, tmp_path / "variant")
    assert (target / "text_encoder" / "1" / "model.onnx").is_symlink()
    assert (target / "text_encoder" / "1" / "model.int8.onnx").is_symlink()
    config = load_config(target / "text_encoder" / "configs" / "cpu.pbtxt")
    assert config.max_batch_size == 1 and config.dynamic_batching.max_queue_delay_microseconds == 0
    assert load_config(target / "multimodal" / "config.pbtxt").max_batch_size == 1
    with pytest.raises(BenchError, match="not built"):
        render_variant(load_spec(), tmp_path / "empty", tmp_path / "v2")


def _built_repo(root: Path) -> Path:
    for model in contract.ENCODERS:
        (root / model / "1").mkdir(parents=True)
        for precision in PRECISIONS:
            (root / model / "1" / onnx_filename(precision)).write_bytes(b"onnx")
    (root / "preprocess_text" / "1").mkdir(parents=True)
    (root / "preprocess_text" / "1" / "tokenizer.json").write_text("{}")
    return root


def test_fp32_padded_variant_renders_trim_padding_false(tmp_path: Path) -> None:
    from trimodal.bench.baselines import fp32_padded_spec
    from trimodal.triton.validate import load_config

    source = _built_repo(tmp_path / "source")
    shipped_spec = load_spec()
    int8 = shipped_spec.precision.model_copy(
        update={"cpu": shipped_spec.precision.cpu.model_copy(update={"default": "int8", "models": {}})}
    )
    spec = shipped_spec.model_copy(update={"precision": int8})  # whatever the shipped precision, the variant is fp32
    padded = fp32_padded_spec(spec)
    assert {padded.precision.of(m, t) for m in contract.ENCODERS for t in ("cpu", "gpu")} == {"fp32"}
    shipped = render_variant(spec, source, tmp_path / "shipped")
    variant = render_variant(padded, source, tmp_path / "padded", trim=False)
    text = load_config(shipped / "text_encoder" / "configs" / "cpu.pbtxt")
    assert text.parameters["trim_padding"].string_value == "true"
    assert text.parameters["onnx_file"].string_value == "model.int8.onnx"
    text = load_config(variant / "text_encoder" / "configs" / "cpu.pbtxt")
    assert text.parameters["trim_padding"].string_value == "false"
    assert text.parameters["onnx_file"].string_value == "model.onnx"
    image = load_config(variant / "image_encoder" / "configs" / "cpu.pbtxt")
    assert "trim_padding" not in image.parameters and image.parameters["onnx_file"].string_value == "model.onnx"


def test_instance_counts_cover_every_composing_model() -> None:
    from trimodal.bench.baselines import instance_counts

    counts = instance_counts(load_spec())
    assert set(counts) == set(contract.MODEL_NAMES) and contract.POSTPROCESS in counts
    assert len(counts) == len(contract.MODEL_NAMES) == 8  # + the ensemble = the 9 models of the repository


# --- perf_analyzer ---------------------------------------------------------------------------------------


def test_perf_input_data_serializes_bytes_tensors(tmp_path: Path) -> None:
    items = build_workload(_split(), parse_mix("image+text=1"), 3)
    data = json.loads(write_input_data(items, tmp_path / "in.json").read_text())["data"]
    assert len(data) == 3
    raw = base64.b64decode(data[0][contract.IMAGE]["b64"])
    assert struct.unpack("<I", raw[:4])[0] == len(raw) - 4 and raw[4:] == items[0].sample.image
    assert base64.b64decode(data[0][contract.AUDIO]["b64"]) == b"\0\0\0\0"  # absent = empty element
    assert data[0][contract.TEXT]["shape"] == [1]


def test_perf_csv_row_to_level(tmp_path: Path) -> None:
    path = tmp_path / "pa.csv"
    path.write_text("Concurrency,Inferences/Second,Client Send,p50 latency,p95 latency,p99 latency,Avg latency\n"
                    "16,250.5,12,40000,55000,61000,42000\n")  # fmt: skip
    level = level_from_row(parse_csv(path)[0], "triton", "concurrency", 16)
    assert level.concurrency == 16 and level.throughput == 250.5 and level.p99_ms == 61.0


def test_naive_payload_round_trips() -> None:
    item = build_workload(_split(), parse_mix("image+text=1"), 1)[0]
    body = json.loads(naive_payload(item))
    assert base64.b64decode(body["image"]) == item.sample.image and body["audio"] is None


# --- report and planner ----------------------------------------------------------------------------------

UTIL = {"text_encoder": {"requests": 100, "executions": 10, "avg_batch": 10, "queue_ms": 5, "compute_ms_per_exec": 40,
        "utilization": 0.9}, "image_encoder": {"requests": 100, "executions": 10, "avg_batch": 10, "queue_ms": 1,
        "compute_ms_per_exec": 4, "utilization": 0.1}}  # fmt: skip
PADDED = {"text_encoder": {**UTIL["text_encoder"], "compute_ms_per_exec": 160}}  # 16 ms/sample vs 4 ms


def _level(baseline: str, c: int, tput: float, p50: float, p99: float, **kw) -> LevelResult:
    return LevelResult(baseline, c, 100, 0, 10.0, tput, p50, p50 * 1.2, p99, p50, **kw)


def _poisson(rate: float, achieved: float, p99: float, repetition: int = 1, errors: int = 0) -> LevelResult:
    level = _level("triton", 0, achieved, p99 / 3, p99, mode="rate", rate=rate, breakdown=UTIL, repetition=repetition,
                   achieved_rps=achieved)  # fmt: skip
    level.errors = errors
    return level


def _results() -> BenchResults:
    levels = [
        _level("inprocess", 1, 50, 20, 22, tool="t1"), _level("inprocess", 16, 300, 50, 55, tool="t1"),
        _level("inprocess", 16, 250, 50, 55, tool="t2"),
        _level("naive", 1, 40, 25, 30), _level("naive", 16, 40, 400, 450),
        _level("naive_workers", 1, 45, 25, 30), _level("naive_workers", 16, 30, 400, 450),
        _level("triton_nobatch", 1, 35, 28, 35), _level("triton_nobatch", 16, 100, 160, 200),
        _level("triton_fp32pad", 16, 90, 160, 200, breakdown=PADDED),
        _level("triton", 1, 38, 25, 33, breakdown=UTIL), _level("triton", 16, 200, 80, 120, breakdown=UTIL),
        # a closed-loop level with better numbers than any open-loop one: never a capacity
        _level("triton", 32, 210, 90, 100, breakdown=UTIL),
        _poisson(60, 59, 60), _poisson(100, 98, 90), _poisson(140, 139, 110), _poisson(160, 158, 130),
        _poisson(180, 150, 400),
    ]  # fmt: skip
    accuracy = {"triton": {"correct": 90, "total": 100},
                "triton_fp32pad": {"correct": 90, "total": 100, "same_label_as_triton": 99}}  # fmt: skip
    meta = BenchMeta(timestamp="T", machine="2 CPU cores (test)", instances={"text_encoder": 1}, cores=2,
                     repetitions=1, stale_configs=[], commit="abc", accuracy=accuracy)  # fmt: skip
    return BenchResults(meta=meta, levels=levels)


def _targets(results: BenchResults) -> dict[str, object]:
    return {t.name: t for t in evaluate(results)}


def test_evaluate_targets() -> None:
    from trimodal.bench import report

    targets = _targets(_results())
    sat = targets[report.SATURATION_TARGET]
    assert sat.measured == pytest.approx(210 / 300) and sat.passed is False  # best setting, best level
    naive = targets[report.NAIVE_TARGET]
    assert naive.measured == 5.0 and naive.passed is True  # vs the better naive variant at c=16 (40 > 30)
    assert "each at its best" in naive.detail and "naive_workers 45.0/s (c=1)" in naive.detail
    assert targets[report.BATCHING_TARGET].measured == 2.0
    # 70% of 210 = 147 req/s, between the 140 (p99 110) and 160 (p99 130) req/s levels: p99 117, p50 at c=1 = 25
    latency = targets[report.COMPRESSION_LATENCY]
    assert latency.measured == pytest.approx(117 / 25) and latency.passed is True
    assert "interpolated between the Poisson levels 140 req/s" in latency.detail
    assert targets[report.LATENCY_TARGET].passed is False  # same measurement, 3x threshold
    throughput = targets[report.COMPRESSION_THROUGHPUT]
    assert throughput.measured == pytest.approx(210 / 90) and throughput.passed is True
    compute = targets[report.COMPRESSION_COMPUTE]
    assert compute.measured == pytest.approx(4.0) and compute.passed is True and "c=16" in compute.detail
    assert targets[report.SHIPPED_TARGET].passed is True


def test_compression_targets_need_equal_accuracy_and_achieved_rate() -> None:
    from trimodal.bench import report

    results = _results()
    results.meta.accuracy["triton_fp32pad"]["correct"] = 95  # 5 points better uncompressed: not equal
    results.levels = [x for x in results.levels if x.rate != 140] + [_poisson(140, 120, 110)]  # 86% achieved
    results.meta.stale_configs = ["text_encoder/configs/cpu.pbtxt"]
    targets = _targets(results)
    assert targets[report.COMPRESSION_THROUGHPUT].passed is False
    assert "NOT equal" in targets[report.COMPRESSION_COMPUTE].detail
    assert targets[report.COMPRESSION_LATENCY].passed is False  # p99 fine, but the rate was not achieved
    assert targets[report.SHIPPED_TARGET].passed is False


def test_latency_target_without_a_level_on_each_side() -> None:
    """A quick run at one rate: the nearest level stands in, and never from below 95% of 70% of saturation."""
    from trimodal.bench import report

    results = _results()
    results.levels = [x for x in results.levels if x.mode != "rate" or x.rate == 140]  # 140 < 147: one side only
    latency = _targets(results)[report.COMPRESSION_LATENCY]
    assert latency.measured == pytest.approx(110 / 25) and latency.passed is True  # 140 >= 0.95 * 147
    assert latency.detail.startswith("nearest level Poisson 140 req/s (67% of saturation")
    results.levels = [x for x in results.levels if x.rate != 140] + [_poisson(130, 129, 80)]  # 130 < 0.95 * 147
    latency = _targets(results)[report.COMPRESSION_LATENCY]
    assert latency.measured == pytest.approx(80 / 25) and latency.passed is False
    assert "cannot pass" in latency.detail


def test_p99_interpolation_is_linear_in_the_rate() -> None:
    from trimodal.bench import report
    from trimodal.bench.aggregate import rows

    low, high = (row for row in rows(_results().levels) if row.mode == "rate" and row.rate in (140, 160))
    assert report.bracket([low, high], 147) == (low, high) and report.bracket([low], 147) is None
    assert report.p99_at(low, high, 140) == pytest.approx(110) and report.p99_at(low, high, 150) == pytest.approx(120)


def test_report_names_the_bottleneck_and_writes_files(tmp_path: Path) -> None:
    results = _results()
    text = render_report(results)
    assert "**missed**" in text and "| met |" in text and "**text_encoder**" in text
    assert "capacity at p99 <= 100 ms: **100 req/s**" in text and "p99 <= 250 ms: **160 req/s**" in text
    results.levels[-1].scheduled_rps = 171.25  # the 180 req/s level: what meets_rate compares achieved with
    write_report(tmp_path, results, plots=False)
    assert (tmp_path / "report.md").exists()
    with (tmp_path / "levels.csv").open(newline="") as handle:
        table = list(csv.DictReader(handle))
    assert len(table) == 18 and table[-1]["rate"] == "180" and table[-1]["scheduled_rps"] == "171.25"


def test_median_and_range_over_repetitions() -> None:
    from trimodal.bench.aggregate import rows, spread

    assert spread([3.0, 1.0, 2.0, float("nan"), None]).text() == "2.0 [1.0-3.0]"
    assert spread([5.0]).text() == "5.0" and spread([]).text() == "-"
    levels = [_level("triton", 16, tput, 80, p99, repetition=r) for r, (tput, p99) in
              enumerate([(200, 120), (180, 300), (210, 110)], 1)]  # fmt: skip
    levels.append(_level("triton", 1, 40, 25, 30))
    grouped = rows(levels)
    assert [(row.concurrency, len(row.levels)) for row in grouped] == [(1, 1), (16, 3)]
    assert grouped[1].throughput.text() == "200.0 [180.0-210.0]" and grouped[1].p99.median == 120
    assert "200.0 [180.0-210.0]" in render_report(BenchResults(meta=BenchMeta(cores=2), levels=levels))


def test_capacity_comes_from_open_loop_levels_only() -> None:
    from trimodal.bench.aggregate import capacity, rows

    all_rows = rows(_results().levels)
    chosen, walked = capacity(all_rows, 115)
    assert chosen.rate == 140 and chosen.mode == "rate"  # not the closed-loop c=32 (210/s at p99 100 ms)
    assert len(walked) == 4 and "misses" in walked[-1] and walked[2].endswith("meets")
    assert capacity(all_rows, 100)[1][-1].endswith("misses: p99")
    assert capacity(all_rows, 1000)[0].rate == 160  # 180 req/s achieved only 150: not a capacity
    assert capacity(all_rows, 50)[0] is None
    errors = rows([*_results().levels, _poisson(100, 98, 90, repetition=2, errors=1)])
    assert capacity(errors, 115)[0].rate == 60  # one repetition with an error: 100 req/s does not count
    # 140 req/s in three windows: p99 110, 100, 300 ms. The median (110) meets 115 ms, the worst window does not:
    # over all its requests, the p99 at that rate is above 115 ms, so 140 req/s is no capacity at p99 <= 115 ms
    one_slow = rows([*_results().levels, _poisson(140, 139, 100, repetition=2), _poisson(140, 139, 300, repetition=3)])
    chosen, walked = capacity(one_slow, 115)
    assert next(row for row in one_slow if row.rate == 140).p99.median == 110
    assert chosen.rate == 100 and walked[-1].endswith("misses: p99")


def test_plan_arithmetic() -> None:
    plan = make_plan(_results(), rps=500, p99_ms=115)
    assert plan.capacity_rps == 140 and plan.replicas == math.ceil(500 / (140 * 0.8))
    per_replica = 500 / plan.replicas
    assert plan.instances["text_encoder"] == math.ceil(0.9 * per_replica / 139 / 0.7)
    assert plan.hpa_target == math.floor(0.7 * 140) == 98
    assert any("requestRate.target" in line and "floor(0.7 * 140) = 98" in line for line in plan.lines)
    with pytest.raises(BenchError, match="no open-loop level meets"):
        make_plan(_results(), rps=10, p99_ms=5)
    closed_only = BenchResults(meta=BenchMeta(), levels=[_level("triton", 16, 200, 80, 120)])
    with pytest.raises(BenchError, match="closed-loop levels hide queueing"):
        make_plan(closed_only, rps=10, p99_ms=1000)


def test_busy_machine_warning() -> None:
    from trimodal.bench.cpuload import CpuSample, outside_cores
    from trimodal.bench.report import load_warnings

    assert outside_cores(CpuSample(0, 10, 1), CpuSample(2, 13, 2)) == 1.0  # 3 busy s, 1 ours, over 2 s
    assert outside_cores(CpuSample(0, 10, 1), CpuSample(2, 10, 3)) == 0.0
    results = _results()
    for level in results.levels:
        level.outside_cores = 0.1
    results.meta.load_before = 0.4
    assert load_warnings(results) == [] and "WARNING" not in render_report(results)
    results.levels[3].outside_cores = 1.5
    results.meta.load_before = 3.0
    warnings = load_warnings(results)
    assert len(warnings) == 2 and "1 of 18 levels" in warnings[1] and "1.50 cores" in warnings[1]
    assert "WARNING: busy machine" in render_report(results)


def test_cpu_per_answer_compares_the_poisson_levels_with_saturation() -> None:
    from trimodal.bench.cpuload import CpuSample, run_cores

    assert run_cores(CpuSample(0, 10, 1), CpuSample(2, 13, 2)) == 0.5  # 1 s of ours over 2 s
    assert run_cores(CpuSample(0, 10, 1), CpuSample(0, 13, 2)) == 0.0  # no time passed
    results = _results()
    text = render_report(results)
    assert "x the CPU per answer of saturation" not in text  # older results: nothing recorded, nothing claimed
    for level in results.levels:
        level.run_cores = 1.0
    saturation = results.levels[12]  # triton c=32: 210 answers/s
    assert saturation.concurrency == 32 and saturation.cpu_ms_per_answer() == pytest.approx(1000 / 210)
    poisson = results.levels[14]  # 100 req/s offered, 98 achieved: the open loop divides by what was answered
    assert poisson.mode == "rate" and poisson.cpu_ms_per_answer() == pytest.approx(1000 / 98)
    text = render_report(results)
    assert f"- Poisson 100 req/s: {210 / 98:.2f}x the CPU per answer of saturation, 1.00 cores busy." in text
    assert f"| 100 | 98.0 | 0 | 30.0 | 90.0 | - | 1.00 | {1000 / 98:.2f} | yes |" in text
    assert f"| Triton as configured | 32 | 210.0 | 90.0 | 100.0 | 0 | {1000 / 210:.2f} |" in text


def test_cpu_time_of_this_run_is_read_from_proc() -> None:
    from trimodal.bench.cpuload import machine_busy_s, run_cpu_s

    ours = run_cpu_s()
    sum(i * i for i in range(300_000))  # burn a little CPU
    assert run_cpu_s() > ours and machine_busy_s() > 0
    assert run_cpu_s(root=2**22 + 12345) == 0.0  # no such process


def test_schedule_interleaves_repetitions_levels_and_baselines() -> None:
    from trimodal.bench.run import schedule

    steps = schedule(["a", "b", "c"], ["c"], [1, 16], [0.5], repetitions=3)
    assert len(steps) == 3 * (2 * 3 + 1)
    first = [(s.repetition, s.mode, s.level, s.runner) for s in steps[:7]]
    assert first == [(1, "concurrency", 1, "a"), (1, "concurrency", 1, "b"), (1, "concurrency", 1, "c"),
                     (1, "concurrency", 16, "a"), (1, "concurrency", 16, "b"), (1, "concurrency", 16, "c"),
                     (1, "rate", 0.5, "c")]  # fmt: skip
    assert [s.runner for s in steps[7:10]] == ["b", "c", "a"]  # rotated in repetition 2
    assert [s.repetition for s in steps] == sorted(s.repetition for s in steps)  # never one baseline's block


def test_inprocess_settings_use_the_whole_machine() -> None:
    from trimodal.bench.inprocess import settings_for, split

    names = [s.name for s in settings_for(4)]
    assert names == ["ORT threads 4 x 1 worker", "ORT threads 1 x 4 workers", "4 processes x ORT threads 1"]
    assert len(settings_for(1)) == 2  # threads 1 x 1 worker is the same as 1 worker x 1 thread
    assert split(16, 2, 32) == (2, 8) and split(1, 2, 32) == (1, 1) and split(64, 1, 32) == (1, 32)


def test_open_loop_times_latency_from_the_scheduled_send() -> None:
    import asyncio
    import time

    items = build_workload(_split(), parse_mix("image=1"), 10)

    async def slow_client(item) -> bool:
        time.sleep(0.02)  # blocks the event loop: the client itself cannot send more than ~50/s
        return True

    async def fast(item) -> bool:
        await asyncio.sleep(0.001)
        return item.label % 2 == 0

    lagging = asyncio.run(open_loop(slow_client, items, 200, duration_s=0.5, warmup_s=0.1, baseline="x"))
    assert lagging.mode == "rate" and lagging.rate == 200 and lagging.lag_p99_ms > 100
    assert lagging.p50_ms > 100  # from scheduled send: the client's lag is latency, not hidden
    assert not lagging.meets_rate() and lagging.achieved_rps < 0.95 * lagging.scheduled_rps
    assert 100 < lagging.scheduled_rps < 300  # the Poisson schedule's own rate over 0.5 s, around the nominal 200
    easy = asyncio.run(open_loop(fast, items, 50, duration_s=1.0, warmup_s=0.1, baseline="x"))
    assert easy.errors == 0 and easy.p99_ms < 50 and easy.meets_rate(0.5)
    assert 0 < easy.correct < easy.requests  # the answers judged correct are counted


def test_meets_rate_compares_with_the_rate_the_schedule_offered() -> None:
    """Over 2.5 s a Poisson schedule of 316.7 req/s may place only 303/s in the window: a server answering 300/s
    kept up with what arrived. Results without ``scheduled_rps`` (older runs) compare with the nominal rate."""
    import dataclasses

    level = LevelResult("triton", 0, 757, 0, 2.5, 300.0, 20.0, 30.0, 40.0, 22.0, mode="rate", rate=316.7,
                        achieved_rps=300.0, scheduled_rps=303.0)  # fmt: skip
    assert level.meets_rate()
    assert not dataclasses.replace(level, scheduled_rps=None).meets_rate()
    assert not dataclasses.replace(level, achieved_rps=280.0).meets_rate()
    assert not dataclasses.replace(level, errors=1).meets_rate()
    assert LevelResult.from_dict(level.to_dict()).scheduled_rps == 303.0


# --- results files and the commands ----------------------------------------------------------------------

COMMITTED = Layout.default().results / "20261129T091905Z"


def test_results_round_trip(tmp_path: Path) -> None:
    results = _results()
    results.levels[0].p99_ms = float("nan")  # a failed level
    results.save(tmp_path)
    loaded = BenchResults.load(tmp_path)
    assert loaded.to_json() == results.to_json()
    assert loaded.meta.accuracy["triton"]["correct"] == 90 and loaded.levels[-1].achieved_rps == 150
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(BenchError, match="cannot read"):
        BenchResults.load(tmp_path)


def test_committed_results_load_unchanged_and_render_the_committed_report() -> None:
    results = BenchResults.load(COMMITTED)
    assert results.to_json() == (COMMITTED / "results.json").read_text(encoding="utf-8")
    assert results.meta.instances["text_encoder"] == 1 and results.tuning[1].levels
    assert render_report(results) == (COMMITTED / "report.md").read_text(encoding="utf-8")


def test_plan_refuses_results_without_open_loop_levels() -> None:
    result = CliRunner().invoke(bench_app, ["plan", "--rps", "500", "--p99-ms", "1000", "--results", str(COMMITTED)])
    assert result.exit_code == 1 and "closed-loop levels hide queueing" in result.output  # the pre-method run


def test_plan_command_prints_the_arithmetic(tmp_path: Path) -> None:
    _results().save(tmp_path)
    result = CliRunner().invoke(bench_app, ["plan", "--rps", "500", "--p99-ms", "115", "--results", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "replica(s); instances per replica:" in result.output and "ceil(" in result.output
    assert "X = 140 req/s" in result.output and "requestRate.target" in result.output
    as_json = CliRunner().invoke(bench_app, ["plan", "--rps", "500", "--p99-ms", "115", "--results", str(tmp_path),
                                             "--json"])  # fmt: skip
    assert json.loads(as_json.output)["hpa_request_rate_target"] == 98


def test_chart_request_rate_target_is_the_plan_of_the_newest_results() -> None:
    """The chart's per-pod request-rate target = `trimodal plan --p99-ms 250` on the newest committed results."""
    import yaml

    from trimodal.bench.plan import CHART_P99_MS, latest_results, plan_from_folder

    folder = latest_results(Layout.default().results)
    try:
        plan = plan_from_folder(folder, rps=500, p99_ms=CHART_P99_MS)
    except BenchError as exc:
        if "closed-loop levels hide queueing" in str(exc):
            pytest.skip(f"{folder.name} predates the open-loop method: commit a `trimodal bench` run")
        raise
    values = yaml.safe_load((Layout.default().deploy / "helm" / "trimodal" / "values.yaml").read_text())
    assert int(values["autoscaling"]["metrics"]["requestRate"]["target"]) == plan.hpa_target, plan.lines


@pytest.mark.parametrize(
    "args",
    [["plan", "--rps", "0", "--p99-ms", "100"], ["bench", "--baselines", "nope"], ["bench", "--rates", "2"]],
)
def test_commands_fail_cleanly(args: list[str]) -> None:
    result = CliRunner().invoke(bench_app, [*args, *(["--results", str(COMMITTED)] if args[0] == "plan" else [])])
    assert result.exit_code == 1 and "error: " in result.output and "Traceback" not in result.output


def test_naive_model_runs_the_one_pipeline_with_torch_infer() -> None:
    torch = pytest.importorskip("torch")
    from trimodal.bench.naive_server import NaiveModel, torch_infer
    from trimodal.errors import PreprocessError
    from trimodal.layout import tokenizer_source
    from trimodal.runtime.pipeline import Preprocessor

    spec = load_spec()
    ios = contract.model_io(spec)
    seen: dict[str, list[tuple[int, ...]]] = {}

    def encoder(name: str):
        dim = ios[name].outputs[0].dims[0]

        def forward(*inputs):
            seen[name] = [tuple(x.shape) for x in inputs]
            return torch.zeros(len(inputs[0]), dim)

        return forward

    def fusion(*inputs):
        seen[contract.FUSION] = [tuple(x.shape) for x in inputs]
        probabilities = torch.full((len(inputs[0]), spec.num_classes), 1.0 / spec.num_classes)
        return probabilities, probabilities.unsqueeze(1).repeat(1, len(contract.MODALITIES), 1)

    model = NaiveModel.__new__(NaiveModel)
    model.spec = spec
    model.preprocess = Preprocessor(spec, tokenizer_source())
    model.infer = torch_infer(spec, {**{m: encoder(m) for m in contract.ENCODERS[:3]}, contract.FUSION: fusion})
    probabilities = model.classify(b"", b"seven", b"")
    assert len(probabilities) == spec.num_classes and math.isclose(sum(probabilities), 1.0, rel_tol=1e-5)
    assert len(seen["text_encoder"]) == 2 and len(seen[contract.FUSION]) == 6  # inputs in contract order
    assert seen[contract.FUSION][3:] == [(1, 1)] * 3  # the three masks last
    with pytest.raises(PreprocessError, match="every modality empty"):
        model.classify(b"", b"", b"")


def test_settle_heap_collects_cycles_and_freezes_the_survivors() -> None:
    class Node:
        def __init__(self) -> None:
            self.other: Node | None = None

    def cycle() -> Node:
        a, b = Node(), Node()
        a.other, b.other = b, a
        return a

    garbage = weakref.ref(cycle())
    survivor = cycle()
    frozen_before = gc.get_freeze_count()
    try:
        frozen = settle_heap()
        assert garbage() is None  # the unreachable cycle was collected before the freeze
        assert frozen == gc.get_freeze_count() > frozen_before
        assert all(obj is not survivor for obj in gc.get_objects(generation=2))  # frozen: out of every generation
    finally:
        gc.unfreeze()


def test_batch_cost_fit_separates_per_request_and_per_execution_cpu() -> None:
    from trimodal.bench.batchcost import CLIENT, SERVER, fit, fits, median_level, stage_execution_ms, table

    # stub "a": 0.5 ms per request + 0.8 ms per execution; the server: 0.2 + 0.3 per execution of any stage
    levels = []
    for c, batch in ((1, 1.0), (4, 2.0), (16, 4.0), (32, 8.0)):
        per_exec = {"a": 1 / batch, "b": 1 / batch}
        cpu = {"a": 0.5 + 0.8 / batch, "b": 0.1 + 0.4 / batch, SERVER: 0.2 + 0.3 * 2 / batch, CLIENT: 1.0}
        levels.append({"concurrency": c, "requests_per_s": 10.0 * c, "cpu_ms_per_request": cpu,
                       "executions_per_request": per_exec})  # fmt: skip
    a = fit(levels, "a")
    assert a.per_request_ms == pytest.approx(0.5) and a.per_execution_ms == pytest.approx(0.8) and a.r2 > 0.999
    assert fit(levels, SERVER).per_execution_ms == pytest.approx(0.3)  # on the executions of every stage
    client = fit(levels, CLIENT)
    assert client.per_request_ms == 1.0 and client.per_execution_ms == 0.0 and math.isnan(client.r2)
    assert stage_execution_ms(fits(levels)) == pytest.approx(1.2)  # a + b, the server left out
    assert median_level(levels, 16)["requests_per_s"] == 160.0
    with pytest.raises(ValueError, match="no level at concurrency 2"):
        median_level(levels, 2)
    lines = table(levels)
    assert "| a | 0.50 | 0.80 | 1.00 | 1.30 | 0.60 | 0.12 |" in lines
    assert lines[-1].startswith("Requests/s: 10.0 at c=1, 320.0 at c=32. One execution of every stage costs 1.20 ms")


def test_named_members_and_process_cpu_of_a_process_group() -> None:
    import subprocess
    import sys
    import time

    from trimodal.bench.cpuload import process_cpu_s
    from trimodal.triton.processes import named_members

    busy = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.2: pass\ntime.sleep(30)"
    child = subprocess.Popen([sys.executable, "-c", busy], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while process_cpu_s(child.pid) < 0.15 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert named_members(child.pid, server="server") == {child.pid: "server"}  # no stub in this group
        assert process_cpu_s(child.pid) >= 0.15
    finally:
        child.kill()
        child.wait()
    assert process_cpu_s(child.pid) == 0.0 and named_members(child.pid) == {}
