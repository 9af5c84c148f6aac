"""trimodal.tensorrt.preflight: every mismatch between plans, TensorRT/GPU and config.pbtxt, in one sentence.

And trimodal.tensorrt.accuracy's report (engines vs ONNX Runtime).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
from google.protobuf import text_format
from spec_helpers import with_changes

from trimodal import contract
from trimodal.contract import ENCODERS, TensorSpec
from trimodal.errors import EngineError
from trimodal.tensorrt import accuracy
from trimodal.tensorrt.metadata import PlanMetadata, metadata_path, sha256_file, write_metadata
from trimodal.tensorrt.preflight import Problem, check_engines, errors
from trimodal.tensorrt.profiles import profile_shapes
from trimodal.tensorrt.runtime import RuntimeInfo
from trimodal.triton.config import gpu_config

RUNTIME = RuntimeInfo("10.13.3.9", "NVIDIA L4", "8.9")
REBUILD = "`trimodal build-engines`"


def write_config(repo, spec, model, mutate=None):
    config = gpu_config(spec, model, contract.model_io(spec)[model])
    if mutate:
        mutate(config)
    (repo / model).mkdir(parents=True, exist_ok=True)
    (repo / model / "config.pbtxt").write_text(text_format.MessageToString(config))


def write_plan(repo, spec, model, filename="model.plan", runtime=RUNTIME, **overrides):
    plan = repo / model / "1" / filename
    plan.parent.mkdir(parents=True, exist_ok=True)
    plan.write_bytes(f"plan of {model} {filename}".encode())
    io = contract.model_io(spec)[model]
    meta = PlanMetadata(
        model=model,
        plan_file=filename,
        precision=spec.precision.of(model, "gpu"),
        tensorrt_version=runtime.tensorrt_version,
        gpu_name=runtime.gpu_name,
        compute_capability=runtime.compute_capability,
        profiles=profile_shapes(spec, model),
        inputs=io.inputs,
        outputs=io.outputs,
        onnx_file="model.fp16.onnx",
        onnx_sha256="0" * 64,
        plan_sha256=sha256_file(plan),
        workspace_mib=2048,
        built_at="2026-11-29T08:00:00+00:00",
    )
    meta = dataclasses.replace(meta, **overrides)
    write_metadata(plan, meta)
    return plan


@pytest.fixture()
def repo(tmp_path, spec):
    for model in ENCODERS:
        write_config(tmp_path, spec, model)
        write_plan(tmp_path, spec, model)
    return tmp_path


def messages(problems: list[Problem], severity="error") -> list[str]:
    return [p.message for p in problems if p.severity == severity]


def only(problems: list[Problem], severity="error") -> str:
    found = messages(problems, severity)
    assert len(found) == 1, found
    message = found[0]
    # one sentence: no sentence break inside, and the fix is named
    assert ". " not in message.replace("e.g. ", ""), message
    return message


def test_consistent_repository_has_no_problems(repo, spec):
    assert check_engines(spec, repo, RUNTIME) == []


def test_tensorrt_version_mismatch(repo, spec):
    problems = check_engines(spec, repo, dataclasses.replace(RUNTIME, tensorrt_version="10.14.1.48"))
    assert len(messages(problems)) == len(ENCODERS)
    message = next(p.message for p in problems if p.model == "image_encoder")
    assert message == (
        "image_encoder/1/model.plan was built with TensorRT 10.13.3.9 but this server runs TensorRT 10.14.1.48, "
        'so Triton would fail to deserialize it ("magic tag" / version error); rebuild it in the serving '
        f"release's container with {REBUILD}"
    )


def test_compute_capability_mismatch(repo, spec):
    problems = check_engines(spec, repo, RuntimeInfo("10.13.3.9", "NVIDIA A10", "8.6"), models=("audio_encoder",))
    assert only(problems) == (
        "audio_encoder/1/model.plan was built for compute capability 8.9 (NVIDIA L4) but this GPU is NVIDIA A10 "
        f"with compute capability 8.6; rebuild it on this GPU with {REBUILD}"
    )


def test_same_architecture_other_gpu_is_a_warning(repo, spec):
    problems = check_engines(spec, repo, dataclasses.replace(RUNTIME, gpu_name="NVIDIA RTX 4090"),
                             models=("audio_encoder",))  # fmt: skip
    assert messages(problems) == []
    assert "built on NVIDIA L4 and runs on NVIDIA RTX 4090" in only(problems, "warning")


def test_max_batch_size_beyond_profile(repo, spec):
    write_config(repo, spec, "image_encoder", lambda c: setattr(c, "max_batch_size", 64))
    problems = check_engines(spec, repo, RUNTIME, models=("image_encoder",))
    assert only(problems) == (
        "image_encoder/config.pbtxt has max_batch_size 64 but image_encoder/1/model.plan was built with an "
        f"optimization profile for batches up to 32; rebuild it with {REBUILD}"
    )


def test_zero_max_batch_size(repo, spec):
    write_config(repo, spec, "image_encoder", lambda c: setattr(c, "max_batch_size", 0))
    message = only(check_engines(spec, repo, RUNTIME, models=("image_encoder",)))
    assert "max_batch_size 0" in message and "trimodal render" in message


def test_missing_input_name_in_plan(repo, spec):
    io = contract.model_io(spec)["text_encoder"]
    write_plan(repo, spec, "text_encoder", inputs=(io.inputs[0],))
    assert only(check_engines(spec, repo, RUNTIME, models=("text_encoder",))) == (
        "text_encoder/config.pbtxt declares input ATTENTION_MASK but text_encoder/1/model.plan has no such input "
        f"(it has ['INPUT_IDS']); rebuild the plan from the current ONNX export with {REBUILD}"
    )


def test_extra_output_name_in_plan(repo, spec):
    io = contract.model_io(spec)["image_encoder"]
    write_plan(repo, spec, "image_encoder", outputs=(*io.outputs, TensorSpec("LOGITS", "FP32", (10,))))
    message = only(check_engines(spec, repo, RUNTIME, models=("image_encoder",)))
    assert message.startswith("image_encoder/1/model.plan has output LOGITS that image_encoder/config.pbtxt does not")
    assert REBUILD in message


def test_renamed_tensor_reports_both_sides(repo, spec):
    write_config(repo, spec, "audio_encoder", lambda c: setattr(c.output[0], "name", "AUDIO_EMBEDDING"))
    found = messages(check_engines(spec, repo, RUNTIME, models=("audio_encoder",)))
    assert len(found) == 2
    assert any("declares output AUDIO_EMBEDDING" in m for m in found)
    assert any("has output AUDIO_FEATURES that" in m for m in found)


def test_dtype_mismatch(repo, spec):
    io = contract.model_io(spec)["text_encoder"]
    write_plan(repo, spec, "text_encoder",
               inputs=(TensorSpec("INPUT_IDS", "INT32", (-1,)), io.inputs[1]))  # fmt: skip
    assert only(check_engines(spec, repo, RUNTIME, models=("text_encoder",))) == (
        f"input INPUT_IDS of text_encoder is INT64 in config.pbtxt but INT32 in text_encoder/1/model.plan; "
        f"rebuild the plan with {REBUILD}"
    )


def test_dims_mismatch(repo, spec):
    io = contract.model_io(spec)["fusion_classifier"]
    outputs = (TensorSpec(contract.FUSED_PROBABILITIES, "FP32", (12,)), io.outputs[1])
    write_plan(repo, spec, "fusion_classifier", outputs=outputs)
    assert only(check_engines(spec, repo, RUNTIME, models=("fusion_classifier",))) == (
        "output FUSED_PROBABILITIES of fusion_classifier has dims [10] in config.pbtxt but [12] in "
        f"fusion_classifier/1/model.plan; rebuild the plan with {REBUILD}"
    )


def test_fixed_config_dim_inside_dynamic_profile_is_accepted(repo, spec):
    write_config(repo, spec, "text_encoder", lambda c: [c.input[i].dims.__setitem__(0, 16) for i in range(2)])
    assert check_engines(spec, repo, RUNTIME, models=("text_encoder",)) == []
    write_config(repo, spec, "text_encoder", lambda c: [c.input[i].dims.__setitem__(0, 64) for i in range(2)])
    assert len(messages(check_engines(spec, repo, RUNTIME, models=("text_encoder",)))) == 2


def test_missing_plan(repo, spec):
    (repo / "image_encoder" / "1" / "model.plan").unlink()
    assert only(check_engines(spec, repo, RUNTIME, models=("image_encoder",))) == (
        f"plan image_encoder/1/model.plan is missing; build it with {REBUILD}"
    )


def test_missing_version_folder(repo, spec):
    for path in sorted((repo / "image_encoder" / "1").iterdir()):
        path.unlink()
    (repo / "image_encoder" / "1").rmdir()
    assert "no version folder" in only(check_engines(spec, repo, RUNTIME, models=("image_encoder",)))


def test_missing_metadata(repo, spec):
    metadata_path(repo / "audio_encoder" / "1" / "model.plan").unlink()
    assert only(check_engines(spec, repo, RUNTIME, models=("audio_encoder",))) == (
        "audio_encoder/1/model.plan has no metadata file model.plan.json, so the TensorRT version and GPU it was "
        f"built for are unknown; rebuild it with {REBUILD}"
    )


def test_unreadable_metadata(repo, spec):
    metadata_path(repo / "audio_encoder" / "1" / "model.plan").write_text("[]")
    message = only(check_engines(spec, repo, RUNTIME, models=("audio_encoder",)))
    assert "has unreadable metadata" in message and REBUILD in message


def test_plan_replaced_after_build(repo, spec):
    (repo / "image_encoder" / "1" / "model.plan").write_bytes(b"some other plan")
    message = only(check_engines(spec, repo, RUNTIME, models=("image_encoder",)))
    assert "sha256 differs" in message and REBUILD in message


def test_profile_out_of_date_with_the_spec(repo, spec):
    changed = with_changes(spec, modalities__text__max_tokens=64)
    # regenerate the config from the changed spec so only the plan is stale
    write_config(repo, changed, "text_encoder")
    message = only(check_engines(changed, repo, RUNTIME, models=("text_encoder",)))
    assert message.startswith(
        "the optimization profile of text_encoder/1/model.plan for ['ATTENTION_MASK', 'INPUT_IDS']"
    )
    assert "[1, 1] / [32, 32] / [32, 32]" in message and "[32, 64] / [32, 64]" in message


def test_precision_differs_from_spec_is_a_warning(repo, spec):
    write_plan(repo, spec, "image_encoder", precision="fp32")
    problems = check_engines(spec, repo, RUNTIME, models=("image_encoder",))
    assert messages(problems) == []
    assert "is fp32 but pipeline.yaml asks for fp16" in only(problems, "warning")


def test_stale_onnx_next_to_the_plan(repo, spec):
    (repo / "image_encoder" / "1" / "model.fp16.onnx").write_bytes(b"re-exported graph")
    message = only(check_engines(spec, repo, RUNTIME, models=("image_encoder",)))
    assert "was built from an older model.fp16.onnx" in message


def test_stale_onnx_in_a_build_folder(repo, spec, tmp_path_factory):
    onnx_dir = tmp_path_factory.mktemp("onnx")
    write_plan(repo, spec, "image_encoder", onnx_file="image_encoder.fp16.onnx", onnx_origin="build")
    (onnx_dir / "image_encoder.fp16.onnx").write_bytes(b"re-exported graph")
    message = only(check_engines(spec, repo, RUNTIME, onnx_dir=onnx_dir, models=("image_encoder",)))
    assert "was built from an older image_encoder.fp16.onnx" in message


def test_metadata_of_a_weakly_typed_build_is_rebuilt(repo, spec):
    meta = repo / "image_encoder" / "1" / "model.plan.json"
    meta.write_text(meta.read_text().replace('"schema": 2', '"schema": 1'))
    message = only(check_engines(spec, repo, RUNTIME, models=("image_encoder",)))
    assert "schema 1, expected 2" in message and REBUILD in message


def test_tensorrt_version_without_build_number_matches(repo, spec):
    libnvinfer = RuntimeInfo("10.13.3", RUNTIME.gpu_name, RUNTIME.compute_capability)
    assert check_engines(spec, repo, libnvinfer) == []


def test_config_not_tensorrt(repo, spec):
    write_config(repo, spec, "image_encoder", lambda c: setattr(c, "platform", "onnxruntime_onnx"))
    assert only(check_engines(spec, repo, RUNTIME, models=("image_encoder",))) == (
        "image_encoder/config.pbtxt is for 'onnxruntime_onnx', not a TensorRT plan; re-render it with `trimodal render`"
    )


def test_missing_or_broken_config(repo, spec):
    (repo / "image_encoder" / "config.pbtxt").unlink()
    assert "is missing; render the repository" in only(check_engines(spec, repo, RUNTIME, models=("image_encoder",)))
    (repo / "image_encoder" / "config.pbtxt").write_text("max_batch_size: [")
    assert "cannot be parsed" in only(check_engines(spec, repo, RUNTIME, models=("image_encoder",)))


def test_per_architecture_plans(tmp_path, spec):
    multi = with_changes(spec, engines__compute_capabilities=["8.6", "8.9"])
    model = "image_encoder"
    write_config(tmp_path, multi, model)
    write_plan(tmp_path, multi, model, "model_sm89.plan")
    # The 8.9 plan serves here; the 8.6 one is needed elsewhere: a warning, not an error.
    problems = check_engines(multi, tmp_path, RUNTIME, models=(model,))
    assert messages(problems) == []
    assert only(problems, "warning") == (
        f"plan {model}/1/model_sm86.plan (compute capability 8.6) is missing; build it with {REBUILD} on a 8.6 GPU "
        "before serving on one"
    )
    # A plan listed for 8.6 but built on 8.9 is an error even on the 8.9 host.
    write_plan(tmp_path, multi, model, "model_sm86.plan")
    assert "is listed for compute capability 8.6 in config.pbtxt but was built for 8.9" in only(
        check_engines(multi, tmp_path, RUNTIME, models=(model,))
    )
    # A GPU whose architecture is not listed at all.
    problems = check_engines(multi, tmp_path, RuntimeInfo("10.13.3.9", "H100", "9.0"), models=(model,))
    assert any("lists plans for compute capabilities ['8.6', '8.9'] but this GPU (H100) is 9.0" in m
               for m in messages(problems))  # fmt: skip


def test_version_policy_latest_checks_only_the_served_version(repo, spec):
    (repo / "image_encoder" / "2").mkdir()
    assert "image_encoder/2/model.plan is missing" in only(
        check_engines(spec, repo, RUNTIME, models=("image_encoder",))
    )


def test_without_tensorrt_the_runtime_comparison_is_a_warning(repo, spec):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        problems = check_engines(spec, repo)
        assert messages(problems) == []
        assert "run `trimodal check` inside the serving container" in only(problems, "warning")
        assert "no TensorRT library here" in only(problems, "warning")
    else:  # pragma: no cover
        pytest.skip("tensorrt is installed here")


def test_errors_filters_warnings():
    problems = [Problem("a", "x"), Problem("b", "y", severity="warning")]
    assert errors(problems) == problems[:1]
    assert str(problems[0]) == "x"


# --- accuracy report --------------------------------------------------------------------------------


def test_compare_outputs_reports_agreement_and_max_diff():
    ref = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]], np.float32)
    got = np.array([[0.88, 0.12], [0.25, 0.75], [0.45, 0.55], [0.3, 0.7]], np.float32)
    reference = {
        "image_encoder": {"IMAGE_FEATURES": np.zeros((4, 2))},
        "fusion_classifier": {"FUSED_PROBABILITIES": ref},
    }
    candidate = {
        "image_encoder": {"IMAGE_FEATURES": np.full((4, 2), 0.5)},
        "fusion_classifier": {"FUSED_PROBABILITIES": got},
    }
    report = accuracy.compare_outputs("fp16", reference, candidate, labels=np.array([0, 1, 0, 1]))
    assert report.samples == 4
    assert report.top1_agreement == pytest.approx(0.75)
    assert report.max_prob_diff == pytest.approx(0.15, abs=1e-6)
    assert report.feature_max_diff["image_encoder.IMAGE_FEATURES"] == pytest.approx(0.5)
    assert report.ort_accuracy == 1.0 and report.trt_accuracy == 0.75
    assert not report.passed
    assert report.summary().startswith("FAILED: fp16 engines agree with ONNX Runtime on top-1 for 75.00% of 4")
    same = accuracy.compare_outputs("fp32", reference, reference)
    assert same.passed and same.max_prob_diff == 0.0 and same.summary().startswith("OK")


def test_compare_outputs_rejects_shape_mismatch():
    with pytest.raises(EngineError, match="cannot compare"):
        accuracy.compare_outputs("fp16", {"fusion_classifier": {"FUSED_PROBABILITIES": np.zeros((2, 10))}},
                                 {"fusion_classifier": {"FUSED_PROBABILITIES": np.zeros((3, 10))}})  # fmt: skip


def test_tolerances_are_ordered_by_precision():
    tol = accuracy.DEFAULT_TOLERANCES
    assert tol["fp32"].max_prob_diff < tol["fp16"].max_prob_diff < tol["int8"].max_prob_diff
    assert tol["fp32"].min_top1_agreement > tol["fp16"].min_top1_agreement > tol["int8"].min_top1_agreement


def test_verify_accuracy_runs_both_sides_on_the_same_inputs(repo, spec, tmp_path_factory, monkeypatch):
    build = tmp_path_factory.mktemp("build")
    ios = contract.model_io(spec)
    n = 5
    size, audio = spec.modalities.image.size, spec.modalities.audio
    tensors = {
        contract.IMAGE_TENSOR: np.zeros((n, 1, size, size), np.float32),
        contract.INPUT_IDS: np.zeros((n, 8), np.int64),
        contract.ATTENTION_MASK: np.ones((n, 8), np.int64),
        contract.AUDIO_TENSOR: np.zeros((n, 1, audio.n_mels, audio.n_frames), np.float32),
        **{mask: np.ones((n, 1), np.float32) for mask in contract.MASKS},
    }
    tensors[contract.IMAGE_TENSOR][:, 0, 0, 0] = np.arange(n)  # distinct rows: a reordered or zeroed feed shows
    tensors[contract.INPUT_IDS][:, 0] = np.arange(n) + 100
    labels = np.arange(n) % spec.num_classes
    sides = []
    fed: dict[str, dict[str, list[dict[str, np.ndarray]]]] = {"ort": {}, "trt": {}}
    graphs_used = []

    def fake_backend(side, shift, graph_for=None):
        def infer(model, feeds):
            sides.append(side)
            fed[side].setdefault(model, []).append({name: np.array(value) for name, value in feeds.items()})
            if graph_for is not None:
                graphs_used.append(Path(graph_for(model)))
            rows = len(next(iter(feeds.values())))
            return {t.name: np.eye(rows, *t.dims, dtype=np.float32) + shift for t in ios[model].outputs}

        return infer

    closed = []
    monkeypatch.setattr(accuracy, "encoder_inputs", lambda spec, root, split, count, repo_dir: (tensors, labels))
    monkeypatch.setattr(accuracy, "ort_infer", lambda graph: fake_backend("ort", 0.0, graph))
    monkeypatch.setattr(accuracy, "trt_infer", lambda plans: (fake_backend("trt", 1e-4), lambda: closed.append(1)))
    with pytest.raises(EngineError, match=r"missing fp32 ONNX graphs in .*: run `trimodal build`"):
        accuracy.verify_accuracy(spec, repo, build, samples=n, runtime=RUNTIME)
    (build / "onnx").mkdir()
    for model in ENCODERS:
        (build / "onnx" / f"{model}.onnx").write_bytes(b"graph")
    report = accuracy.verify_accuracy(spec, repo, build, samples=n, runtime=RUNTIME)
    assert accuracy.reference_graphs(repo, build).origin == "build"
    for model in ENCODERS:
        (repo / model / "1" / "model.onnx").write_bytes(b"graph")
    assert accuracy.reference_graphs(repo, build).origin == "repository"
    assert report.passed and report.samples == n and report.precision == spec.precision.of("image_encoder", "gpu")
    assert report.max_prob_diff == pytest.approx(1e-4, rel=1e-3) and closed == [1]
    assert sides.count("ort") == sides.count("trt") == len(ENCODERS)
    # the reference is the fp32 graph of every model (the build's, as the repository had none then) ...
    assert graphs_used == [build / "onnx" / f"{model}.onnx" for model in ENCODERS]
    # ... and both sides got the very same encoder inputs, in the order of the test samples
    for model in ENCODERS[:-1]:
        (ort_batch,), (trt_batch,) = fed["ort"][model], fed["trt"][model]
        assert ort_batch.keys() == trt_batch.keys() == {t.name for t in ios[model].inputs}
        for name, value in ort_batch.items():
            np.testing.assert_array_equal(trt_batch[name], value)
            np.testing.assert_array_equal(value, tensors[name])
    write_plan(repo, spec, "image_encoder", precision="fp32")
    with pytest.raises(EngineError, match="mixed precisions"):
        accuracy.verify_accuracy(spec, repo, build, samples=n, runtime=RUNTIME)


def test_accuracy_is_unavailable_without_the_tensorrt_bindings():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        assert "tensorrt is not importable here" in accuracy.unavailable_reason()
    else:  # pragma: no cover - only inside NVIDIA's containers
        pytest.skip("tensorrt is installed here")
