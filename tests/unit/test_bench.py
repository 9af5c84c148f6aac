"""Benchmarks: workload, validation, statistics, variants, perf_analyzer input, report and planner (no server)."""

import base64
import json
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from trimodal import contract
from trimodal.bench import BenchError
from trimodal.bench.baselines import naive_payload, no_batching_spec, render_variant, serving_variant
from trimodal.bench.commands import app as bench_app
from trimodal.bench.loadgen import LevelResult, batched_loop, closed_loop, summarize
from trimodal.bench.perf import level_from_row, parse_csv, write_input_data
from trimodal.bench.plan import make_plan
from trimodal.bench.report import evaluate, render_report, write_report
from trimodal.bench.results import BenchMeta, BenchResults, TuningResult
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
from trimodal.layout import Layout
from trimodal.spec import load_spec


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


@pytest.mark.parametrize("bad", ["video=1", "image=-1", "image=x", "image=1,image=2", "image=0", "", "image+image=1"])
def test_bad_mix_is_refused_with_the_entry(bad: str) -> None:
    with pytest.raises(BenchError):
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
    result = batched_loop(lambda chunk: sizes.append(len(chunk)), items, 8, duration_s=0.05, warmup_s=0.0,
                          baseline="local")  # fmt: skip
    assert set(sizes) == {8} and result.requests % 8 == 0 and result.throughput > 0


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

    source = tmp_path / "source"
    for model in contract.ENCODERS:
        (source / model / "1").mkdir(parents=True)
        for name in ("model.onnx", "model.fp16.onnx", "model.int8.onnx"):
            (source / model / "1" / name).write_bytes(b"onnx")
    (source / "preprocess_text" / "1").mkdir(parents=True)
    (source / "preprocess_text" / "1" / "tokenizer.json").write_text("{}")
    target = render_variant(no_batching_spec(load_spec()), source, tmp_path / "variant")
    assert (target / "text_encoder" / "1" / "model.onnx").is_symlink()
    assert (target / "text_encoder" / "1" / "model.int8.onnx").is_symlink()
    config = load_config(target / "text_encoder" / "configs" / "cpu.pbtxt")
    assert config.max_batch_size == 1 and config.dynamic_batching.max_queue_delay_microseconds == 0
    assert load_config(target / "multimodal" / "config.pbtxt").max_batch_size == 1
    with pytest.raises(BenchError, match="not built"):
        render_variant(load_spec(), tmp_path / "empty", tmp_path / "v2")


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


def _level(baseline: str, c: int, tput: float, p50: float, p99: float, **kw) -> LevelResult:
    return LevelResult(baseline, c, 100, 0, 10.0, tput, p50, p50 * 1.2, p99, p50, **kw)


def _results() -> BenchResults:
    util = {"text_encoder": {"requests": 100, "executions": 10, "avg_batch": 10, "queue_ms": 5, "compute_ms_per_exec":
            40, "utilization": 0.9}, "image_encoder": {"requests": 100, "executions": 10, "avg_batch": 10,
            "queue_ms": 1, "compute_ms_per_exec": 4, "utilization": 0.1}}  # fmt: skip
    levels = [
        _level("inprocess", 1, 50, 20, 22), _level("inprocess", 16, 300, 50, 55),
        _level("naive", 1, 40, 25, 30), _level("naive", 16, 40, 400, 450),
        _level("triton_nobatch", 1, 35, 28, 35), _level("triton_nobatch", 16, 100, 160, 200),
        _level("triton", 1, 38, 26, 33, breakdown=util), _level("triton", 16, 200, 80, 120, breakdown=util),
    ]  # fmt: skip
    perf = [
        _level("triton", 1, 40, 25, 30, tool="perf_analyzer"),
        _level("triton", 0, 140, 40, 100, mode="rate", rate=140.0, tool="perf_analyzer", breakdown=util),
    ]
    meta = BenchMeta(timestamp="T", machine="test", saturation_rps=200.0, instances={"text_encoder": 1})
    return BenchResults(meta=meta, levels=levels, perf=perf, tuning=[TuningResult("q0", "{}", "s")])


def test_evaluate_targets() -> None:
    targets = {t.name.split(" ")[0] + str(t.threshold): t for t in evaluate(_results())}
    sat = targets["Triton0.8"]
    assert sat.measured == pytest.approx(200 / 300) and sat.passed is False
    assert targets["Triton3.0"].measured == 5.0 and targets["Triton3.0"].passed is True
    assert targets["Dynamic2.0"].measured == 2.0 and targets["Dynamic2.0"].passed is True
    assert targets["p993.0"].measured == pytest.approx(100 / 25) and targets["p993.0"].passed is False


def test_report_names_the_bottleneck_and_writes_files(tmp_path: Path) -> None:
    results = _results()
    text = render_report(results)
    assert "**MISS**" in text and "PASS" in text and "**text_encoder**" in text and "q0" in text
    write_report(tmp_path, results, plots=False)
    assert (tmp_path / "report.md").exists() and (tmp_path / "levels.csv").read_text().count("\n") == 11


def test_plan_arithmetic() -> None:
    plan = make_plan(_results(), rps=500, p99_ms=125)
    assert plan.capacity_rps == 200 and plan.replicas == math.ceil(500 / (200 * 0.8))
    per_replica = 500 / plan.replicas
    assert plan.instances["text_encoder"] == math.ceil(0.9 * per_replica / 200 / 0.7)
    assert any("ceil(" in line for line in plan.lines)
    with pytest.raises(BenchError, match="lowest measured p99"):
        make_plan(_results(), rps=10, p99_ms=5)


# --- results files and the commands ----------------------------------------------------------------------

COMMITTED = Layout.default().results / "20261129T091905Z"


def test_results_round_trip(tmp_path: Path) -> None:
    results = _results()
    results.perf[0].p99_ms = float("nan")  # a failed level
    results.save(tmp_path)
    loaded = BenchResults.load(tmp_path)
    assert loaded.to_json() == results.to_json()
    assert loaded.meta.saturation_rps == 200.0 and loaded.tuning[0].name == "q0"
    (tmp_path / "results.json").write_text("{not json")
    with pytest.raises(BenchError, match="cannot read"):
        BenchResults.load(tmp_path)


def test_committed_results_load_unchanged_and_render_the_committed_report() -> None:
    results = BenchResults.load(COMMITTED)
    assert results.to_json() == (COMMITTED / "results.json").read_text(encoding="utf-8")
    assert results.meta.instances["text_encoder"] == 1 and results.tuning[1].levels
    assert render_report(results) == (COMMITTED / "report.md").read_text(encoding="utf-8")


def test_plan_command_reads_the_committed_results() -> None:
    runner = CliRunner()
    result = runner.invoke(bench_app, ["plan", "--rps", "500", "--p99-ms", "1000", "--results", str(COMMITTED)])
    assert result.exit_code == 0, result.output
    assert "replica(s); instances per replica:" in result.output and "ceil(" in result.output


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
