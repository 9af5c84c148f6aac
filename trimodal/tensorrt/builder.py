"""ONNX -> TensorRT plans for the encoders and the fusion head (GPU target).

Nothing here imports TensorRT, Polygraphy or ONNX Runtime at module level: the pure parts (optimization
profiles derived from the spec, plan metadata, data preparation) work and are tested on machines without
a GPU, and the build itself runs inside NVIDIA's TensorRT container of the same release as the serving
Triton container (a plan only loads on the TensorRT version and GPU compute capability that built it).

Layout written by :func:`build_all`::

    model_repository/<model>/1/model.plan          (or model_sm86.plan when per-architecture plans are listed)
    model_repository/<model>/1/model.plan.json     metadata: TensorRT version, GPU, profiles, precision, hashes
    build/engines/timing-trt<version>-sm<cc>.cache persistent timing cache (shared by all models)
    build/engines/<model>-<onnx sha>.int8.cache    INT8 entropy-calibration cache

Entry points for the CLI: :func:`build_all` (``trimodal build --target gpu``); :func:`read_metadata`,
:func:`detect_runtime` and :func:`profile_shapes` are used by :mod:`trimodal.tensorrt.preflight`.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime as _dt
import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trimodal import contract
from trimodal.contract import ENCODERS, TensorSpec
from trimodal.errors import EngineError
from trimodal.spec import PipelineSpec
from trimodal.triton.config import plan_filename

LOGGER = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
REBUILD_COMMAND = "trimodal build --target gpu"
METADATA_SCHEMA = 1
METADATA_SUFFIX = ".json"
ENGINES_SUBDIR = "engines"

Shape = tuple[int, ...]
ShapeRange = tuple[Shape, Shape, Shape]
Feeds = dict[str, np.ndarray]

# TensorRT DataType enum names -> Triton/KServe dtype names (as used in trimodal.contract).
_TRT_DTYPES: dict[str, str] = {
    "FLOAT": "FP32",
    "HALF": "FP16",
    "BF16": "BF16",
    "INT8": "INT8",
    "UINT8": "UINT8",
    "INT32": "INT32",
    "INT64": "INT64",
    "BOOL": "BOOL",
    "FP8": "FP8",
}
# Triton/KServe dtype names -> numpy, for the data fed to engines and ONNX Runtime.
NUMPY_DTYPES: dict[str, type[np.generic]] = {
    "FP32": np.float32,
    "FP16": np.float16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}


# --------------------------------------------------------------------------------------------------
# Optimization profiles
# --------------------------------------------------------------------------------------------------


def profile_shapes(spec: PipelineSpec, model: str) -> dict[str, ShapeRange]:
    """The TensorRT optimization profile of one model, derived from the spec.

    Batch: min 1, opt = the largest preferred batch size (else ``max_batch_size``), max = ``max_batch_size``
    of the model's dynamic batching. Variable dims (-1, the text sequence): min
    ``engines.text_min_tokens``, opt = max = ``modalities.text.max_tokens`` (the preprocessor pads to it).

    Args:
        spec: the pipeline spec.
        model: one of :data:`trimodal.contract.ENCODERS`.

    Returns:
        ``{input tensor: (min shape, opt shape, max shape)}`` with the batch dimension first.

    Raises:
        EngineError: for a model that is not built as an engine or an inconsistent spec.
    """
    if model not in ENCODERS:
        raise EngineError(f"{model!r} is not built as a TensorRT engine; expected one of {list(ENCODERS)}")
    serving = spec.serving.resolved(model)
    max_batch = serving.max_batch_size
    opt_batch = max(serving.preferred_batch_sizes, default=max_batch)
    text = spec.modalities.text
    min_tokens = spec.engines.text_min_tokens
    if min_tokens > text.max_tokens:
        raise EngineError(
            f"engines.text_min_tokens ({min_tokens}) must be <= modalities.text.max_tokens ({text.max_tokens})"
        )
    shapes: dict[str, ShapeRange] = {}
    for tensor in contract.model_io(spec)[model].inputs:
        low, opt, high = [1], [opt_batch], [max_batch]
        for dim in tensor.dims:
            if dim == -1:
                low.append(min_tokens)
                opt.append(text.max_tokens)
                high.append(text.max_tokens)
            else:
                low.append(dim)
                opt.append(dim)
                high.append(dim)
        shapes[tensor.name] = (tuple(low), tuple(opt), tuple(high))
    return shapes


def opt_batch_size(spec: PipelineSpec, model: str) -> int:
    """The batch size TensorRT optimizes for (and calibrates with): the profile's opt batch."""
    return next(iter(profile_shapes(spec, model).values()))[1][0]


# --------------------------------------------------------------------------------------------------
# Runtime (TensorRT version + GPU) detection
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeInfo:
    """The TensorRT version and the GPU a plan is built on or served by."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    @property
    def sm(self) -> str:
        """``"8.6"`` -> ``"sm86"``."""
        return "sm" + self.compute_capability.replace(".", "")


def _import_tensorrt() -> Any:
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError(
            f"tensorrt is not importable here ({exc}); TensorRT engines are built and checked inside NVIDIA's "
            "TensorRT/Triton container: `docker compose run --rm engine-builder` (see deploy/GPU.md)"
        ) from None
    return trt


def _cuda_device(index: int = 0) -> tuple[str, str]:
    """Name and compute capability of a CUDA device via the driver API (libcuda), no Python CUDA package.

    ``index`` counts the devices visible to this process (``CUDA_VISIBLE_DEVICES`` applies).
    """
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise EngineError(
            f"no NVIDIA driver here (cannot load libcuda.so.1: {exc}); run this on a GPU host, in a container "
            "started with a GPU reservation"
        ) from None

    def call(name: str, *args: object) -> None:
        status = getattr(libcuda, name)(*args)
        if status != 0:
            raise EngineError(f"CUDA driver call {name} failed with error {status}: is a GPU visible to this process?")

    call("cuInit", 0)
    count = ctypes.c_int()
    call("cuDeviceGetCount", ctypes.byref(count))
    if index >= count.value:
        raise EngineError(f"CUDA device {index} requested but {count.value} device(s) are visible")
    device = ctypes.c_int()
    call("cuDeviceGet", ctypes.byref(device), index)
    name = ctypes.create_string_buffer(256)
    call("cuDeviceGetName", name, 256, device)
    major, minor = ctypes.c_int(), ctypes.c_int()
    call("cuDeviceGetAttribute", ctypes.byref(major), 75, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
    call("cuDeviceGetAttribute", ctypes.byref(minor), 76, device)  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
    return name.value.decode(errors="replace"), f"{major.value}.{minor.value}"


def detect_runtime(device: int = 0) -> RuntimeInfo:
    """The running TensorRT version and the GPU this process sees.

    Args:
        device: index among the visible CUDA devices.

    Returns:
        The runtime info.

    Raises:
        EngineError: if TensorRT or a GPU is missing.
    """
    trt = _import_tensorrt()
    gpu_name, cc = _cuda_device(device)
    return RuntimeInfo(tensorrt_version=str(trt.__version__), gpu_name=gpu_name, compute_capability=cc)


# --------------------------------------------------------------------------------------------------
# Plan metadata
# --------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PlanMetadata:
    """What a plan was built from and for; written as JSON next to the plan (``model.plan.json``).

    ``inputs``/``outputs`` are read back from the built engine (dims without the batch dimension, -1 for a
    dynamic dim), so the checker can compare a plan with its config.pbtxt without TensorRT.
    """

    model: str
    plan_file: str
    precision: str
    tensorrt_version: str
    gpu_name: str
    compute_capability: str
    profiles: dict[str, ShapeRange]
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    onnx_file: str
    onnx_sha256: str
    plan_sha256: str
    workspace_mib: int
    built_at: str
    build_seconds: float = 0.0
    builder: str = "trimodal"
    schema: int = METADATA_SCHEMA

    @property
    def max_batch_size(self) -> int:
        """The largest batch every input's profile accepts (0 when there are no profiles)."""
        return min((high[0] for _, _, high in self.profiles.values()), default=0)

    @property
    def runtime(self) -> RuntimeInfo:
        """The TensorRT version and GPU the plan was built with."""
        return RuntimeInfo(self.tensorrt_version, self.gpu_name, self.compute_capability)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["profiles"] = {name: [list(s) for s in shapes] for name, shapes in self.profiles.items()}
        data["inputs"] = [_tensor_to_dict(t) for t in self.inputs]
        data["outputs"] = [_tensor_to_dict(t) for t in self.outputs]
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PlanMetadata:
        """Inverse of :meth:`to_dict`.

        Raises:
            EngineError: if a field is missing or malformed.
        """
        try:
            schema = int(data.get("schema", 0))
            if schema != METADATA_SCHEMA:
                raise ValueError(f"schema {schema}, expected {METADATA_SCHEMA}")
            fields = {f.name for f in dataclasses.fields(cls)}
            values = {key: value for key, value in data.items() if key in fields}
            values["profiles"] = {
                str(name): tuple(tuple(int(d) for d in shape) for shape in shapes)
                for name, shapes in data["profiles"].items()
            }
            for name, shapes in values["profiles"].items():
                if len(shapes) != 3:
                    raise ValueError(f"profile of {name} must have min, opt and max shapes")
            values["inputs"] = tuple(_tensor_from_dict(t) for t in data["inputs"])
            values["outputs"] = tuple(_tensor_from_dict(t) for t in data["outputs"])
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineError(f"malformed plan metadata ({type(exc).__name__}: {exc})") from None


def _tensor_to_dict(tensor: TensorSpec) -> dict[str, Any]:
    return {"name": tensor.name, "dtype": tensor.dtype, "dims": list(tensor.dims)}


def _tensor_from_dict(data: Mapping[str, Any]) -> TensorSpec:
    return TensorSpec(str(data["name"]), str(data["dtype"]), tuple(int(d) for d in data["dims"]))


def metadata_path(plan_path: Path) -> Path:
    """``.../1/model.plan`` -> ``.../1/model.plan.json``."""
    plan_path = Path(plan_path)
    return plan_path.with_name(plan_path.name + METADATA_SUFFIX)


def write_metadata(plan_path: Path, metadata: PlanMetadata) -> Path:
    """Write the metadata of ``plan_path`` atomically.

    Args:
        plan_path: the plan the metadata describes.
        metadata: what to write.

    Returns:
        The metadata file.
    """
    target = metadata_path(plan_path)
    tmp = target.with_name(target.name + ".tmp")
    tmp.write_text(json.dumps(metadata.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(target)
    return target


def read_metadata(plan_path: Path) -> PlanMetadata:
    """Read the metadata written next to ``plan_path``.

    Args:
        plan_path: the plan.

    Returns:
        The metadata.

    Raises:
        EngineError: if the file is missing, not JSON, or malformed.
    """
    source = metadata_path(plan_path)
    try:
        data = json.loads(source.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise EngineError(f"missing plan metadata {source}") from None
    except (OSError, ValueError) as exc:
        raise EngineError(f"cannot read plan metadata {source}: {exc}") from None
    if not isinstance(data, dict):
        raise EngineError(f"cannot read plan metadata {source}: expected a JSON object")
    try:
        return PlanMetadata.from_dict(data)
    except EngineError as exc:
        raise EngineError(f"{source}: {exc}") from None


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def trt_dtype_name(dtype: object) -> str:
    """A TensorRT ``DataType`` (or its name) -> the Triton dtype name (``FLOAT`` -> ``FP32``).

    Raises:
        EngineError: for a dtype Triton cannot serve.
    """
    name = str(getattr(dtype, "name", dtype)).rsplit(".", 1)[-1].upper()
    try:
        return _TRT_DTYPES[name]
    except KeyError:
        raise EngineError(f"TensorRT dtype {name} has no Triton equivalent") from None


def engine_io(engine: Any) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Inputs and outputs of a deserialized TensorRT engine (TensorRT >= 8.5 named-tensor API).

    Args:
        engine: a ``tensorrt.ICudaEngine`` (or anything with the same methods).

    Returns:
        ``(inputs, outputs)`` with Triton dtype names and dims without the (dynamic) batch dimension.

    Raises:
        EngineError: if a tensor has no dynamic leading batch dimension (Triton's max_batch_size > 0 needs it).
    """
    inputs: list[TensorSpec] = []
    outputs: list[TensorSpec] = []
    for index in range(engine.num_io_tensors):
        name = engine.get_tensor_name(index)
        shape = tuple(int(d) for d in engine.get_tensor_shape(name))
        if not shape or shape[0] != -1:
            raise EngineError(
                f"engine tensor {name} has shape {list(shape)}: expected a dynamic batch dimension first "
                "(export the ONNX graph with a dynamic batch axis)"
            )
        tensor = TensorSpec(name, trt_dtype_name(engine.get_tensor_dtype(name)), shape[1:])
        mode = str(getattr(engine.get_tensor_mode(name), "name", engine.get_tensor_mode(name))).upper()
        (inputs if mode.endswith("INPUT") else outputs).append(tensor)
    return tuple(inputs), tuple(outputs)


# --------------------------------------------------------------------------------------------------
# Data: preprocessed splits for INT8 calibration and accuracy checks
# --------------------------------------------------------------------------------------------------


def _split_columns(split: Any) -> tuple[list[bytes], list[bytes], list[bytes], np.ndarray]:
    """(images, texts, audios, labels) from what ``trimodal.training.data.dataset.load_split`` returns.

    Accepts an object or mapping with ``images``, ``texts`` (or ``text``), ``audio`` (or ``audios``) and
    ``labels`` columns, or a sequence of samples with ``image``, ``text``, ``audio``, ``label``.
    """

    def column(container: Any, *names: str) -> Any:
        for name in names:
            if isinstance(container, Mapping) and name in container:
                return container[name]
            if hasattr(container, name):
                return getattr(container, name)
        raise EngineError(f"dataset split has none of the columns {list(names)}; cannot build calibration data")

    def as_bytes(value: Any) -> bytes:
        if value is None:
            return b""
        if isinstance(value, str):
            return value.encode("utf-8")
        if isinstance(value, np.ndarray) and value.dtype == object:
            return as_bytes(value.item())
        return bytes(value)

    if isinstance(split, Sequence) and not isinstance(split, (str, bytes)) and split and not hasattr(split, "labels"):
        images = [column(s, "image") for s in split]
        texts = [column(s, "text") for s in split]
        audios = [column(s, "audio") for s in split]
        labels = [column(s, "label") for s in split]
    else:
        images = list(column(split, "images", "image"))
        texts = list(column(split, "texts", "text"))
        audios = list(column(split, "audios", "audio"))
        labels = list(column(split, "labels", "label"))
    return (
        [as_bytes(v) for v in images],
        [as_bytes(v) for v in texts],
        [as_bytes(v) for v in audios],
        np.asarray(labels, dtype=np.int64),
    )


def encoder_inputs(
    spec: PipelineSpec, build_dir: Path, split: str, count: int, seed: int | None = None
) -> tuple[Feeds, np.ndarray]:
    """Preprocess ``count`` samples of a dataset split exactly as the server's preprocessors do.

    Args:
        spec: the pipeline spec.
        build_dir: the build folder holding the dataset.
        split: ``"train"``, ``"val"`` or ``"test"``.
        count: how many samples (a deterministic random subset; all when the split is smaller).
        seed: subset seed (defaults to the spec's seed).

    Returns:
        ``(tensors, labels)``: every preprocessor output by tensor name (IMAGE_TENSOR, INPUT_IDS,
        ATTENTION_MASK, AUDIO_TENSOR and the three masks), batch first.
    """
    from trimodal.layout import tokenizer_source
    from trimodal.runtime.preprocess import TextPreprocessor, preprocess_audio, preprocess_images
    from trimodal.training.data.dataset import load_split

    images, texts, audios, labels = _split_columns(load_split(build_dir, split))
    total = len(labels)
    if total == 0:
        raise EngineError(f"the {split} split in {build_dir} is empty")
    rng = np.random.default_rng(spec.seed if seed is None else seed)
    chosen = np.sort(rng.permutation(total)[: min(count, total)])
    pick = lambda column: [column[i] for i in chosen]  # noqa: E731
    image, image_mask = preprocess_images(pick(images), spec.modalities.image)
    ids, attention, text_mask = TextPreprocessor(spec.modalities.text, tokenizer_source())(pick(texts))
    audio, audio_mask = preprocess_audio(pick(audios), spec.modalities.audio)
    tensors = {
        contract.IMAGE_TENSOR: image,
        contract.IMAGE_MASK: image_mask,
        contract.INPUT_IDS: ids,
        contract.ATTENTION_MASK: attention,
        contract.TEXT_MASK: text_mask,
        contract.AUDIO_TENSOR: audio,
        contract.AUDIO_MASK: audio_mask,
    }
    return _cast_to_contract(spec, tensors), labels[chosen]


def _cast_to_contract(spec: PipelineSpec, tensors: Feeds) -> Feeds:
    dtypes = {t.name: t.dtype for io in contract.model_io(spec).values() for t in (*io.inputs, *io.outputs)}
    return {
        name: np.ascontiguousarray(value, dtype=NUMPY_DTYPES[dtypes[name]])
        if dtypes.get(name) in NUMPY_DTYPES
        else value
        for name, value in tensors.items()
    }


InferFn = Callable[[str, Feeds], Feeds]


def run_pipeline(spec: PipelineSpec, tensors: Feeds, infer: InferFn, batch_size: int) -> dict[str, Feeds]:
    """Run the encoders and the fusion head on preprocessed tensors, in batches, with any backend.

    Args:
        spec: the pipeline spec.
        tensors: preprocessor outputs by tensor name (see :func:`encoder_inputs`).
        infer: ``infer(model, feeds) -> outputs`` for one batch (ONNX Runtime, TensorRT, a fake in tests).
        batch_size: the largest batch sent to ``infer`` (<= every model's max_batch_size).

    Returns:
        ``{model: {output name: array over all samples}}`` for the four models.
    """
    ios = contract.model_io(spec)
    available = dict(tensors)
    results: dict[str, Feeds] = {}
    total = len(next(iter(tensors.values())))
    for model in ENCODERS:  # encoders first, fusion last: its inputs are the encoders' outputs + masks
        names = [t.name for t in ios[model].inputs]
        missing = [name for name in names if name not in available]
        if missing:
            raise EngineError(f"{model}: no data for inputs {missing}")
        chunks: dict[str, list[np.ndarray]] = {}
        for start in range(0, total, batch_size):
            feeds = {name: available[name][start : start + batch_size] for name in names}
            for name, value in infer(model, feeds).items():
                chunks.setdefault(name, []).append(np.asarray(value))
        outputs = {name: np.concatenate(parts) for name, parts in chunks.items()}
        results[model] = outputs
        available.update(outputs)
    return results


def calibration_feeds(spec: PipelineSpec, build_dir: Path, onnx_dir: Path | None = None) -> dict[str, list[Feeds]]:
    """INT8 calibration batches for every model, from the training split.

    The encoders see preprocessed training samples; the fusion head sees the encoders' features computed by
    ONNX Runtime on the same samples, with the preprocessors' presence masks. Every batch has the profile's
    opt batch size (TensorRT calibrates at the opt shape).

    Args:
        spec: the pipeline spec.
        build_dir: the build folder (dataset, ``onnx/``).
        onnx_dir: where the ONNX graphs are (default ``build_dir/onnx``).

    Returns:
        ``{model: [feeds, ...]}`` with ``spec.engines.calibration_batches`` batches each.
    """
    onnx_dir = onnx_dir or Path(build_dir) / "onnx"
    batch = min(opt_batch_size(spec, model) for model in ENCODERS)
    count = batch * spec.engines.calibration_batches
    LOGGER.info("INT8 calibration data: %d training samples in %d batches of %d", count, count // batch, batch)
    tensors, _ = encoder_inputs(spec, build_dir, "train", count)
    results = run_pipeline(spec, tensors, ort_infer(spec, onnx_dir), batch)
    available = dict(tensors)
    for outputs in results.values():
        available.update(outputs)
    ios = contract.model_io(spec)
    feeds: dict[str, list[Feeds]] = {}
    usable = (len(next(iter(tensors.values()))) // batch) * batch
    for model in ENCODERS:
        names = [t.name for t in ios[model].inputs]
        feeds[model] = [
            {name: np.ascontiguousarray(available[name][start : start + batch]) for name in names}
            for start in range(0, usable, batch)
        ]
        if not feeds[model]:
            raise EngineError(f"too few training samples for one INT8 calibration batch of {batch}")
    return feeds


def ort_infer(spec: PipelineSpec, onnx_dir: Path, threads: int = 0) -> InferFn:
    """An ``infer(model, feeds)`` function running ``onnx_dir/<model>.onnx`` in ONNX Runtime (CPU)."""
    import onnxruntime as ort

    sessions: dict[str, Any] = {}
    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads

    def infer(model: str, feeds: Feeds) -> Feeds:
        if model not in sessions:
            path = Path(onnx_dir) / f"{model}.onnx"
            if not path.exists():
                raise EngineError(f"missing {path}: run `trimodal build` first")
            sessions[model] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        session = sessions[model]
        names = [out.name for out in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds), strict=True))

    return infer


# --------------------------------------------------------------------------------------------------
# Building
# --------------------------------------------------------------------------------------------------


def _progress_monitor(trt: Any, model: str) -> Any | None:
    """A TensorRT progress monitor logging the builder's phases (None on TensorRT without the API)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._started: dict[str, float] = {}

        def phase_start(self, parent_phase: str | None, phase_name: str, num_steps: int) -> None:
            self._started[phase_name] = time.monotonic()
            level = logging.INFO if parent_phase is None else logging.DEBUG
            LOGGER.log(level, "%s: %s (%d steps)", model, phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            LOGGER.debug("%s: %s step %d", model, phase_name, step)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            elapsed = time.monotonic() - self._started.pop(phase_name, time.monotonic())
            LOGGER.debug("%s: %s done in %.1f s", model, phase_name, elapsed)

    return _Monitor()


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    spec: PipelineSpec,
    model: str,
    *,
    precision: str,
    workspace_mib: int,
    timing_cache: Path,
    calibration_data: Iterable[Feeds] | None = None,
    calibration_cache: Path | None = None,
    progress: bool = True,
    runtime: RuntimeInfo | None = None,
) -> PlanMetadata:
    """Build one TensorRT plan from an ONNX graph with Polygraphy, and write its metadata next to it.

    Args:
        onnx_path: the ONNX graph (named, dynamic-batch inputs as exported by :mod:`trimodal.training.export`).
        plan_path: where to write the plan (written atomically; metadata goes to ``<plan>.json``).
        spec: the pipeline spec (optimization profile, see :func:`profile_shapes`).
        model: the model name (one of :data:`~trimodal.contract.ENCODERS`).
        precision: ``"fp16"`` (FP16 + FP32 kernels), ``"int8"`` (INT8 entropy calibration, FP16 fallback) or
            ``"fp32"`` (strict FP32, TF32 disabled).
        workspace_mib: builder workspace memory pool limit in MiB.
        timing_cache: persistent timing cache file; loaded when present and merged back after the build.
        calibration_data: INT8 only: batches of ``{input name: array}`` at the profile's opt shape. May be
            omitted when ``calibration_cache`` already exists.
        calibration_cache: INT8 only: calibration cache file (read if present, written after calibration).
        progress: log the builder's phases.
        runtime: the TensorRT version/GPU recorded in the metadata (detected when None).

    Returns:
        The plan's metadata.

    Raises:
        EngineError: on a bad argument, a missing input, an ONNX graph that does not match the spec, or a
            failed build.
    """
    if precision not in PRECISIONS:
        raise EngineError(f"precision {precision!r}: expected one of {list(PRECISIONS)}")
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    if not onnx_path.exists():
        raise EngineError(f"missing ONNX graph {onnx_path}: run `trimodal build` (CPU target) first")
    if precision == "int8" and calibration_data is None and not (calibration_cache and calibration_cache.exists()):
        raise EngineError(f"{model}: INT8 needs calibration data or an existing calibration cache")
    profiles = profile_shapes(spec, model)
    trt = _import_tensorrt()
    runtime = runtime or detect_runtime()
    try:
        from polygraphy.backend.trt import (
            Calibrator,
            CreateConfig,
            EngineBytesFromNetwork,
            Profile,
            network_from_onnx_path,
        )
    except ImportError as exc:
        raise EngineError(f"polygraphy is not importable ({exc}); install trimodal[gpu]") from None

    started = time.monotonic()
    LOGGER.info("%s: building %s plan from %s (TensorRT %s, %s)", model, precision, onnx_path,
                runtime.tensorrt_version, runtime.gpu_name)  # fmt: skip
    network = network_from_onnx_path(str(onnx_path))()
    _, net, _ = network
    onnx_inputs = {net.get_input(i).name for i in range(net.num_inputs)}
    if onnx_inputs != set(profiles):
        raise EngineError(
            f"{onnx_path} has inputs {sorted(onnx_inputs)} but pipeline.yaml derives {sorted(profiles)} for {model}; "
            "re-export with `trimodal build`"
        )
    profile = Profile()
    for name, (low, opt, high) in profiles.items():
        profile.add(name, min=low, opt=opt, max=high)

    config_args: dict[str, Any] = {
        "profiles": [profile],
        "memory_pool_limits": {trt.MemoryPoolType.WORKSPACE: int(workspace_mib) << 20},
        "fp16": precision in ("fp16", "int8"),
        "tf32": precision != "fp32",
    }
    if Path(timing_cache).exists():
        config_args["load_timing_cache"] = str(timing_cache)
    if precision == "int8":
        if not hasattr(trt, "IInt8EntropyCalibrator2"):
            raise EngineError(
                f"TensorRT {runtime.tensorrt_version} has no implicit INT8 calibration; build with precision fp16, "
                "or quantize the ONNX graph explicitly (Q/DQ nodes)"
            )
        data = list(calibration_data) if calibration_data is not None else []
        config_args["int8"] = True
        config_args["calibrator"] = Calibrator(
            iter(data), cache=str(calibration_cache) if calibration_cache else None,
            BaseClass=trt.IInt8EntropyCalibrator2,
        )  # fmt: skip
    if progress:
        monitor = _progress_monitor(trt, model)
        if monitor is not None:
            config_args["progress_monitor"] = monitor
    Path(timing_cache).parent.mkdir(parents=True, exist_ok=True)
    try:
        serialized = EngineBytesFromNetwork(network, CreateConfig(**config_args), save_timing_cache=str(timing_cache))()
    except Exception as exc:  # Polygraphy raises PolygraphyException; TensorRT raises RuntimeError
        raise EngineError(f"{model}: TensorRT build from {onnx_path} failed: {exc}") from exc
    if not serialized:
        raise EngineError(f"{model}: TensorRT returned no engine for {onnx_path} (see the log above)")
    plan_bytes = bytes(serialized)

    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise EngineError(f"{model}: the plan just built cannot be deserialized")
    inputs, outputs = engine_io(engine)

    plan_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan_path.with_name(plan_path.name + ".tmp")
    tmp.write_bytes(plan_bytes)
    tmp.replace(plan_path)
    metadata = PlanMetadata(
        model=model,
        plan_file=plan_path.name,
        precision=precision,
        tensorrt_version=runtime.tensorrt_version,
        gpu_name=runtime.gpu_name,
        compute_capability=runtime.compute_capability,
        profiles=profiles,
        inputs=inputs,
        outputs=outputs,
        onnx_file=onnx_path.name,
        onnx_sha256=sha256_file(onnx_path),
        plan_sha256=hashlib.sha256(plan_bytes).hexdigest(),
        workspace_mib=int(workspace_mib),
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(time.monotonic() - started, 2),
        builder=_builder_version(),
    )
    write_metadata(plan_path, metadata)
    LOGGER.info("%s: wrote %s (%.1f MiB) in %.1f s", model, plan_path, len(plan_bytes) / 2**20, metadata.build_seconds)
    return metadata


def _builder_version() -> str:
    try:
        from importlib.metadata import version

        return f"trimodal {version('trimodal')}, polygraphy {version('polygraphy')}"
    except Exception:  # metadata missing in an uninstalled checkout
        return "trimodal"


def plan_path_for(repo_dir: Path, spec: PipelineSpec, model: str, runtime: RuntimeInfo, version: int = 1) -> Path:
    """Where the plan for ``runtime``'s GPU goes: ``<repo>/<model>/<version>/model.plan`` or ``model_smXY.plan``.

    Raises:
        EngineError: when per-architecture plans are configured but this GPU's architecture is not listed.
    """
    ccs = spec.engines.compute_capabilities
    if ccs and runtime.compute_capability not in ccs:
        raise EngineError(
            f"this GPU ({runtime.gpu_name}, compute capability {runtime.compute_capability}) is not listed in "
            f'engines.compute_capabilities {ccs} of pipeline.yaml; add "{runtime.compute_capability}" there, '
            f"run `trimodal render`, then `{REBUILD_COMMAND}`"
        )
    filename = plan_filename(runtime.compute_capability if ccs else None)
    return Path(repo_dir) / model / str(version) / filename


def is_up_to_date(
    plan_path: Path, onnx_path: Path, spec: PipelineSpec, model: str, precision: str, runtime: RuntimeInfo
) -> bool:
    """Whether an existing plan was built from this ONNX graph, spec profile, precision, TensorRT and GPU."""
    if not plan_path.exists():
        return False
    try:
        meta = read_metadata(plan_path)
    except EngineError:
        return False
    return (
        meta.precision == precision
        and meta.tensorrt_version == runtime.tensorrt_version
        and meta.compute_capability == runtime.compute_capability
        and meta.profiles == profile_shapes(spec, model)
        and onnx_path.exists()
        and meta.onnx_sha256 == sha256_file(onnx_path)
        and meta.plan_sha256 == sha256_file(plan_path)
    )


def timing_cache_path(build_dir: Path, runtime: RuntimeInfo) -> Path:
    """The persistent timing cache for one TensorRT version and GPU architecture."""
    return Path(build_dir) / ENGINES_SUBDIR / f"timing-trt{runtime.tensorrt_version}-{runtime.sm}.cache"


def calibration_cache_path(build_dir: Path, model: str, onnx_sha256: str) -> Path:
    """The INT8 calibration cache of one ONNX graph (a re-exported graph gets a fresh cache)."""
    return Path(build_dir) / ENGINES_SUBDIR / f"{model}-{onnx_sha256[:12]}.int8.cache"


def build_all(
    spec: PipelineSpec,
    build_dir: Path,
    repo_dir: Path,
    precision: str | None = None,
    workspace: int | None = None,
    *,
    models: Sequence[str] = ENCODERS,
    force: bool = False,
    progress: bool = True,
    runtime: RuntimeInfo | None = None,
) -> list[PlanMetadata]:
    """Build the plans of the encoders and the fusion head into the model repository (``trimodal build --target gpu``).

    Plans that are up to date (same ONNX hash, profile, precision, TensorRT version and GPU architecture)
    are kept unless ``force``.

    Args:
        spec: the pipeline spec.
        build_dir: the build folder holding ``onnx/<model>.onnx`` (and the dataset for INT8); timing and
            calibration caches are kept in ``build_dir/engines/``.
        repo_dir: the model repository; plans go to ``<model>/1/``.
        precision: ``fp32``/``fp16``/``int8``; defaults to ``spec.precision``.
        workspace: builder workspace in MiB; defaults to ``spec.engines.workspace_mib``.
        models: which models to build.
        force: rebuild even when up to date.
        progress: log the builder's phases.
        runtime: TensorRT version/GPU (detected when None).

    Returns:
        The metadata of every plan (built or kept), in ``models`` order.

    Raises:
        EngineError: naming the model and what went wrong.
    """
    precision = precision or spec.precision
    if precision not in PRECISIONS:
        raise EngineError(f"precision {precision!r}: expected one of {list(PRECISIONS)}")
    workspace_mib = int(workspace or spec.engines.workspace_mib)
    if workspace_mib <= 0:
        raise EngineError(f"workspace must be a positive number of MiB, got {workspace_mib}")
    unknown = [m for m in models if m not in ENCODERS]
    if unknown:
        raise EngineError(f"unknown engine model(s) {unknown}; expected some of {list(ENCODERS)}")
    build_dir, repo_dir = Path(build_dir), Path(repo_dir)
    onnx_dir = build_dir / "onnx"
    missing = [str(onnx_dir / f"{m}.onnx") for m in models if not (onnx_dir / f"{m}.onnx").exists()]
    if missing:
        raise EngineError(f"missing ONNX graph(s) {missing}: run `trimodal build` (CPU target) first")
    runtime = runtime or detect_runtime()
    timing_cache = timing_cache_path(build_dir, runtime)
    LOGGER.info("building %d engine(s): %s, workspace %d MiB, TensorRT %s on %s (cc %s)", len(models), precision,
                workspace_mib, runtime.tensorrt_version, runtime.gpu_name, runtime.compute_capability)  # fmt: skip

    calibration: dict[str, list[Feeds]] | None = None
    results: list[PlanMetadata] = []
    for position, model in enumerate(models, start=1):
        onnx_path = onnx_dir / f"{model}.onnx"
        plan_path = plan_path_for(repo_dir, spec, model, runtime)
        if not force and is_up_to_date(plan_path, onnx_path, spec, model, precision, runtime):
            LOGGER.info("[%d/%d] %s: %s is up to date", position, len(models), model, plan_path)
            results.append(read_metadata(plan_path))
            continue
        LOGGER.info("[%d/%d] %s", position, len(models), model)
        calibration_cache = None
        data = None
        if precision == "int8":
            calibration_cache = calibration_cache_path(build_dir, model, sha256_file(onnx_path))
            if not calibration_cache.exists():
                if calibration is None:
                    calibration = calibration_feeds(spec, build_dir, onnx_dir)
                data = calibration[model]
        results.append(
            build_engine(
                onnx_path,
                plan_path,
                spec,
                model,
                precision=precision,
                workspace_mib=workspace_mib,
                timing_cache=timing_cache,
                calibration_data=data,
                calibration_cache=calibration_cache,
                progress=progress,
                runtime=runtime,
            )
        )
    return results


__all__ = [
    "PRECISIONS",
    "REBUILD_COMMAND",
    "PlanMetadata",
    "RuntimeInfo",
    "build_all",
    "build_engine",
    "calibration_feeds",
    "detect_runtime",
    "encoder_inputs",
    "engine_io",
    "metadata_path",
    "profile_shapes",
    "read_metadata",
    "run_pipeline",
    "write_metadata",
]
