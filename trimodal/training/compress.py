"""Precision graphs of the four ONNX models: fp16 (fp32 inputs/outputs) and int8 (Q/DQ), made with ONNX Runtime's tools.

* fp16: :func:`onnxruntime.transformers.float16.convert_float_to_float16` with ``keep_io_types`` (Casts at the
  graph's edges, so every config and the ensemble keep their FP32 tensors). It yields graphs that pass ONNX's
  strict shape inference as they are (onnxconverter-common 1.16 did not on these exports), and it keeps ops
  without a half-precision CPU kernel in fp32.
* int8: :func:`onnxruntime.quantization.quantize_static` in QDQ format, symmetric int8 activations and weights
  (per-channel weights), calibrated (min/max) on training-split samples: QuantizeLinear/DequantizeLinear pairs
  around the Conv/MatMul/Gemm that hold a weight, the explicit-quantization form TensorRT builds strongly typed.
  Products of two activations (attention's scores and its weighted sum) stay in float.
* int8-cpu (CPU only): the same ``quantize_static`` and calibration with asymmetric uint8 activations (U8S8) and
  7-bit weights, the Q/DQ form ONNX Runtime's CPU kernels run fastest, without 16-bit saturation on x86 CPUs
  that lack VNNI. TensorRT accepts only zero-point-0 int8, so the spec refuses it on the GPU target.

Every graph is checked here: inputs and outputs equal the fp32 graph's (names, dtypes, dims), the graph holds
layers of its precision, and ONNX Runtime on CPU runs it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trimodal.errors import ExportError

LOGGER = logging.getLogger(__name__)

QUANTIZED_OPS: tuple[str, ...] = ("Conv", "MatMul", "Gemm")
"""The ops given Q/DQ inputs: the compute-heavy ones TensorRT runs in int8."""

Feeds = dict[str, np.ndarray]


def _io_signature(model: Any) -> list[tuple[str, int, list[Any]]]:
    """Names, element types and dims of a graph's inputs then outputs (initializers excluded)."""
    initializers = {init.name for init in model.graph.initializer}
    values = [*(v for v in model.graph.input if v.name not in initializers), *model.graph.output]
    return [
        (
            value.name,
            value.type.tensor_type.elem_type,
            [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim],
        )
        for value in values
    ]


def _uint8_zero_points(model: Any) -> bool:
    """Whether some QuantizeLinear of the graph quantizes to uint8 (its zero point is a uint8 initializer)."""
    from onnx import TensorProto

    uint8 = {init.name for init in model.graph.initializer if init.data_type == TensorProto.UINT8}
    return any(n.op_type == "QuantizeLinear" and len(n.input) > 2 and n.input[2] in uint8 for n in model.graph.node)


def check_precision_graph(reference: Path, graph: Path, precision: str) -> None:
    """Check a precision graph against its fp32 source: same inputs/outputs, layers of its precision.

    Args:
        reference: the fp32 ``.onnx``.
        graph: the fp16 or int8 ``.onnx``.
        precision: ``fp16`` (some tensor computed in float16), ``int8`` (QuantizeLinear and DequantizeLinear) or
            ``int8-cpu`` (Q/DQ with uint8 activations).

    Raises:
        ExportError: naming the graph and what differs.
    """
    import onnx
    from onnx import TensorProto

    model = onnx.load(str(graph))
    if _io_signature(model) != _io_signature(onnx.load(str(reference), load_external_data=False)):
        raise ExportError(f"{graph}: inputs/outputs differ from {reference} (they must stay FP32 and equal)")
    onnx.checker.check_model(model)
    onnx.shape_inference.infer_shapes(model, strict_mode=True)
    ops = {node.op_type for node in model.graph.node}
    if precision == "fp16":
        half = [i for i in model.graph.initializer if i.data_type == TensorProto.FLOAT16]
        if not half:
            raise ExportError(f"{graph}: no float16 weights, so it is not an fp16 graph")
    elif precision == "int8" and not {"QuantizeLinear", "DequantizeLinear"} <= ops:
        raise ExportError(f"{graph}: no QuantizeLinear/DequantizeLinear pair, so it is not an int8 Q/DQ graph")
    elif precision == "int8" and _uint8_zero_points(model):
        raise ExportError(f"{graph}: uint8 activations (the int8-cpu form), which TensorRT cannot build")
    elif precision == "int8-cpu" and not (_uint8_zero_points(model) and {"QuantizeLinear", "DequantizeLinear"} <= ops):
        raise ExportError(f"{graph}: no Q/DQ pair with uint8 activations, so it is not an int8-cpu (U8S8) graph")


def convert_fp16(source: Path, target: Path) -> Path:
    """Write the fp16 graph (fp32 inputs/outputs) of ``source`` to ``target`` and check it.

    Args:
        source: the fp32 ``.onnx``.
        target: where the fp16 graph goes.

    Returns:
        ``target``.

    Raises:
        ExportError: if the converted graph is inconsistent or its inputs/outputs changed.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16
    from onnxruntime.transformers.onnx_model import OnnxModel

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "the model contains values out of fp16 range" for -inf masks, clamped
        model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    # The input Casts are appended after the nodes that read them: ONNX (and TensorRT's parser) want the
    # nodes in topological order.
    wrapped = OnnxModel(model)
    wrapped.topological_sort()
    model = wrapped.model
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(target))
    check_precision_graph(source, target, "fp16")
    return target


class _FeedReader:
    """ONNX Runtime's ``CalibrationDataReader`` protocol over a list of feeds."""

    def __init__(self, feeds: Sequence[Feeds]) -> None:
        self._feeds: Iterator[Feeds] = iter(feeds)

    def get_next(self) -> Feeds | None:
        """The next calibration batch, or None when done."""
        return next(self._feeds, None)


def activation_products(model: Any) -> list[str]:
    """Names of the quantizable nodes (:data:`QUANTIZED_OPS`) whose first two inputs are both activations.

    Attention's ``Q @ K^T`` and ``softmax @ V`` are such products: int8 on both sides costs the most accuracy for
    the least work. An input counts as a weight when it is an initializer, a ``Constant`` or computed from those
    alone (a transposed or reshaped weight), so only products of two runtime tensors are named.

    Args:
        model: an ``onnx.ModelProto`` (nodes in topological order, as ONNX requires).

    Returns:
        The node names, in graph order.

    Raises:
        ExportError: if such a node has no name (``quantize_static`` excludes nodes by name).
    """
    constants = {init.name for init in model.graph.initializer}
    for node in model.graph.node:  # constant-ness flows through nodes whose every input is constant
        if all(name in constants for name in node.input if name):
            constants.update(node.output)
    products = [n for n in model.graph.node if n.op_type in QUANTIZED_OPS and not set(n.input[:2]) & constants]
    unnamed = [n.op_type for n in products if not n.name]
    if unnamed:
        raise ExportError(f"{len(unnamed)} unnamed {unnamed[0]} node(s) multiply two activations: name every node")
    return [n.name for n in products]


def _quantize_qdq(source: Path, target: Path, calibration: Sequence[Feeds], unsigned: bool) -> None:
    """ONNX Runtime's ``quantize_static`` in QDQ form, symmetric per-channel int8 weights, MinMax calibration.

    Activations are symmetric int8 (``unsigned=False``, the TensorRT form: 8-bit weights, products of two
    activations left in float) or asymmetric uint8 with 7-bit weights (``unsigned=True``, :func:`quantize_int8_cpu`).
    """
    import onnx
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    if not calibration:
        raise ExportError(f"{source}: int8 calibration needs at least one batch")
    target.parent.mkdir(parents=True, exist_ok=True)
    options: dict[str, Any] = {"WeightSymmetric": True, "QDQOpTypePerChannelSupportToAxis": {"MatMul": 1}}
    if not unsigned:
        options["ActivationSymmetric"] = True
    quantize_static(
        str(source),
        str(target),
        _FeedReader(calibration),
        quant_format=QuantFormat.QDQ,
        activation_type=QuantType.QUInt8 if unsigned else QuantType.QInt8,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=list(QUANTIZED_OPS),
        per_channel=True,
        reduce_range=unsigned,
        nodes_to_exclude=[] if unsigned else activation_products(onnx.load(str(source), load_external_data=False)),
        calibrate_method=CalibrationMethod.MinMax,
        extra_options=options,
    )


def quantize_int8(source: Path, target: Path, calibration: Sequence[Feeds]) -> Path:
    """Write the int8 Q/DQ graph of ``source`` to ``target`` (symmetric, calibrated on ``calibration``) and check it.

    Args:
        source: the fp32 ``.onnx``.
        target: where the int8 graph goes.
        calibration: input batches (``{input name: array}``) drawn from the training split.

    Returns:
        ``target``.

    Raises:
        ExportError: without calibration data, or if the graph is not a valid Q/DQ graph.
    """
    _quantize_qdq(source, target, calibration, unsigned=False)
    check_precision_graph(source, target, "int8")
    return target


def quantize_int8_cpu(source: Path, target: Path, calibration: Sequence[Feeds]) -> Path:
    """Write the int8 Q/DQ graph ONNX Runtime's CPU kernels run fastest (U8S8) to ``target`` and check it.

    The same calibration as :func:`quantize_int8`, with asymmetric uint8 activations (a zero point) and symmetric
    int8 per-channel weights: ONNX Runtime fuses these Q/DQ pairs into integer kernels (u8 x s8 dot products, VNNI
    where the CPU has it), where it runs the symmetric int8 x int8 form slower than fp32. TensorRT accepts only
    zero-point-0 int8, so this graph is for the CPU target. Scales are static: a sample's output does not depend
    on the other samples of its batch (dynamic quantization's per-batch scales would), and cutting padding stays
    exact. Weights use 7 bits (``reduce_range``): without VNNI (AVX2, AVX-512 before Cascade Lake) the kernels sum
    pairs of u8 x s8 products in 16 bits, which 2 x 255 x 127 overflows and 2 x 255 x 64 does not, so the fused
    kernels compute what the graph defines on every x86 CPU (benchmarks/precision/int8_kernels.md measures both int8
    forms on the build machine).

    Args:
        source: the fp32 ``.onnx``.
        target: where the graph goes.
        calibration: input batches drawn from the training split.

    Returns:
        ``target``.

    Raises:
        ExportError: without calibration data, or if the graph is not a valid uint8-activation Q/DQ graph.
    """
    _quantize_qdq(source, target, calibration, unsigned=True)
    check_precision_graph(source, target, "int8-cpu")
    return target
