"""Pure-Python parts of trimodal.tensorrt: profiles, metadata, plan paths, builder arguments, data, lazy imports."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from spec_helpers import with_changes

from trimodal import contract
from trimodal.contract import ENCODERS, TensorSpec
from trimodal.errors import EngineError
from trimodal.runtime.pipeline import run_models
from trimodal.tensorrt import calibration
from trimodal.tensorrt.builder import build_all, build_engine
from trimodal.tensorrt.metadata import (
    PlanMetadata,
    engine_io,
    metadata_path,
    read_metadata,
    sha256_file,
    trt_dtype_name,
    write_metadata,
)
from trimodal.tensorrt.plans import calibration_cache_path, is_up_to_date, plan_path_for, timing_cache_path
from trimodal.tensorrt.profiles import opt_batch_size, profile_shapes
from trimodal.tensorrt.runtime import RuntimeInfo, detect_runtime

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
        profiles=profile_shapes(spec, model),
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
        shapes = profile_shapes(spec, model)
        assert list(shapes) == [t.name for t in ios[model].inputs]


def test_batch_range_comes_from_dynamic_batching(spec):
    serving = spec.serving.resolved("image_encoder")
    low, opt, high = profile_shapes(spec, "image_encoder")[contract.IMAGE_TENSOR]
    size = spec.modalities.image.size
    assert low == (1, 1, size, size)
    assert opt == (max(serving.preferred_batch_sizes), 1, size, size)
    assert high == (serving.max_batch_size, 1, size, size)


def test_text_sequence_range_comes_from_the_spec(spec):
    custom = with_changes(spec, engines__text_min_tokens=4, modalities__text__max_tokens=48)
    for name in (contract.INPUT_IDS, contract.ATTENTION_MASK):
        low, opt, high = profile_shapes(custom, "text_encoder")[name]
        assert (low[1], opt[1], high[1]) == (4, 48, 48)


def test_per_model_serving_overrides_shape_the_profile(spec):
    custom = with_changes(
        spec,
        serving__models__audio_encoder={"max_batch_size": 64, "preferred_batch_sizes": [4, 16]},
    )
    low, opt, high = profile_shapes(custom, "audio_encoder")[contract.AUDIO_TENSOR]
    assert (low[0], opt[0], high[0]) == (1, 16, 64)
    assert opt_batch_size(custom, "audio_encoder") == 16


def test_no_preferred_sizes_means_opt_is_max(spec):
    custom = with_changes(spec, serving__models__fusion_classifier={"preferred_batch_sizes": []})
    for _low, opt, high in profile_shapes(custom, "fusion_classifier").values():
        assert opt[0] == high[0] == custom.serving.resolved("fusion_classifier").max_batch_size


def test_profile_rejects_non_engine_models_and_bad_text_range(spec):
    with pytest.raises(EngineError, match="preprocess_text"):
        profile_shapes(spec, "preprocess_text")
    custom = with_changes(spec, engines__text_min_tokens=40)
    with pytest.raises(EngineError, match="text_min_tokens"):
        profile_shapes(custom, "text_encoder")


# --- metadata ---------------------------------------------------------------------------------------


def test_metadata_round_trip(tmp_path, spec):
    plan = tmp_path / "text_encoder" / "1" / "model.plan"
    plan.parent.mkdir(parents=True)
    meta = make_metadata(spec)
    written = write_metadata(plan, meta)
    assert written == metadata_path(plan) == plan.parent / "model.plan.json"
    assert read_metadata(plan) == meta
    data = json.loads(written.read_text())
    assert data["tensorrt_version"] == "10.13.3.9" and data["compute_capability"] == "8.9"
    assert data["profiles"]["INPUT_IDS"] == [[1, 1], [32, 32], [32, 32]]
    assert meta.max_batch_size == 32
    assert meta.runtime == RUNTIME


def test_metadata_errors_name_the_file(tmp_path, spec):
    plan = tmp_path / "model.plan"
    with pytest.raises(EngineError, match=r"missing plan metadata .*model\.plan\.json"):
        read_metadata(plan)
    metadata_path(plan).write_text("{not json")
    with pytest.raises(EngineError, match="cannot read plan metadata"):
        read_metadata(plan)
    data = make_metadata(spec).to_dict()
    del data["tensorrt_version"]
    metadata_path(plan).write_text(json.dumps(data))
    with pytest.raises(EngineError, match="malformed plan metadata"):
        read_metadata(plan)
    data = make_metadata(spec).to_dict() | {"schema": 99}
    metadata_path(plan).write_text(json.dumps(data))
    with pytest.raises(EngineError, match="schema 99"):
        read_metadata(plan)


def test_is_up_to_date_tracks_onnx_trt_gpu_precision_and_profile(tmp_path, spec):
    onnx = tmp_path / "text_encoder.onnx"
    onnx.write_bytes(b"graph v1")
    plan = tmp_path / "model.plan"
    plan.write_bytes(b"plan bytes")
    meta = make_metadata(spec, onnx_sha256=sha256_file(onnx), plan_sha256=sha256_file(plan))
    write_metadata(plan, meta)
    assert is_up_to_date(plan, onnx, spec, "text_encoder", "fp16", RUNTIME)
    assert not is_up_to_date(plan, onnx, spec, "text_encoder", "int8", RUNTIME)
    assert not is_up_to_date(plan, onnx, spec, "text_encoder", "fp16", RuntimeInfo("10.14.0", "L4", "8.9"))
    assert not is_up_to_date(plan, onnx, spec, "text_encoder", "fp16", RuntimeInfo("10.13.3.9", "A10", "8.6"))
    assert not is_up_to_date(plan, onnx, with_changes(spec, engines__text_min_tokens=2), "text_encoder",
                             "fp16", RUNTIME)  # fmt: skip
    onnx.write_bytes(b"graph v2")
    assert not is_up_to_date(plan, onnx, spec, "text_encoder", "fp16", RUNTIME)


# --- precision, plan naming, arguments --------------------------------------------------------------


def test_build_engine_rejects_unknown_precision_before_touching_tensorrt(tmp_path, spec):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(EngineError, match=r"precision 'bf16'.*fp32.*fp16.*int8"):
        build_engine(onnx, tmp_path / "m.plan", spec, "image_encoder", precision="bf16", workspace_mib=1,
                     timing_cache=tmp_path / "t.cache")  # fmt: skip


def test_int8_needs_calibration_data_or_cache(tmp_path, spec):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    with pytest.raises(EngineError, match="INT8 needs calibration data"):
        build_engine(onnx, tmp_path / "m.plan", spec, "image_encoder", precision="int8", workspace_mib=1,
                     timing_cache=tmp_path / "t.cache", calibration_cache=tmp_path / "none.cache")  # fmt: skip


def test_missing_onnx_names_the_command(tmp_path, spec):
    with pytest.raises(EngineError, match=r"missing ONNX graph .*`trimodal build`"):
        build_engine(tmp_path / "nope.onnx", tmp_path / "m.plan", spec, "image_encoder", precision="fp16",
                     workspace_mib=1, timing_cache=tmp_path / "t.cache")  # fmt: skip
    with pytest.raises(EngineError, match=r"missing ONNX graph\(s\)"):
        build_all(spec, tmp_path, tmp_path / "repo", runtime=RUNTIME)


def test_build_all_validates_precision_and_workspace(tmp_path, spec):
    with pytest.raises(EngineError, match="precision 'fp8'"):
        build_all(spec, tmp_path, tmp_path, precision="fp8", runtime=RUNTIME)
    with pytest.raises(EngineError, match="unknown engine model"):
        build_all(spec, tmp_path, tmp_path, models=["multimodal"], runtime=RUNTIME)


def test_plan_paths_single_and_per_architecture(tmp_path, spec):
    assert plan_path_for(tmp_path, spec, "image_encoder", RUNTIME) == tmp_path / "image_encoder/1/model.plan"
    multi = with_changes(spec, engines__compute_capabilities=["8.6", "8.9"])
    assert plan_path_for(tmp_path, multi, "image_encoder", RUNTIME).name == "model_sm89.plan"
    other = with_changes(spec, engines__compute_capabilities=["8.0", "9.0"])
    with pytest.raises(EngineError, match=r"compute capability 8\.9\) is not listed in engines\.compute_capabilities"):
        plan_path_for(tmp_path, other, "image_encoder", RUNTIME)


def test_cache_paths_are_specific_to_trt_gpu_and_graph(tmp_path):
    assert timing_cache_path(tmp_path, RUNTIME).name == "timing-trt10.13.3.9-sm89.cache"
    assert timing_cache_path(tmp_path, RUNTIME).parent == tmp_path / "engines"
    assert calibration_cache_path(tmp_path, "audio_encoder", "f" * 64).name == "audio_encoder-ffffffffffff.int8.cache"


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
    inputs, outputs = engine_io(engine)
    assert inputs == (TensorSpec("INPUT_IDS", "INT64", (-1,)), TensorSpec("ATTENTION_MASK", "INT64", (-1,)))
    assert outputs == (TensorSpec("TEXT_FEATURES", "FP32", (384,)),)
    assert trt_dtype_name("DataType.HALF") == "FP16"
    with pytest.raises(EngineError, match="dynamic batch dimension"):
        engine_io(FakeEngine({"X": ("INPUT", "FLOAT", (8, 3))}))
    with pytest.raises(EngineError, match="no Triton equivalent"):
        trt_dtype_name("INT4")


class FakePolygraphy:
    """Stands in for polygraphy.backend.trt: records the config and returns a plan naming the model."""

    def __init__(self, spec, model):
        self.inputs = [t.name for t in contract.model_io(spec)[model].inputs]
        self.config = None
        self.calibrator = None

    def network_from_onnx_path(self, path):
        net = type("Net", (), {"num_inputs": len(self.inputs), "get_input": lambda _, i: _Enum(self.inputs[i])})()
        return lambda: (None, net, None)

    class Profile(dict):
        def add(self, name, min, opt, max):
            self[name] = (min, opt, max)

    def CreateConfig(self, **arguments):  # noqa: N802
        self.config = arguments
        return arguments

    def Calibrator(self, data, cache, BaseClass):  # noqa: N802, N803
        self.calibrator = (list(data), cache, BaseClass)
        return "calibrator"

    def EngineBytesFromNetwork(self, network, config, save_timing_cache):  # noqa: N802
        def build():
            Path(save_timing_cache).write_bytes(b"timing")
            return b"plan bytes"

        return build


class _Logger:
    WARNING = 2

    def __init__(self, level):
        self.level = level


def fake_tensorrt(spec, model):
    """Stands in for tensorrt: deserializes any plan into an engine with the model's contract tensors."""
    io = contract.model_io(spec)[model]
    tensors = {t.name: ("INPUT", "INT64" if t.dtype == "INT64" else "FLOAT", (-1, *t.dims)) for t in io.inputs}
    tensors |= {t.name: ("OUTPUT", "FLOAT", (-1, *t.dims)) for t in io.outputs}
    runtime = SimpleNamespace(deserialize_cuda_engine=lambda plan: FakeEngine(tensors))
    return SimpleNamespace(
        __version__=RUNTIME.tensorrt_version,
        MemoryPoolType=SimpleNamespace(WORKSPACE="workspace"),
        Logger=_Logger,
        Runtime=lambda logger: runtime,
        IInt8EntropyCalibrator2=object,
    )


def test_build_all_with_a_fake_tensorrt_writes_plans_metadata_and_caches(monkeypatch, tmp_path, spec):
    from trimodal.tensorrt import builder

    model = "text_encoder"
    polygraphy = FakePolygraphy(spec, model)
    trt = fake_tensorrt(spec, model)
    monkeypatch.setattr(builder, "import_tensorrt", lambda: trt)
    monkeypatch.setattr(builder, "import_polygraphy_trt", lambda: polygraphy)
    onnx = tmp_path / "build" / "onnx" / f"{model}.onnx"
    onnx.parent.mkdir(parents=True)
    onnx.write_bytes(b"graph")
    repo = tmp_path / "repo"
    [meta] = build_all(spec, tmp_path / "build", repo, "fp16", 64, models=[model], progress=False, runtime=RUNTIME)
    plan = repo / model / "1" / "model.plan"
    assert plan.read_bytes() == b"plan bytes" and read_metadata(plan) == meta
    assert (meta.model, meta.precision, meta.workspace_mib, meta.onnx_sha256) == (model, "fp16", 64, sha256_file(onnx))
    assert meta.inputs == contract.model_io(spec)[model].inputs and meta.profiles == profile_shapes(spec, model)
    config = polygraphy.config
    assert config["fp16"] and config["tf32"] and "int8" not in config and "load_timing_cache" not in config
    assert config["memory_pool_limits"] == {"workspace": 64 << 20}
    assert config["profiles"][0] == {name: tuple(shapes) for name, shapes in profile_shapes(spec, model).items()}
    assert timing_cache_path(tmp_path / "build", RUNTIME).read_bytes() == b"timing"
    assert is_up_to_date(plan, onnx, spec, model, "fp16", RUNTIME)
    # INT8 with an existing calibration cache: no calibration data, the cache is handed to the calibrator
    cache = calibration_cache_path(tmp_path / "build", model, sha256_file(onnx))
    cache.write_bytes(b"scales")
    build_all(spec, tmp_path / "build", repo, "int8", models=[model], progress=False, runtime=RUNTIME)
    assert polygraphy.config["int8"] and polygraphy.config["fp16"] and polygraphy.config["tf32"]
    assert polygraphy.config["load_timing_cache"] == str(timing_cache_path(tmp_path / "build", RUNTIME))
    assert polygraphy.calibrator == ([], str(cache), object)
    assert read_metadata(plan).precision == "int8"


def test_run_models_feeds_encoder_outputs_to_the_fusion_head(spec):
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

    results = run_models(spec, tensors, infer, batch_size=2)
    assert [m for m, _ in calls] == [m for m in ENCODERS for _ in range(3)]
    assert [b for _, b in calls][:3] == [2, 2, 1]
    assert results["fusion_classifier"][contract.FUSED_PROBABILITIES].shape == (n, spec.num_classes)
    assert results["fusion_classifier"][contract.HEAD_PROBABILITIES].shape == (n, 3, spec.num_classes)


def make_split(texts, labels):
    from trimodal.training.data.dataset import Split

    n = len(labels)
    return Split([b""] * n, list(texts), [b""] * n, np.asarray(labels, np.int64), np.zeros((n, 3), bool))


def test_subset_is_deterministic_sorted_and_bounded():
    split = make_split([f"text {i}" for i in range(10)], list(range(10)))
    images, texts, audio, labels = calibration.subset(split, 4, seed=0)
    assert labels.dtype == np.int64 and len(labels) == 4 and list(labels) == sorted(labels)
    assert texts == [f"text {i}" for i in labels] and images == [b""] * 4 and audio == [b""] * 4
    assert calibration.subset(split, 4, seed=0)[3].tolist() == labels.tolist()
    assert calibration.subset(split, 50, seed=0)[3].tolist() == list(range(10))


def test_encoder_inputs_preprocess_the_split_in_contract_dtypes(monkeypatch, tmp_path, spec):
    from trimodal.training.data import dataset

    loaded = make_split(["seven", ""], [7, 3])
    monkeypatch.setattr(dataset, "load_split", lambda root, split: loaded)
    tensors, labels = calibration.encoder_inputs(spec, tmp_path, "test", 10)
    assert labels.tolist() == [7, 3]
    ios = contract.model_io(spec)
    for model in ("preprocess_image", "preprocess_text", "preprocess_audio"):
        for tensor in ios[model].outputs:
            assert tensors[tensor.name].dtype == contract.NUMPY_DTYPES[tensor.dtype]
            assert len(tensors[tensor.name]) == 2
    assert tensors[contract.TEXT_MASK].reshape(-1).tolist() == [1.0, 0.0]
    assert tensors[contract.IMAGE_MASK].reshape(-1).tolist() == [0.0, 0.0]
    monkeypatch.setattr(dataset, "load_split", lambda root, split: make_split([], []))
    with pytest.raises(EngineError, match=r"test split .* is empty"):
        calibration.encoder_inputs(spec, tmp_path, "test", 10)


# --- lazy imports -----------------------------------------------------------------------------------


def test_importing_the_tensorrt_modules_does_not_import_heavy_modules():
    modules = ("accuracy", "builder", "calibration", "metadata", "plans", "preflight", "profiles", "runtime")
    code = (
        "import sys; " + "; ".join(f"import trimodal.tensorrt.{name}" for name in modules) + "; "
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
            detect_runtime()
    else:  # pragma: no cover - only inside NVIDIA's containers
        pytest.skip("tensorrt is installed here")
