"""Pure-Python parts of trimodal.tensorrt.builder: profiles, metadata, precision handling, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from spec_helpers import with_changes

from trimodal import contract, engines
from trimodal.contract import ENCODERS, TensorSpec
from trimodal.errors import EngineError
from trimodal.tensorrt.builder import PlanMetadata, RuntimeInfo

RUNTIME = RuntimeInfo("10.13.3.9", "NVIDIA L4", "8.9")


def make_metadata(spec, model="text_encoder", **overrides) -> PlanMetadata:
    io = contract.model_io(spec)[model]
    values = dict(
        model=model,
        plan_file="model.plan",
        precision="fp16",
        tensorrt_version=RUNTIME.tensorrt_version,
        gpu_name=RUNTIME.gpu_name,
        compute_capability=RUNTIME.compute_capability,
        profiles=engines.profile_shapes(spec, model),
        inputs=io.inputs,
        outputs=io.outputs,
        onnx_file=f"{model}.onnx",
        onnx_sha256="a" * 64,
        plan_sha256="b" * 64,
        workspace_mib=2048,
        built_at="2026-11-29T08:00:00+00:00",
    )
    values.update(overrides)
    return PlanMetadata(**values)


# --- profiles ---------------------------------------------------------------------------------------


def test_profiles_cover_every_input_of_every_engine(spec):
    ios = contract.model_io(spec)
    for model in ENCODERS:
        shapes = engines.profile_shapes(spec, model)
        assert list(shapes) == [t.name for t in ios[model].inputs]


def test_batch_range_comes_from_dynamic_batching(spec):
    serving = spec.serving.resolved("image_encoder")
    low, opt, high = engines.profile_shapes(spec, "image_encoder")[contract.IMAGE_TENSOR]
    size = spec.modalities.image.size
    assert low == (1, 1, size, size)
    assert opt == (max(serving.preferred_batch_sizes), 1, size, size)
    assert high == (serving.max_batch_size, 1, size, size)


def test_text_sequence_range_comes_from_the_spec(spec):
    custom = with_changes(spec, engines__text_min_tokens=4, modalities__text__max_tokens=48)
    for name in (contract.INPUT_IDS, contract.ATTENTION_MASK):
        low, opt, high = engines.profile_shapes(custom, "text_encoder")[name]
        assert (low[1], opt[1], high[1]) == (4, 48, 48)


def test_per_model_serving_overrides_shape_the_profile(spec):
    custom = with_changes(
        spec,
        serving__models__audio_encoder={"max_batch_size": 64, "preferred_batch_sizes": [4, 16]},
    )
    low, opt, high = engines.profile_shapes(custom, "audio_encoder")[contract.AUDIO_TENSOR]
    assert (low[0], opt[0], high[0]) == (1, 16, 64)
    assert engines.opt_batch_size(custom, "audio_encoder") == 16


def test_no_preferred_sizes_means_opt_is_max(spec):
    custom = with_changes(spec, serving__models__fusion_classifier={"preferred_batch_sizes": []})
    for _low, opt, high in engines.profile_shapes(custom, "fusion_classifier").values():
        assert opt[0] == high[0] == custom.serving.resolved("fusion_classifier").max_batch_size


def test_profile_rejects_non_engine_models_and_bad_text_range(spec):
    with pytest.raises(EngineError, match="preprocess_text"):
        engines.profile_shapes(spec, "preprocess_text")
    custom = with_changes(spec, engines__text_min_tokens=40)
    with pytest.raises(EngineError, match="text_min_tokens"):
        engines.profile_shapes(custom, "text_encoder")


# --- metadata ---------------------------------------------------------------------------------------


def test_metadata_round_trip(tmp_path, spec):
    plan = tmp_path / "text_encoder" / "1" / "model.plan"
    plan.parent.mkdir(parents=True)
    meta = make_metadata(spec)
    written = engines.write_metadata(plan, meta)
    assert written == engines.metadata_path(plan) == plan.parent / "model.plan.json"
    assert engines.read_metadata(plan) == meta
    data = json.loads(written.read_text())
    assert data["tensorrt_version"] == "10.13.3.9" and data["compute_capability"] == "8.9"
    assert data["profiles"]["INPUT_IDS"] == [[1, 1], [32, 32], [32, 32]]
    assert meta.max_batch_size == 32
    assert meta.runtime == RUNTIME


def test_metadata_errors_name_the_file(tmp_path, spec):
    plan = tmp_path / "model.plan"
    with pytest.raises(EngineError, match=r"missing plan metadata .*model\.plan\.json"):
        engines.read_metadata(plan)
    engines.metadata_path(plan).write_text("{not json")
    with pytest.raises(EngineError, match="cannot read plan metadata"):
        engines.read_metadata(plan)
    data = make_metadata(spec).to_dict()
    del data["tensorrt_version"]
    engines.metadata_path(plan).write_text(json.dumps(data))
    with pytest.raises(EngineError, match="malformed plan metadata"):
        engines.read_metadata(plan)
    data = make_metadata(spec).to_dict() | {"schema": 99}
    engines.metadata_path(plan).write_text(json.dumps(data))
    with pytest.raises(EngineError, match="schema 99"):
        engines.read_metadata(plan)


def test_is_up_to_date_tracks_onnx_trt_gpu_precision_and_profile(tmp_path, spec):
    onnx = tmp_path / "text_encoder.onnx"
    onnx.write_bytes(b"graph v1")
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan bytes")
    meta = make_metadata(spec, onnx_sha256=engines.sha256_file(onnx), plan_sha256=engines.sha256_file(plan))
    engines.write_metadata(plan, meta)
    assert engines.is_up_to_date(plan, onnx, spec, "text_encoder", "fp16", RUNTIME)
    assert not engines.is_up_to_date(plan, onnx, spec, "text_encoder", "int8", RUNTIME)
    assert not engines.is_up_to_date(plan, onnx, spec, "text_encoder", "fp16", RuntimeInfo("10.14.0", "L4", "8.9"))
    assert not engines.is_up_to_date(plan, onnx, spec, "text_encoder", "fp16", RuntimeInfo("10.13.3.9", "A10", "8.6"))
    assert not engines.is_up_to_date(plan, onnx, with_changes(spec, engines__text_min_tokens=2), "text_encoder",
                                     "fp16", RUNTIME)  # fmt: skip
    onnx.write_bytes(b"graph v2")
    assert not engines.is_up_to_date(plan, onnx, spec, "text_encoder", "fp16", RUNTIME)


# --- precision, plan naming, arguments --------------------------------------------------------------


def test_build_engine_rejects_unknown_precision_before_touching_tensorrt(tmp_path, spec):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(EngineError, match=r"precision 'bf16'.*fp32.*fp16.*int8"):
        engines.build_engine(onnx, tmp_path / "m.plan", spec, "image_encoder", precision="bf16", workspace_mib=1,
                             timing_cache=tmp_path / "t.cache")  # fmt: skip


def test_int8_needs_calibration_data_or_cache(tmp_path, spec):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(EngineError, match="INT8 needs calibration data"):
        engines.build_engine(onnx, tmp_path / "m.plan", spec, "image_encoder", precision="int8", workspace_mib=1,
                             timing_cache=tmp_path / "t.cache", calibration_cache=tmp_path / "none.cache")  # fmt: skip


def test_missing_onnx_names_the_command(tmp_path, spec):
    with pytest.raises(EngineError, match=r"missing ONNX graph .*`trimodal build`"):
        engines.build_engine(tmp_path / "nope.onnx", tmp_path / "m.plan", spec, "image_encoder", precision="fp16",
                             workspace_mib=1, timing_cache=tmp_path / "t.cache")  # fmt: skip
    with pytest.raises(EngineError, match=r"missing ONNX graph\(s\)"):
        engines.build_all(spec, tmp_path, tmp_path / "repo", runtime=RUNTIME)


def test_build_all_validates_precision_and_workspace(tmp_path, spec):
    with pytest.raises(EngineError, match="precision 'fp8'"):
        engines.build_all(spec, tmp_path, tmp_path, precision="fp8", runtime=RUNTIME)
    with pytest.raises(EngineError, match="unknown engine model"):
        engines.build_all(spec, tmp_path, tmp_path, models=["multimodal"], runtime=RUNTIME)


def test_plan_paths_single_and_per_architecture(tmp_path, spec):
    assert engines.plan_path_for(tmp_path, spec, "image_encoder", RUNTIME) == tmp_path / "image_encoder/1/model.plan"
    multi = with_changes(spec, engines__compute_capabilities=["8.6", "8.9"])
    assert engines.plan_path_for(tmp_path, multi, "image_encoder", RUNTIME).name == "model_sm89.plan"
    other = with_changes(spec, engines__compute_capabilities=["8.0", "9.0"])
    with pytest.raises(EngineError, match=r"compute capability 8\.9\) is not listed in engines\.compute_capabilities"):
        engines.plan_path_for(tmp_path, other, "image_encoder", RUNTIME)


def test_cache_paths_are_specific_to_trt_gpu_and_graph(tmp_path):
    assert engines.timing_cache_path(tmp_path, RUNTIME).name == "timing-trt10.13.3.9-sm89.cache"
    assert engines.timing_cache_path(tmp_path, RUNTIME).parent == tmp_path / "engines"
    assert (
        engines.calibration_cache_path(tmp_path, "audio_encoder", "f" * 64).name
        == "audio_encoder-ffffffffffff.int8.cache"
    )


# --- engine inspection and pipeline orchestration ---------------------------------------------------


class _Enum:
    def __init__(self, name: str) -> None:
        self.name = name


class FakeEngine:
    def __init__(self, tensors):
        self.tensors = tensors  # name -> (mode, dtype, shape)
        self.num_io_tensors = len(tensors)

    def get_tensor_name(self, index):
        return list(self.tensors)[index]

    def get_tensor_mode(self, name):
        return _Enum(self.tensors[name][0])

    def get_tensor_dtype(self, name):
        return _Enum(self.tensors[name][1])

    def get_tensor_shape(self, name):
        return self.tensors[name][2]


def test_engine_io_maps_trt_dtypes_and_drops_batch():
    engine = FakeEngine({
        "INPUT_IDS": ("INPUT", "INT64", (-1, -1)),
        "ATTENTION_MASK": ("INPUT", "INT64", (-1, -1)),
        "TEXT_FEATURES": ("OUTPUT", "FLOAT", (-1, 384)),
    })  # fmt: skip
    inputs, outputs = engines.engine_io(engine)
    assert inputs == (TensorSpec("INPUT_IDS", "INT64", (-1,)), TensorSpec("ATTENTION_MASK", "INT64", (-1,)))
    assert outputs == (TensorSpec("TEXT_FEATURES", "FP32", (384,)),)
    assert engines.trt_dtype_name("DataType.HALF") == "FP16"
    with pytest.raises(EngineError, match="dynamic batch dimension"):
        engines.engine_io(FakeEngine({"X": ("INPUT", "FLOAT", (8, 3))}))
    with pytest.raises(EngineError, match="no Triton equivalent"):
        engines.trt_dtype_name("INT4")


def test_run_pipeline_feeds_encoder_outputs_to_the_fusion_head(spec):
    n = 5
    size, audio = spec.modalities.image.size, spec.modalities.audio
    tensors = {
        contract.IMAGE_TENSOR: np.zeros((n, 1, size, size), np.float32),
        contract.INPUT_IDS: np.zeros((n, 8), np.int64),
        contract.ATTENTION_MASK: np.ones((n, 8), np.int64),
        contract.AUDIO_TENSOR: np.zeros((n, 1, audio.n_mels, audio.n_frames), np.float32),
        contract.IMAGE_MASK: np.ones((n, 1), np.float32),
        contract.TEXT_MASK: np.ones((n, 1), np.float32),
        contract.AUDIO_MASK: np.ones((n, 1), np.float32),
    }
    ios = contract.model_io(spec)
    calls = []

    def infer(model, feeds):
        calls.append((model, len(next(iter(feeds.values())))))
        assert set(feeds) == {t.name for t in ios[model].inputs}
        rows = len(next(iter(feeds.values())))
        return {t.name: np.full((rows, *t.dims), 0.1, np.float32) for t in ios[model].outputs}

    results = engines.run_pipeline(spec, tensors, infer, batch_size=2)
    assert [m for m, _ in calls] == [m for m in ENCODERS for _ in range(3)]
    assert [b for _, b in calls][:3] == [2, 2, 1]
    assert results["fusion_classifier"][contract.PROBABILITIES].shape == (n, spec.num_classes)


def test_split_columns_accepts_columns_or_samples():
    columns = {"images": [b"png"], "texts": ["seven"], "audio": [b"wav"], "labels": [7]}
    images, texts, audios, labels = engines._split_columns(columns)
    assert (images, texts, audios, labels.tolist()) == ([b"png"], [b"seven"], [b"wav"], [7])

    class Sample:
        image, text, audio, label = b"png", "three", None, 3

    images, texts, audios, labels = engines._split_columns([Sample()])
    assert (texts, audios, labels.tolist()) == ([b"three"], [b""], [3])
    with pytest.raises(EngineError, match="columns"):
        engines._split_columns({"pictures": []})


# --- lazy imports -----------------------------------------------------------------------------------


def test_importing_engines_and_check_does_not_import_heavy_modules():
    code = (
        "import sys, trimodal.tensorrt.builder, trimodal.tensorrt.preflight; "
        "heavy = [m for m in ('tensorrt', 'polygraphy', 'onnxruntime', 'torch') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_detect_runtime_without_tensorrt_says_where_to_build():
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        with pytest.raises(EngineError, match="engine-builder"):
            engines.detect_runtime()
    else:  # pragma: no cover - only inside NVIDIA's containers
        pytest.skip("tensorrt is installed here")
