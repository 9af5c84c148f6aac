"""Per-layer precision of a parsed, strongly typed TensorRT network, and the check that it is the one asked for.

In a strongly typed network every tensor's type follows from the graph (fp16 casts, Q/DQ nodes), and TensorRT
must compute each layer in the type of its inputs/outputs. So counting the parsed layers by output type tells
what precision the plan computes in; it is recorded in the plan metadata (``layer_precisions``) and checked
against the precision pipeline.yaml asked for before anything is built.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trimodal.errors import EngineError

LOGGER = logging.getLogger(__name__)

# TensorRT DataType names -> the names used in the metadata (Triton's where one exists).
DTYPE_NAMES: dict[str, str] = {
    "FLOAT": "FP32",
    "HALF": "FP16",
    "BF16": "BF16",
    "INT8": "INT8",
    "UINT8": "UINT8",
    "INT32": "INT32",
    "INT64": "INT64",
    "BOOL": "BOOL",
    "FP8": "FP8",
    "INT4": "INT4",
    "FP4": "FP4",
    "E8M0": "E8M0",
}


def _name(value: object) -> str:
    """An enum member (or its string) -> its bare name: ``DataType.HALF`` -> ``HALF``."""
    return str(getattr(value, "name", value)).rsplit(".", 1)[-1].upper()


@dataclass(frozen=True)
class LayerPrecisions:
    """How many layers of the network compute in each type, and its quantization/cast layers."""

    layers: int
    by_dtype: dict[str, int] = field(default_factory=dict)
    quantize: int = 0
    dequantize: int = 0
    casts: int = 0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"layers": self.layers, "by_dtype": dict(sorted(self.by_dtype.items())), "quantize": self.quantize,
                "dequantize": self.dequantize, "casts": self.casts}  # fmt: skip

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LayerPrecisions:
        """Inverse of :meth:`to_dict`."""
        return cls(
            layers=int(data["layers"]),
            by_dtype={str(k): int(v) for k, v in dict(data["by_dtype"]).items()},
            quantize=int(data.get("quantize", 0)),
            dequantize=int(data.get("dequantize", 0)),
            casts=int(data.get("casts", 0)),
        )

    def count(self, *dtypes: str) -> int:
        """Layers whose output is one of ``dtypes`` (metadata names, e.g. ``"FP16"``)."""
        return sum(self.by_dtype.get(d, 0) for d in dtypes)

    def summary(self) -> str:
        """One line for the log: ``120 layers: FP16 96, FP32 20, INT64 4; 0 Q / 0 DQ, 6 casts``."""
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_dtype.items(), key=lambda kv: -kv[1]))
        return f"{self.layers} layers: {kinds}; {self.quantize} Q / {self.dequantize} DQ, {self.casts} casts"


def summarize_network(network: Any) -> LayerPrecisions:
    """Count the layers of a TensorRT ``INetworkDefinition`` by the type of their first output.

    Uses only ``num_layers``, ``get_layer``, ``ILayer.type``/``num_outputs``/``get_output`` and ``ITensor.dtype``,
    which TensorRT 10 and 11 both have.
    """
    dtypes: Counter[str] = Counter()
    kinds: Counter[str] = Counter()
    for index in range(network.num_layers):
        layer = network.get_layer(index)
        kinds[_name(layer.type)] += 1
        if layer.num_outputs:
            dtype = _name(layer.get_output(0).dtype)
            dtypes[DTYPE_NAMES.get(dtype, dtype)] += 1
    return LayerPrecisions(
        layers=int(network.num_layers), by_dtype=dict(dtypes), quantize=kinds["QUANTIZE"],
        dequantize=kinds["DEQUANTIZE"], casts=kinds["CAST"],
    )  # fmt: skip


def check_graph_precision(layers: LayerPrecisions, precision: str, graph: Path, model: str) -> None:
    """Refuse a graph whose layer types do not match the precision it is built for.

    fp32: no half-precision and no Q/DQ layer; fp16: at least one FP16 layer; int8: Q and DQ layers.

    Raises:
        EngineError: naming the graph, what it contains and what was expected.
    """
    half = layers.count("FP16", "BF16")
    if precision == "fp32" and (half or layers.quantize):
        problem = f"has {half} half-precision and {layers.quantize} quantize layers, so it is not an fp32 graph"
    elif precision == "fp16" and not half:
        problem = "has no FP16 layer, so it is not an fp16 graph (fp16 casts in the graph are expected)"
    elif precision == "int8" and not (layers.quantize and layers.dequantize):
        problem = "has no Q/DQ layer pair, so it is not an int8 graph (QuantizeLinear/DequantizeLinear expected)"
    else:
        return
    raise EngineError(f"{model}: {graph} {problem} ({layers.summary()}); regenerate it with `trimodal build`")
