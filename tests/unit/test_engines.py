"""Pure-Python parts of trimodal.tensorrt: profiles, metadata, plan paths, graph sources, layer precisions, builder
arguments, samples, the TensorRT version from libnvinfer, lazy imports.

The build itself runs under the TensorRT doubles in tests/rehearsal (real Polygraphy, real graphs).
"""

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
from trimodal.tensorrt import runtime, samples
from trimodal.tensorrt.builder import BuildSettings, build_all, build_engine, needs_strongly_typed_flag
from trimodal.tensorrt.layers import LayerPrecisions, check_graph_precision, summarize_network
from trimodal.tensorrt.metadata import (
    PlanMetadata,
    engine_io,
    metadata_path,
    read_metadata,
    sha256_file,
    trt_dtype_name,
    write_metadata,
)
from trimodal.tensorrt.plans import is_up_to_date, plan_path_for, timing_cache_path
from trimodal.tensorrt.profiles import opt_batch_size, profile_shapes
from trimodal.tensorrt.runtime import RuntimeInfo, detect_runtime, libnvinfer_version, same_tensorrt_version
from trimodal.tensorrt.sources import GraphSource, check_spec_matches_repository, engine_precision
from trimodal.triton.repository import render

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
        layer_precisions=LayerPrecisions(layers=12, by_dtype={"FP16": 9, "FP32": 3}, casts=2),
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
    assert data["layer_precisions"] == {"layers": 12, "by_dtype": {"FP16": 9, "FP32": 3}, "quantize": 0,
                                        "dequantize": 0, "casts": 2}  # fmt: skip
    assert data["schema"] == 2 and data["strongly_typed"] and data["onnx_origin"] == "repository"
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


# --- precision, graph sources, plan naming, arguments ------------------------------------------------


def test_build_engine_rejects_unknown_precision_before_touching_tensorrt(tmp_path, spec):
    onnx = tmp_path / "m.onnx"
    onnx.write_bytes(b"x")
    settings = BuildSettings(workspace_mib=1, timing_cache=None, runtime=RUNTIME)
    with pytest.raises(EngineError, match=r"precision 'bf16'.*fp32.*fp16.*int8"):
        build_engine(onnx, tmp_path / "m.plan", spec, "image_encoder", precision="bf16", settings=settings)
    with pytest.raises(EngineError, match=r"missing ONNX graph .*`trimodal build`"):
        build_engine(tmp_path / "nope.onnx", tmp_path / "m.plan", spec, "image_encoder", precision="fp16",
                     settings=settings)  # fmt: skip


def test_graph_names_per_precision_in_the_repository_and_a_build_folder(tmp_path):
    repo = GraphSource(tmp_path / "models")
    assert repo.graph("text_encoder", "fp32") == tmp_path / "models/text_encoder/1/model.onnx"
    assert repo.graph("text_encoder", "fp16") == tmp_path / "models/text_encoder/1/model.fp16.onnx"
    assert repo.graph("text_encoder", "int8") == tmp_path / "models/text_encoder/1/model.int8.onnx"
    build = GraphSource(tmp_path / "models", tmp_path / "build")
    assert build.graph("text_encoder", "fp32") == tmp_path / "build/onnx/text_encoder.onnx"
    assert build.graph("text_encoder", "int8") == tmp_path / "build/onnx/text_encoder.int8.onnx"
    assert (repo.origin, build.origin) == ("repository", "build")
    with pytest.raises(
        EngineError, match=r"missing fp16 ONNX graph .*model\.fp16\.onnx .*never trains.*`trimodal build`"
    ):
        repo.existing_graph("text_encoder", "fp16")


def test_engine_precision_comes_from_the_flag_then_pipeline_yaml(spec):
    assert spec.precision.gpu.default == "fp16"  # pipeline.yaml as shipped: the GPU default
    assert engine_precision(spec, "image_encoder") == "fp16"
    per_model = with_changes(spec, precision__gpu={"default": "fp16", "models": {"image_encoder": "int8"}})
    assert engine_precision(per_model, "image_encoder") == "int8"  # a per-model GPU entry beats the default
    assert engine_precision(per_model, "audio_encoder") == "fp16"
    assert engine_precision(per_model, "image_encoder", "fp32") == "fp32"  # and the flag beats both
    assert engine_precision(spec, "image_encoder", "int8") == "int8"
    with pytest.raises(EngineError, match="precision 'fp8'"):
        engine_precision(spec, "image_encoder", "fp8")


def test_build_all_locates_every_graph_before_tensorrt(tmp_path, spec):
    with pytest.raises(EngineError, match=r"image_encoder: missing fp16 ONNX graph"):
        build_all(spec, tmp_path / "repo", runtime=RUNTIME)
    with pytest.raises(EngineError, match="precision 'fp8'"):
        build_all(spec, tmp_path, precision="fp8", runtime=RUNTIME)
    with pytest.raises(EngineError, match="unknown engine model"):
        build_all(spec, tmp_path, models=["multimodal"], runtime=RUNTIME)
    with pytest.raises(EngineError, match="workspace must be a positive"):
        build_all(spec, tmp_path, workspace=-1, runtime=RUNTIME)


def test_spec_must_have_rendered_the_repository(tmp_path, spec):
    render(spec, tmp_path)
    check_spec_matches_repository(spec, tmp_path, tmp_path / "pipeline.yaml")
    other = with_changes(spec, serving__models__audio_encoder={"max_batch_size": 64})
    with pytest.raises(EngineError, match=r"audio_encoder/config\.pbtxt was not rendered from /x/pipeline\.yaml"):
        check_spec_matches_repository(other, tmp_path, Path("/x/pipeline.yaml"))
    (tmp_path / "image_encoder" / "config.pbtxt").unlink()
    with pytest.raises(EngineError, match=r"image_encoder/config\.pbtxt is missing"):
        check_spec_matches_repository(spec, tmp_path)


def test_plan_paths_single_and_per_architecture(tmp_path, spec):
    assert plan_path_for(tmp_path, spec, "image_encoder", RUNTIME) == tmp_path / "image_encoder/1/model.plan"
    multi = with_changes(spec, engines__compute_capabilities=["8.6", "8.9"])
    assert plan_path_for(tmp_path, multi, "image_encoder", RUNTIME).name == "model_sm89.plan"
    other = with_changes(spec, engines__compute_capabilities=["8.0", "9.0"])
    with pytest.raises(EngineError, match=r"compute capability 8\.9\) is not listed in engines\.compute_capabilities"):
        plan_path_for(tmp_path, other, "image_encoder", RUNTIME)


def test_timing_cache_is_specific_to_trt_and_gpu(tmp_path):
    assert timing_cache_path(tmp_path, RUNTIME) == tmp_path / "timing-trt10.13.3.9-sm89.cache"


# --- layer precisions ------------------------------------------------------------------------------------


def fake_network(layers):
    """An object with the INetworkDefinition calls summarize_network makes: (layer type, first output dtype)."""

    def layer(kind, dtype):
        output = SimpleNamespace(dtype=_Enum(dtype))
        return SimpleNamespace(type=_Enum(kind), num_outputs=1 if dtype else 0, get_output=lambda i: output)

    built = [layer(k, d) for k, d in layers]
    return SimpleNamespace(num_layers=len(built), get_layer=lambda i: built[i])


def test_layer_precisions_count_layers_by_output_type():
    network = fake_network([("CAST", "HALF"), ("CONVOLUTION", "HALF"), ("SHAPE", "INT64"), ("CAST", "FLOAT"),
                            ("QUANTIZE", "INT8"), ("DEQUANTIZE", "HALF"), ("ASSERTION", None)])  # fmt: skip
    layers = summarize_network(network)
    assert layers == LayerPrecisions(7, {"FP16": 3, "INT64": 1, "FP32": 1, "INT8": 1}, 1, 1, 2)
    assert layers.count("FP16", "BF16") == 3
    assert layers.summary() == "7 layers: FP16 3, INT64 1, FP32 1, INT8 1; 1 Q / 1 DQ, 2 casts"
    assert LayerPrecisions.from_dict(layers.to_dict()) == layers


def test_graph_precision_must_match_the_requested_one(tmp_path):
    fp32 = LayerPrecisions(10, {"FP32": 9, "INT64": 1})
    fp16 = LayerPrecisions(10, {"FP16": 8, "FP32": 2}, casts=2)
    int8 = LayerPrecisions(10, {"INT8": 2, "FP16": 6, "FP32": 2}, quantize=2, dequantize=2)
    check_graph_precision(fp32, "fp32", tmp_path / "model.onnx", "m")
    check_graph_precision(fp16, "fp16", tmp_path / "model.fp16.onnx", "m")
    check_graph_precision(int8, "int8", tmp_path / "model.int8.onnx", "m")
    with pytest.raises(EngineError, match=r"model\.fp16\.onnx has no FP16 layer, so it is not an fp16 graph"):
        check_graph_precision(fp32, "fp16", tmp_path / "model.fp16.onnx", "m")
    with pytest.raises(EngineError, match="has no Q/DQ layer pair"):
        check_graph_precision(fp16, "int8", tmp_path / "model.int8.onnx", "m")
    with pytest.raises(EngineError, match="8 half-precision and 0 quantize layers"):
        check_graph_precision(fp16, "fp32", tmp_path / "model.onnx", "m")


# --- the TensorRT version from libnvinfer (the serving image has no Python bindings) --------------------------


class FakeLibrary:
    """A ctypes library exporting some of NvInferRuntime*.h's version functions."""

    def __init__(self, **functions):
        for name, value in functions.items():
            setattr(self, name, _CFunction(value))


class _CFunction:
    def __init__(self, value):
        self.value, self.restype = value, None

    def __call__(self):
        return self.value


def test_libnvinfer_version_from_the_four_part_functions(monkeypatch):
    library = FakeLibrary(getInferLibMajorVersion=11, getInferLibMinorVersion=4, getInferLibPatchVersion=0,
                          getInferLibBuildVersion=9, getInferLibVersion=110400)  # fmt: skip
    monkeypatch.setattr(runtime, "_load_libnvinfer", lambda: (library, "libnvinfer.so.11"))
    assert libnvinfer_version() == "11.4.0.9"
    assert library.getInferLibMajorVersion.restype is not None


def test_libnvinfer_version_from_get_infer_lib_version(monkeypatch):
    library = FakeLibrary(getInferLibVersion=101303)
    monkeypatch.setattr(runtime, "_load_libnvinfer", lambda: (library, "libnvinfer.so.10"))
    assert libnvinfer_version() == "10.13.3"
    monkeypatch.setattr(runtime, "_load_libnvinfer", lambda: (FakeLibrary(), "libfoo.so"))
    with pytest.raises(EngineError, match=r"libfoo\.so exports no getInferLibVersion"):
        libnvinfer_version()


def test_missing_libnvinfer_names_what_was_tried(monkeypatch):
    monkeypatch.setenv(runtime.LIBNVINFER_ENV, "/nowhere/libnvinfer.so.11")
    with pytest.raises(EngineError, match=r"no TensorRT library here \(tried /nowhere/libnvinfer\.so\.11"):
        libnvinfer_version()


def test_same_tensorrt_version_ignores_a_missing_build_number():
    assert same_tensorrt_version("10.13.3.9", "10.13.3.9")
    assert same_tensorrt_version("10.13.3.9", "10.13.3")
    assert not same_tensorrt_version("10.13.3.9", "10.13.3.10")
    assert not same_tensorrt_version("10.13.3.9", "10.14.0")
    assert not same_tensorrt_version("10.13", "10.13")


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
    images, texts, audio, labels = samples.subset(split, 4, seed=0)
    assert labels.dtype == np.int64 and len(labels) == 4 and list(labels) == sorted(labels)
    assert texts == [f"text {i}" for i in labels] and images == [b""] * 4 and audio == [b""] * 4
    assert samples.subset(split, 4, seed=0)[3].tolist() == labels.tolist()
    assert samples.subset(split, 50, seed=0)[3].tolist() == list(range(10))


def test_encoder_inputs_preprocess_the_split_in_contract_dtypes(monkeypatch, tmp_path, spec):
    from trimodal.training.data import dataset

    loaded = make_split(["seven", ""], [7, 3])
    monkeypatch.setattr(dataset, "load_split", lambda root, split: loaded)
    with pytest.raises(EngineError, match=r"no dataset in .*data: mount the build folder with --build-dir"):
        samples.encoder_inputs(spec, tmp_path, "test", 10)
    (tmp_path / "data").mkdir()
    tensors, labels = samples.encoder_inputs(spec, tmp_path, "test", 10, repo_dir=tmp_path / "no-repo")
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
        samples.encoder_inputs(spec, tmp_path, "test", 10)


# --- lazy imports -----------------------------------------------------------------------------------


def test_importing_the_tensorrt_modules_does_not_import_heavy_modules():
    modules = ("accuracy", "builder", "layers", "metadata", "plans", "preflight", "profiles", "runtime", "samples",
               "sources")  # fmt: skip
    code = (
        "import sys; " + "; ".join(f"import trimodal.tensorrt.{name}" for name in modules) + "; "
        "heavy = [m for m in ('tensorrt', 'polygraphy', 'onnxruntime', 'torch') if m in sys.modules]; "
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_detect_runtime_without_tensorrt_says_where_to_run(monkeypatch):
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        monkeypatch.setenv(runtime.LIBNVINFER_ENV, "/nowhere/libnvinfer.so.11")
        with pytest.raises(EngineError, match="inside the serving or engine-builder container"):
            detect_runtime()
    else:  # pragma: no cover - only inside NVIDIA's containers
        pytest.skip("tensorrt is installed here")


# --- command line -----------------------------------------------------------------------------------


def test_build_target_gpu_points_to_build_engines():
    from typer.testing import CliRunner

    from trimodal.cli import app

    result = CliRunner().invoke(app, ["build", "--target", "gpu"])
    assert result.exit_code == 1
    assert "`trimodal build-engines`" in result.output


def test_build_engines_has_the_gpu_build_options(monkeypatch):
    from typer.testing import CliRunner

    from trimodal.cli import app

    monkeypatch.setenv("COLUMNS", "200")
    result = CliRunner().invoke(app, ["build-engines", "--help"])
    assert result.exit_code == 0
    for option in ("--repository", "--build-dir", "--precision", "--workspace", "--force", "--spec"):
        assert option in result.output


def test_the_strongly_typed_flag_is_asked_for_only_where_it_means_something() -> None:
    """TensorRT 10 needs NetworkDefinitionCreationFlag.STRONGLY_TYPED; NvInfer.h 11.1 deprecates and ignores it
    (every 11 network is strongly typed), and Polygraphy raises if a later release drops a flag it is asked for."""
    assert needs_strongly_typed_flag("10.16.0.72") and needs_strongly_typed_flag("10.3.0")
    assert not needs_strongly_typed_flag("11.1.0.106") and not needs_strongly_typed_flag("12.0.0")
