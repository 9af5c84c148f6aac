"""The double's ONNX import: graph -> network tensors and layers, with the checks a strongly typed build makes.

Returns parser errors as ``(ErrorCode name, description, node index, node name, op)`` tuples; the
descriptions follow onnx-tensorrt's wording where the rehearsal relies on them ("No importer registered for
op: X").
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .network import FLOATS, ONNX_TO_TRT, OP_LAYERS, SAME_TYPE_INPUTS

Error = tuple[str, str, int, str, str]


def _load(path: Path) -> tuple[Any | None, list[Error]]:
    import onnx

    if not path.is_file():
        return None, [("MODEL_DESERIALIZE_FAILED", f"Failed to open file: {path}", -1, "", "")]
    try:
        model = onnx.load(str(path))
        return onnx.shape_inference.infer_shapes(model, strict_mode=True), []
    except Exception as exc:  # onnx raises DecodeError, ValidationError, InferenceError
        return None, [("MODEL_DESERIALIZE_FAILED", f"Failed to parse ONNX model from file {path}: {exc}", -1, "", "")]


def _shape(value_info: Any) -> list[int]:
    dims = value_info.type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") else -1 for d in dims]


def _types(model: Any) -> dict[str, str]:
    """Tensor name -> TensorRT DataType name, from graph I/O, inferred value_info and initializers."""
    graph = model.graph
    types = {i.name: ONNX_TO_TRT.get(i.data_type, f"ONNX{i.data_type}") for i in graph.initializer}
    for info in (*graph.input, *graph.value_info, *graph.output):
        elem = info.type.tensor_type.elem_type
        types[info.name] = ONNX_TO_TRT.get(elem, f"ONNX{elem}")
    return types


def _type_error(node: Any, index: int, types: dict[str, str]) -> Error | None:
    """A strongly typed network refuses an operator whose floating data inputs disagree in type."""
    if node.op_type not in SAME_TYPE_INPUTS:
        return None
    positions = SAME_TYPE_INPUTS[node.op_type] or range(len(node.input))
    names = [node.input[i] for i in positions if i < len(node.input) and node.input[i]]
    floats = {types.get(n) for n in names} & FLOATS
    if len(floats) <= 1:
        return None
    desc = (f"Type inference of a strongly typed network failed: {node.op_type} inputs {names} have types "
            f"{sorted(floats)}; insert a Cast")  # fmt: skip
    return ("INVALID_NODE", desc, index, node.name, node.op_type)


def import_graph(api: Any, network: Any, path: Path) -> list[Error]:
    """Populate ``network`` from the ONNX file at ``path``; the errors TensorRT's parser would report."""
    model, errors = _load(path)
    if model is None:
        return errors
    types, graph = _types(model), model.graph
    tensors: dict[str, Any] = {}
    initializers = {i.name for i in graph.initializer}
    for info in (i for i in graph.input if i.name not in initializers):
        if types[info.name] not in api.DataType.__members__:
            return [("UNSUPPORTED_GRAPH", f"Unsupported ONNX data type {types[info.name]} of input {info.name}",
                     -1, "", "")]  # fmt: skip
        tensors[info.name] = network.add_input(info.name, getattr(api.DataType, types[info.name]), _shape(info))
    strongly_typed = network._strongly_typed
    for index, node in enumerate(graph.node):
        if node.op_type not in OP_LAYERS:
            return [("UNSUPPORTED_NODE", f"No importer registered for op: {node.op_type}", index, node.name,
                     node.op_type)]  # fmt: skip
        problem = _type_error(node, index, types) if strongly_typed else None
        if problem:
            return [problem]
        outputs = [api.ITensor(name, getattr(api.DataType, types.get(name, "FLOAT")), []) for name in node.output]
        tensors.update({t.name: t for t in outputs})
        inputs = [tensors[n] for n in node.input if n in tensors]
        layer_type = getattr(api.LayerType, OP_LAYERS[node.op_type])
        network._add_layer(api.ILayer(node.name or f"node_{index}", layer_type, inputs, outputs))
    for info in graph.output:
        tensors[info.name].shape = api.Dims(_shape(info))
        network.mark_output(tensors[info.name])
    return []
