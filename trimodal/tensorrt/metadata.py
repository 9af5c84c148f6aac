"""Plan metadata: what a plan was built from and for, written as JSON next to it (``model.plan.json``).

The checker reads it without TensorRT; :func:`engine_io` fills its tensors from a built engine.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trimodal.contract import TensorSpec
from trimodal.errors import EngineError
from trimodal.tensorrt.layers import DTYPE_NAMES, LayerPrecisions
from trimodal.tensorrt.profiles import ShapeRange
from trimodal.tensorrt.runtime import RuntimeInfo

LOGGER = logging.getLogger(__name__)

METADATA_SCHEMA = 2  # 2: strongly typed builds (graph origin, per-layer precision summary)
METADATA_SUFFIX = ".json"

# The TensorRT dtypes Triton can serve (names as in trimodal.contract; layers.DTYPE_NAMES maps TensorRT's names).
# Triton's model config has no FP8 type (model_config.proto ends at TYPE_BF16), so an FP8 input or output is refused.
SERVABLE_DTYPES = frozenset({"FP32", "FP16", "BF16", "INT8", "UINT8", "INT32", "INT64", "BOOL"})


@dataclass(frozen=True)
class PlanMetadata:
    """What a plan was built from and for; written as JSON next to the plan (``model.plan.json``).

    ``inputs``/``outputs`` are read back from the built engine (dims without the batch dimension, -1 for a
    dynamic dim), so the checker can compare a plan with its config.pbtxt without TensorRT. ``onnx_file`` is
    the graph's file name, found next to the plan (``onnx_origin == "repository"``) or in a build folder's
    ``onnx/`` (``"build"``); ``layer_precisions`` counts the strongly typed network's layers per type.
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
    onnx_origin: str = "repository"
    strongly_typed: bool = True
    layer_precisions: LayerPrecisions | None = None
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
        data["layer_precisions"] = None if self.layer_precisions is None else self.layer_precisions.to_dict()
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
            values["profiles"] = _profiles_from_dict(data["profiles"])
            values["inputs"] = tuple(_tensor_from_dict(t) for t in data["inputs"])
            values["outputs"] = tuple(_tensor_from_dict(t) for t in data["outputs"])
            layers = data.get("layer_precisions")
            values["layer_precisions"] = None if layers is None else LayerPrecisions.from_dict(layers)
            return cls(**values)
        except (KeyError, TypeError, ValueError) as exc:
            raise EngineError(f"malformed plan metadata ({type(exc).__name__}: {exc})") from None


def _profiles_from_dict(data: Mapping[str, Any]) -> dict[str, ShapeRange]:
    profiles = {str(name): tuple(tuple(int(d) for d in shape) for shape in shapes) for name, shapes in data.items()}
    for name, shapes in profiles.items():
        if len(shapes) != 3:
            raise ValueError(f"profile of {name} must have min, opt and max shapes")
    return profiles  # type: ignore[return-value]


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
    triton = DTYPE_NAMES.get(name)
    if triton not in SERVABLE_DTYPES:
        raise EngineError(f"TensorRT dtype {name} has no Triton equivalent")
    return triton


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
