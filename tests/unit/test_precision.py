"""Precision graphs (fp16 / int8), their accuracy gates, the per-target precision in pipeline.yaml, and the exact
text-padding cut of the CPU text encoder.

Tests that read built graphs or build/precision.json skip without a build (``make test`` builds first).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from trimodal import contract
from trimodal.errors import ExportError, SpecError
from trimodal.evidence import artifacts
from trimodal.evidence.gates import rebuild_differences, same_machine
from trimodal.layout import Layout
from trimodal.runtime.sessions import ort_session, run_session, trim_padding
from trimodal.spec import PRECISIONS, load_spec, parse_spec, spec_path
from trimodal.training.precision import PRECISION_JSON, PRECISION_MD

LAYOUT = Layout.default()
REPORT = LAYOUT.build.root / PRECISION_JSON
COMMITTED = LAYOUT.root / "benchmarks" / "precision"
TEXT_GRAPH = LAYOUT.repository.onnx_file("text_encoder")
built = pytest.mark.skipif(not REPORT.is_file(), reason="not built: run `make build` first")
graphs_built = pytest.mark.skipif(
    not all(LAYOUT.repository.onnx_file(m, p).is_file() for m in contract.ENCODERS for p in PRECISIONS),
    reason="precision graphs not installed: run `make build` first",
)
ALL_THREE = "image+text+audio"
MAX_LOSS = {ALL_THREE: 0.005, "image": 0.015, "text": 0.015, "audio": 0.015}


# --- the padding cut --------------------------------------------------------------------------------------


def test_trim_padding_cuts_to_the_longest_real_sequence_and_keeps_one_column() -> None:
    mask = np.array([[1, 1, 0, 0, 0], [1, 1, 1, 0, 0]], dtype=np.int64)
    feeds = {"INPUT_IDS": mask * 7, "ATTENTION_MASK": mask, "TEXT_MASK": np.ones((2, 1), np.float32)}
    cut = trim_padding(feeds)
    assert cut["INPUT_IDS"].shape == (2, 3) and cut["ATTENTION_MASK"].shape == (2, 3)
    assert cut["TEXT_MASK"] is feeds["TEXT_MASK"]
    empty = trim_padding({"INPUT_IDS": mask * 0, "ATTENTION_MASK": mask * 0})
    assert empty["ATTENTION_MASK"].shape == (2, 1)
    image = {"IMAGE_TENSOR": np.zeros((2, 1, 4, 4), np.float32)}
    assert trim_padding(image) is image


@pytest.mark.skipif(not TEXT_GRAPH.is_file(), reason="not built: run `make build` first")
@pytest.mark.parametrize("precision", PRECISIONS)
def test_trimmed_text_encoder_equals_the_padded_run(precision: str) -> None:
    from trimodal.runtime.pipeline import Preprocessor

    spec = load_spec()
    graph = LAYOUT.repository.onnx_file("text_encoder", precision)
    session = ort_session(graph, threads=1)
    tokenize = Preprocessor(spec, LAYOUT.repository.tokenizer).tokenize
    texts = ["seven", "the digit is nine, not four", "", "drei", "zero zero one two three four five six seven"]
    ids, attention, _ = tokenize(texts)
    rng = np.random.default_rng(0)
    batches = [(ids, attention), (ids[2:3], attention[2:3])]  # real texts, and a batch of one absent text
    for _ in range(4):  # random lengths 0..max_tokens, some batches without a full-length sample
        lengths = rng.integers(0, ids.shape[1] + 1, size=6)
        mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
        tokens = np.where(mask == 1, rng.integers(1000, 30000, size=mask.shape), 0)
        tokens[:, 0] = np.where(lengths > 0, 101, 0)
        batches.append((tokens, mask))
    widths = []  # the token columns each run of the graph really got

    class Recording:
        def get_outputs(self):
            return session.get_outputs()

        def run(self, names, feeds):
            widths.append(feeds[contract.INPUT_IDS].shape[1])
            return session.run(names, feeds)

    cut = []
    for tokens, mask in batches:
        feeds = {contract.INPUT_IDS: tokens, contract.ATTENTION_MASK: mask}
        padded = run_session(Recording(), feeds, trim=False)[contract.TEXT_FEATURES]
        trimmed = run_session(Recording(), feeds, trim=True)[contract.TEXT_FEATURES]
        longest = max(1, int(mask.sum(axis=1).max()))  # the masks are prefixes: the longest real sequence
        assert widths[-2:] == [tokens.shape[1], longest]
        cut.append(longest < tokens.shape[1])
        # fp16 sums over a different number of (zero) padded terms round differently: 2e-5 seen, fp16's own noise
        np.testing.assert_allclose(trimmed, padded, atol=1e-4 if precision == "fp16" else 1e-5, rtol=0)
    assert sum(cut) >= 2, "the batches must include some the trimmed run really shortens"


# --- the graphs -------------------------------------------------------------------------------------------


@graphs_built
@pytest.mark.parametrize("model", contract.ENCODERS)
def test_precision_graphs_keep_fp32_io_hold_their_precision_and_run(model: str) -> None:
    from trimodal.training.compress import check_precision_graph
    from trimodal.training.export import random_feeds

    spec = load_spec()
    reference = LAYOUT.repository.onnx_file(model)
    feeds = random_feeds(contract.model_io(spec)[model], 3, rng=np.random.default_rng(1))
    want = run_session(ort_session(reference, 1), feeds)
    for precision in ("fp16", "int8", "int8-cpu"):
        graph = LAYOUT.repository.onnx_file(model, precision)
        check_precision_graph(reference, graph, precision)
        got = run_session(ort_session(graph, 1), feeds)
        assert {k: v.dtype for k, v in got.items()} == {k: v.dtype for k, v in want.items()}
        assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}


@graphs_built
def test_a_graph_of_another_precision_is_refused() -> None:
    from trimodal.training.compress import check_precision_graph

    fp32 = LAYOUT.repository.onnx_file("image_encoder")
    with pytest.raises(ExportError, match="not an fp16 graph"):
        check_precision_graph(fp32, fp32, "fp16")
    with pytest.raises(ExportError, match="not an int8 Q/DQ graph"):
        check_precision_graph(fp32, LAYOUT.repository.onnx_file("image_encoder", "fp16"), "int8")


# --- accuracy per precision -------------------------------------------------------------------------------


@built
def test_every_precision_and_served_mix_keeps_accuracy_within_the_limits() -> None:
    accuracy = json.loads(REPORT.read_text())["accuracy"]
    assert {"fp32", "fp16", "int8", "int8-cpu", "served-cpu", "served-gpu"} <= set(accuracy)
    assert len(accuracy["fp32"]) == 7
    losses = {
        (name, subset): round(accuracy["fp32"][subset] - accuracy[name][subset], 4)
        for name in accuracy
        for subset, limit in MAX_LOSS.items()
        if accuracy["fp32"][subset] - accuracy[name][subset] > limit
    }
    assert losses == {}, f"accuracy lost against fp32 beyond {MAX_LOSS}: {losses}"


@built
def test_report_describes_the_served_precisions_and_is_committed() -> None:
    spec = load_spec()
    report = json.loads(REPORT.read_text())
    for target in ("cpu", "gpu"):
        assert report["served"][target] == {m: spec.precision.of(m, target) for m in contract.ENCODERS}
    committed = json.loads((COMMITTED / PRECISION_JSON).read_text())
    if same_machine(artifacts.load("metrics", LAYOUT), json.loads(artifacts.build_path("metrics", LAYOUT).read_text())):
        assert (COMMITTED / PRECISION_MD).read_text() == (LAYOUT.build.root / PRECISION_MD).read_text()
        assert committed == report
        return
    # Built on another kind of machine (other float kernels): the same columns, each figure within the tolerance.
    assert {k: committed[k] for k in ("served", "test_samples", "calibration_samples")} == {
        k: report[k] for k in ("served", "test_samples", "calibration_samples")
    }
    assert set(committed["accuracy"]) == set(report["accuracy"])
    for column, accuracy in report["accuracy"].items():
        assert rebuild_differences(committed["accuracy"][column], accuracy) == [], column


# --- pipeline.yaml ----------------------------------------------------------------------------------------


def _raw() -> dict:
    import yaml

    return yaml.safe_load(Path(spec_path()).read_text())


def test_precision_is_chosen_per_model_and_target() -> None:
    data = _raw()
    data["precision"] = {"cpu": {"default": "fp32", "models": {"text_encoder": "int8"}}, "gpu": "fp16"}
    spec = parse_spec(data)
    assert spec.precision.of("text_encoder", "cpu") == "int8"
    assert spec.precision.of("image_encoder", "cpu") == "fp32"
    assert spec.precision.of("fusion_classifier", "gpu") == "fp16"
    data["precision"] = "int8"  # the older form: the GPU precision, CPU stays fp32
    legacy = parse_spec(data)
    assert (legacy.precision.of("text_encoder", "gpu"), legacy.precision.of("text_encoder", "cpu")) == ("int8", "fp32")


@pytest.mark.parametrize(
    "precision",
    [
        {"cpu": {"default": "fp32", "models": {"preprocess_text": "int8"}}, "gpu": "fp16"},
        {"cpu": {"default": "bf16"}, "gpu": "fp16"},
        {"cpu": "fp32"},
    ],
)
def test_invalid_precision_names_the_field(precision: dict) -> None:
    data = _raw()
    data["precision"] = precision
    with pytest.raises(SpecError, match="precision"):
        parse_spec(data)


def test_cpu_int8_is_refused_on_the_gpu_and_served_on_the_cpu() -> None:
    data = _raw()
    for gpu in ("int8-cpu", {"default": "fp16", "models": {"text_encoder": "int8-cpu"}}):
        data["precision"] = {"cpu": "fp32", "gpu": gpu}
        with pytest.raises(SpecError, match=r"precision\.gpu: \['int8-cpu'\] is for ONNX Runtime on CPU only"):
            parse_spec(data)
    data["precision"] = {"cpu": {"default": "fp32", "models": {"text_encoder": "int8-cpu"}}, "gpu": "int8"}
    assert parse_spec(data).precision.of("text_encoder", "cpu") == "int8-cpu"


@graphs_built
def test_a_symmetric_int8_graph_is_not_an_int8_cpu_graph_and_back() -> None:
    from trimodal.training.compress import check_precision_graph

    fp32 = LAYOUT.repository.onnx_file("text_encoder")
    with pytest.raises(ExportError, match="not an int8-cpu"):
        check_precision_graph(fp32, LAYOUT.repository.onnx_file("text_encoder", "int8"), "int8-cpu")
    with pytest.raises(ExportError, match="uint8 activations"):
        check_precision_graph(fp32, LAYOUT.repository.onnx_file("text_encoder", "int8-cpu"), "int8")


@graphs_built
def test_the_tensorrt_form_leaves_products_of_two_activations_in_float() -> None:
    import onnx

    from trimodal.training.compress import QUANTIZED_OPS, activation_products

    # two products per attention block: the text encoder's 6 layers (one Softmax each), the fusion head's one block
    expected = {"text_encoder": 12, "fusion_classifier": 2, "image_encoder": 0, "audio_encoder": 0}
    for model in contract.ENCODERS:
        fp32 = onnx.load(str(LAYOUT.repository.onnx_file(model)))
        products = activation_products(fp32)
        assert len(products) == expected[model], (model, products)
        if model == "text_encoder":
            assert len(products) == 2 * sum(node.op_type == "Softmax" for node in fp32.graph.node)
        int8 = onnx.load(str(LAYOUT.repository.onnx_file(model, "int8")))
        producer = {out: node.op_type for node in int8.graph.node for out in node.output}
        nodes = {node.name: node for node in int8.graph.node}
        assert all(producer.get(x) != "DequantizeLinear" for name in products for x in nodes[name].input[:2]), model
        weighted = [n for n in int8.graph.node if n.op_type in QUANTIZED_OPS and n.name not in products]
        assert weighted and all(producer.get(n.input[1]) == "DequantizeLinear" for n in weighted), model


@graphs_built
@pytest.mark.skipif(not LAYOUT.build.features.is_dir(), reason="no features cache: run `make build` first")
@pytest.mark.parametrize("model", contract.ENCODERS[:-1])
def test_int8_cpu_kernels_compute_what_the_graph_defines(model: str) -> None:
    # Fused, ONNX Runtime runs u8 x s8 kernels; without VNNI they sum pairs of products in 16 bits, which 8-bit
    # weights overflow (benchmarks/precision/int8_kernels.md: the int8 column, 8-bit weights, on an AVX2 EPYC).
    # int8-cpu's 7-bit weights cannot; the text encoder's fused attention rounds a few percent apart. On a CPU
    # with VNNI nothing saturates and this passes with 8-bit weights too: it guards the CPUs without.
    from trimodal.runtime.sessions import fused_vs_defined
    from trimodal.training.features import load_features

    spec = load_spec()
    test = load_features(spec, LAYOUT.build.root, progress=False)["test"]
    feeds = {tensor.name: test[tensor.name][:256] for tensor in contract.model_io(spec)[model].inputs}
    assert fused_vs_defined(LAYOUT.repository.onnx_file(model, "int8-cpu"), feeds) <= 0.1, model


def test_cpu_configs_load_the_served_precision_graph() -> None:
    from trimodal.triton.config import cpu_config

    data = _raw()
    data["precision"] = {"cpu": {"default": "fp16", "models": {"text_encoder": "int8"}}, "gpu": "fp16"}
    spec = parse_spec(data)
    ios = contract.model_io(spec)
    files = {m: cpu_config(spec, m, ios[m]).parameters["onnx_file"].string_value for m in contract.ENCODERS}
    assert files == {
        "image_encoder": "model.fp16.onnx",
        "text_encoder": "model.int8.onnx",
        "audio_encoder": "model.fp16.onnx",
        "fusion_classifier": "model.fp16.onnx",
    }
    trims = {m: "trim_padding" in cpu_config(spec, m, ios[m]).parameters for m in contract.ENCODERS}
    assert trims == {"image_encoder": False, "text_encoder": True, "audio_encoder": False, "fusion_classifier": False}
