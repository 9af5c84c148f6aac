"""Do ONNX Runtime's fused integer kernels compute what each int8 graph defines, on this CPU? (short, in process).

For every encoder's int8 graphs (``int8``: TensorRT's form, symmetric int8 activations, 8-bit weights;
``int8-cpu``: uint8 activations, 7-bit weights), the same 256 test-split inputs run twice with one thread: fused
(ONNX Runtime's graph optimizations on, as the CPU target serves) and as written (optimizations off: each Q/DQ pair
runs as ONNX defines it, DequantizeLinear -> float op -> QuantizeLinear, which is what TensorRT computes). The
relative L2 difference of the outputs is recorded. On x86 CPUs without VNNI the fused u8 x s8 kernels sum pairs of
products in 16 bits, which 8-bit weights can overflow and 7-bit weights cannot.
Usage: .venv/bin/python benchmarks/precision/int8_kernels.py  (writes int8_kernels.json/.md next to it).
"""

from __future__ import annotations

import json
import platform
from pathlib import Path

from trimodal import contract
from trimodal.layout import Layout
from trimodal.machine import cpu_model, fingerprint
from trimodal.runtime.sessions import fused_vs_defined
from trimodal.spec import load_spec
from trimodal.training.features import load_features

HERE = Path(__file__).resolve().parent
SAMPLES = 256
PRECISIONS = ("int8", "int8-cpu")


def main() -> None:
    layout, spec = Layout.default(), load_spec()
    test = load_features(spec, layout.build.root, progress=False)["test"]
    ios = contract.model_io(spec)
    models = [model for model in contract.ENCODERS if model != contract.FUSION]
    differences = {}
    for model in models:
        feeds = {tensor.name: test[tensor.name][:SAMPLES] for tensor in ios[model].inputs}
        graph = layout.repository.onnx_file
        differences[model] = {p: round(fused_vs_defined(graph(model, p), feeds), 4) for p in PRECISIONS}
    result = {
        "samples": SAMPLES,
        "threads": 1,
        "machine": f"{platform.machine()}, {cpu_model()}",
        "fingerprint": fingerprint(),
        "relative_difference_fused_vs_defined": differences,
    }
    (HERE / "int8_kernels.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Fused integer kernels vs the int8 graphs' definition (ONNX Runtime CPU, 1 thread)",
        "",
        f"Relative L2 difference of each encoder's output over {SAMPLES} test-split inputs, graph optimizations on "
        f"vs off, measured by benchmarks/precision/int8_kernels.py on {result['machine']} "
        f"({', '.join(result['fingerprint']['isa'])}).",
        "",
        "| model | " + " | ".join(PRECISIONS) + " |",
        "|---|" + "---|" * len(PRECISIONS),
        *(f"| {m} | " + " | ".join(f"{100 * d[p]:.1f}%" for p in PRECISIONS) + " |" for m, d in differences.items()),
    ]
    (HERE / "int8_kernels.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
