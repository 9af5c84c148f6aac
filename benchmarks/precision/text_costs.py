"""Text encoder compute per sample, each CPU step measured side by side in one run (short, in process).

Variants: fp32 padded to max_tokens (the old path), fp32 with the padding cut, fp32 cut + ONNX Runtime's offline
transformer optimizer (onnxruntime.transformers.optimizer, model_type=bert), fp16 cut, int8 (Q/DQ) cut and padded,
int8-cpu (Q/DQ with uint8 activations, ONNX Runtime CPU only) cut and padded.
Real test-split texts, batches of 8 (the served dynamic batches are 4-8), one intra-op thread as served.
Usage: .venv/bin/python benchmarks/precision/text_costs.py  (writes text_encoder_costs.json/.md next to it).
"""

from __future__ import annotations

import json
import platform
import tempfile
import time
from pathlib import Path

from trimodal import contract
from trimodal.layout import Layout
from trimodal.machine import cpu_model, fingerprint
from trimodal.runtime.sessions import ort_session, run_session
from trimodal.spec import load_spec
from trimodal.training.features import load_features

HERE = Path(__file__).resolve().parent
BATCH, ROUNDS, REPEATS = 8, 25, 3


def optimized_graph(source: Path, folder: Path) -> tuple[Path, dict]:
    from onnxruntime.transformers.optimizer import optimize_model

    model = optimize_model(str(source), model_type="bert", num_heads=12, hidden_size=384, opt_level=0)
    target = folder / "text_encoder.opt.onnx"
    model.save_model_to_file(str(target))
    return target, {k: v for k, v in model.get_fused_operator_statistics().items() if v}


def ms_per_sample(session, batches, trim: bool) -> float:
    best = float("inf")
    for _ in range(REPEATS):  # best of REPEATS passes over the same batches: least disturbed by other load
        started = time.perf_counter()
        for feeds in batches:
            run_session(session, feeds, trim=trim)
        best = min(best, time.perf_counter() - started)
    return 1e3 * best / (len(batches) * BATCH)


def main() -> None:
    layout = Layout.default()
    test = load_features(load_spec(), layout.build.root, progress=False)["test"]
    names = (contract.INPUT_IDS, contract.ATTENTION_MASK)
    batches = [{n: test[n][i * BATCH : (i + 1) * BATCH] for n in names} for i in range(ROUNDS)]
    graph = layout.repository.onnx_file
    with tempfile.TemporaryDirectory() as tmp:
        optimized, fused = optimized_graph(graph("text_encoder"), Path(tmp))
        variants = {
            "fp32 padded": (graph("text_encoder"), False),
            "fp32 cut": (graph("text_encoder"), True),
            "fp32 cut + ORT transformer optimizer": (optimized, True),
            "fp16 cut": (graph("text_encoder", "fp16"), True),
            "int8 (Q/DQ, the TensorRT form) cut": (graph("text_encoder", "int8"), True),
            "int8 (Q/DQ) padded": (graph("text_encoder", "int8"), False),
            "int8-cpu cut": (graph("text_encoder", "int8-cpu"), True),
            "int8-cpu padded": (graph("text_encoder", "int8-cpu"), False),
        }
        sessions = {name: ort_session(path, threads=1) for name, (path, _) in variants.items()}
        for name, (_, trim) in variants.items():  # warm-up
            run_session(sessions[name], batches[0], trim=trim)
        costs = {name: ms_per_sample(sessions[name], batches, trim) for name, (_, trim) in variants.items()}
    base = costs["fp32 padded"]
    mean_tokens = float(test[contract.ATTENTION_MASK][: ROUNDS * BATCH].sum(axis=1).mean())
    result = {
        "batch": BATCH,
        "samples": ROUNDS * BATCH,
        "mean_real_tokens": round(mean_tokens, 2),
        "padded_to": int(test[contract.INPUT_IDS].shape[1]),
        "threads": 1,
        "machine": f"{platform.machine()}, {cpu_model()}",
        "fingerprint": fingerprint(),
        "optimizer_fusions": fused,
        "ms_per_sample": {k: round(v, 3) for k, v in costs.items()},
        "speedup_vs_fp32_padded": {k: round(base / v, 2) for k, v in costs.items()},
    }
    (HERE / "text_encoder_costs.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = [
        "# Text encoder compute per sample (ONNX Runtime CPU, 1 thread, batches of 8 real test texts)",
        "",
        f"Mean real tokens {result['mean_real_tokens']} of {result['padded_to']}; measured side by side in one run "
        f"by benchmarks/precision/text_costs.py (best of 3 passes) on {result['machine']} "
        f"({', '.join(result['fingerprint']['isa'])}).",
        "",
        "| variant | ms / sample | speed-up vs fp32 padded |",
        "|---|---|---|",
        *(f"| {k} | {v:.3f} | {result['speedup_vs_fp32_padded'][k]:.2f}x |" for k, v in costs.items()),
        "",
        f"ORT transformer optimizer fusions found: {fused or 'none'}",
    ]
    (HERE / "text_encoder_costs.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
