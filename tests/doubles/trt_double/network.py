"""Networks of the double: ITensor, ILayer, INetworkDefinition, and an OnnxParser that really reads the graph.

Written from python/src/infer/pyGraph.cpp and python/src/parsers/pyOnnx.cpp (names and arguments) and
NvInfer.h / NvOnnxParser.h (semantics). The parser loads the ONNX file with the ``onnx`` package, runs ONNX
shape inference and creates one layer per node with the output types inference gives, as a strongly typed
TensorRT network does (types follow from the graph). It refuses what TensorRT's parser refuses for the
reasons a rehearsal can see: a missing/invalid file, an op without an importer (the table below is a subset
of onnx-tensorrt's operators.md) and, in a strongly typed network, an operator whose floating inputs disagree
in type (TensorRT's type inference would reject it). One node is one layer here; TensorRT's parser may add or
fold layers, so the layer counts of the double are close to, not equal to, a real network's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .core import common_enter, common_exit, expect

# ONNX TensorProto elem types -> TensorRT DataType member names.
ONNX_TO_TRT = {1: "FLOAT", 10: "HALF", 16: "BF16", 3: "INT8", 2: "UINT8", 6: "INT32", 7: "INT64", 9: "BOOL",
               17: "FP8", 22: "INT4", 23: "FP4"}  # fmt: skip

# ONNX op -> TensorRT LayerType member name (ops onnx-tensorrt imports; a few become several layers there).
OP_LAYERS = {
    "Conv": "CONVOLUTION", "ConvTranspose": "DECONVOLUTION", "MatMul": "MATRIX_MULTIPLY", "Gemm": "MATRIX_MULTIPLY",
    "Relu": "ACTIVATION", "Sigmoid": "ACTIVATION", "Tanh": "ACTIVATION", "LeakyRelu": "ACTIVATION",
    "Clip": "ACTIVATION", "Elu": "ACTIVATION", "Softplus": "ACTIVATION", "Gelu": "UNARY", "Erf": "UNARY",
    "MaxPool": "POOLING", "AveragePool": "POOLING", "GlobalAveragePool": "REDUCE", "GlobalMaxPool": "REDUCE",
    "Add": "ELEMENTWISE", "Sub": "ELEMENTWISE", "Mul": "ELEMENTWISE", "Div": "ELEMENTWISE", "Pow": "ELEMENTWISE",
    "Max": "ELEMENTWISE", "Min": "ELEMENTWISE", "Sum": "ELEMENTWISE", "Equal": "ELEMENTWISE",
    "Greater": "ELEMENTWISE", "GreaterOrEqual": "ELEMENTWISE", "Less": "ELEMENTWISE", "LessOrEqual": "ELEMENTWISE",
    "And": "ELEMENTWISE", "Or": "ELEMENTWISE", "Where": "SELECT", "Not": "UNARY", "Sqrt": "UNARY", "Exp": "UNARY",
    "Log": "UNARY", "Neg": "UNARY", "Abs": "UNARY", "Reciprocal": "UNARY", "Cast": "CAST",
    "QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE", "Shape": "SHAPE", "Constant": "CONSTANT",
    "ConstantOfShape": "FILL", "Range": "FILL", "Gather": "GATHER", "GatherElements": "GATHER",
    "GatherND": "GATHER", "Reshape": "SHUFFLE", "Transpose": "SHUFFLE", "Flatten": "SHUFFLE",
    "Unsqueeze": "UNSQUEEZE", "Squeeze": "SQUEEZE", "Expand": "SLICE", "Slice": "SLICE", "Split": "SLICE",
    "Concat": "CONCATENATION", "Softmax": "SOFTMAX", "ReduceSum": "REDUCE", "ReduceMean": "REDUCE",
    "ReduceMax": "REDUCE", "ReduceMin": "REDUCE", "ReduceProd": "REDUCE", "ReduceL2": "REDUCE",
    "LayerNormalization": "NORMALIZATION", "BatchNormalization": "SCALE", "InstanceNormalization": "NORMALIZATION",
    "Identity": "IDENTITY", "Einsum": "EINSUM", "TopK": "TOPK", "ArgMax": "TOPK", "Resize": "RESIZE", "Pad": "PADDING",
}  # fmt: skip

# Ops whose floating-point data inputs must have one type in a strongly typed network (index list or all).
SAME_TYPE_INPUTS: dict[str, tuple[int, ...] | None] = {
    "Add": None, "Sub": None, "Mul": None, "Div": None, "Max": None, "Min": None, "Sum": None, "MatMul": None,
    "Gemm": None, "Conv": (0, 1, 2), "Concat": None, "Where": (1, 2), "LayerNormalization": (0, 1, 2),
    "Equal": None, "Greater": None, "GreaterOrEqual": None, "Less": None, "LessOrEqual": None,
}  # fmt: skip
FLOATS = {"FLOAT", "HALF", "BF16", "FP8"}


class ITensor:
    """A network tensor: ``name``, ``shape`` (Dims), ``dtype``, whether it is a network input/output."""

    def __init__(self, name: str, dtype: Any, shape: Any) -> None:
        self.name, self._dtype, self.shape = name, dtype, self._api.Dims(shape)
        self.location = self._api.TensorLocation.DEVICE
        self.allowed_formats = 1
        self.broadcast_across_batch = False
        self._input = self._output = False

    @property
    def dtype(self) -> Any:
        return self._dtype

    @dtype.setter
    def dtype(self, value: Any) -> None:  # TensorRT 10 only: 11 publishes dtype read-only
        self._dtype = value

    @property
    def is_network_input(self) -> bool:
        return self._input

    @property
    def is_network_output(self) -> bool:
        return self._output

    @property
    def is_shape_tensor(self) -> bool:
        return False

    @property
    def is_execution_tensor(self) -> bool:
        return True

    def get_dimension_name(self, index: int) -> str | None:
        return None


class ILayer:
    """A network layer: ``name``, ``type`` (LayerType), inputs and outputs; ``precision`` only on TensorRT 10."""

    def __init__(self, name: str, layer_type: Any, inputs: list[Any], outputs: list[Any]) -> None:
        self.name, self._type, self._inputs, self._outputs = name, layer_type, inputs, outputs
        self.metadata = ""
        self.num_ranks = 1
        self._precision: Any = None

    @property
    def type(self) -> Any:
        return self._type

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    def get_input(self, index: int) -> Any:
        return self._inputs[index] if 0 <= index < len(self._inputs) else None

    def get_output(self, index: int) -> Any:
        return self._outputs[index] if 0 <= index < len(self._outputs) else None

    def get_output_type(self, index: int) -> Any:
        return self._outputs[index].dtype

    def set_input(self, index: int, tensor: Any) -> None:
        self._inputs[index] = tensor

    @property
    def precision(self) -> Any:  # TensorRT 10 only (deprecated in 10.12, removed in 11)
        return self._precision if self._precision is not None else self._api.DataType.FLOAT

    @precision.setter
    def precision(self, value: Any) -> None:
        self._precision = value

    @property
    def precision_is_set(self) -> bool:  # TensorRT 10 only
        return self._precision is not None


class INetworkDefinition:
    """A network built by the parser; iterable over its layers (``__len__``/``__getitem__``)."""

    def __init__(self, builder: Any, flags: int) -> None:
        self._builder, self._flags = builder, int(flags)
        self._inputs: list[Any] = []
        self._outputs: list[Any] = []
        self._layers: list[Any] = []
        self.name = "Unnamed Network 0"
        self.error_recorder = None

    @property
    def builder(self) -> Any:
        return self._builder

    @property
    def flags(self) -> int:
        return self._flags

    @property
    def has_implicit_batch_dimension(self) -> bool:
        return False

    @property
    def num_inputs(self) -> int:
        return len(self._inputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    @property
    def num_layers(self) -> int:
        return len(self._layers)

    def get_flag(self, flag: Any) -> bool:
        expect(flag, self._api.NetworkDefinitionCreationFlag, "get_flag")
        return bool(self._flags & (1 << int(flag)))

    def get_input(self, index: int) -> Any:
        return self._inputs[index] if 0 <= index < len(self._inputs) else None

    def get_output(self, index: int) -> Any:
        return self._outputs[index] if 0 <= index < len(self._outputs) else None

    def get_layer(self, index: int) -> Any:
        return self._layers[index] if 0 <= index < len(self._layers) else None

    def __len__(self) -> int:
        return len(self._layers)

    def __getitem__(self, index: int) -> Any:
        if not 0 <= index < len(self._layers):
            raise IndexError(index)
        return self._layers[index]

    def add_input(self, name: str, dtype: Any, shape: Any) -> Any:
        tensor = self._api.ITensor(name, dtype, shape)
        tensor._input = True
        self._inputs.append(tensor)
        return tensor

    def mark_output(self, tensor: Any) -> None:
        expect(tensor, self._api.ITensor, "mark_output")
        tensor._output = True
        self._outputs.append(tensor)

    def unmark_output(self, tensor: Any) -> None:
        tensor._output = False
        self._outputs.remove(tensor)

    def _add_layer(self, layer: Any) -> None:
        self._layers.append(layer)

    @property
    def _strongly_typed(self) -> bool:
        return self._api._STRONGLY_TYPED_ALWAYS or self.get_flag(self._api.NetworkDefinitionCreationFlag.STRONGLY_TYPED)

    __enter__ = common_enter
    __exit__ = common_exit


class ParserError:
    """One error of the ONNX parser (``desc()``, ``code()``, ``node()``...); ``str()`` gives the description."""

    def __init__(self, code: Any, desc: str, node: int = -1, node_name: str = "", node_operator: str = "") -> None:
        self._code, self._desc, self._node, self._name, self._op = code, desc, node, node_name, node_operator

    def code(self) -> Any:
        return self._code

    def desc(self) -> str:
        return self._desc

    def node(self) -> int:
        return self._node

    def node_name(self) -> str:
        return self._name

    def node_operator(self) -> str:
        return self._op

    def __str__(self) -> str:
        where = f"In node {self._node} with name: {self._name} and operator: {self._op} " if self._node >= 0 else ""
        return f"{where}{self._desc}"


class OnnxParser:
    """``tensorrt.OnnxParser(network, logger)``: populates the network from an ONNX file."""

    def __init__(self, network: Any, logger: Any) -> None:
        expect(network, self._api.INetworkDefinition, "OnnxParser")
        expect(logger, self._api.ILogger, "OnnxParser")
        self._network, self._logger, self._errors = network, logger, []
        self.flags = 1 << int(self._api.OnnxParserFlag.NATIVE_INSTANCENORM)

    @property
    def num_errors(self) -> int:
        return len(self._errors)

    def get_error(self, index: int) -> Any:
        return self._errors[index] if 0 <= index < len(self._errors) else None

    def clear_errors(self) -> None:
        self._errors.clear()

    def set_flag(self, flag: Any) -> None:
        self.flags |= 1 << int(flag)

    def clear_flag(self, flag: Any) -> None:
        self.flags &= ~(1 << int(flag))

    def get_flag(self, flag: Any) -> bool:
        return bool(self.flags & (1 << int(flag)))

    def parse_from_file(self, model: str) -> bool:
        from .onnx_import import import_graph

        errors = import_graph(self._api, self._network, Path(model))
        for code, desc, node, name, op in errors:
            self._errors.append(self._api.ParserError(getattr(self._api.ErrorCode, code), desc, node, name, op))
            self._logger.log(self._api.ILogger.Severity.ERROR, str(self._errors[-1]))
        return not errors

    def parse(self, model: bytes, path: str | None = None) -> bool:
        import tempfile

        with tempfile.NamedTemporaryFile(suffix=".onnx") as handle:
            handle.write(bytes(model))
            handle.flush()
            return self.parse_from_file(handle.name)

    __enter__ = common_enter
    __exit__ = common_exit
