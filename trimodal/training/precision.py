"""The precision build step: fp16 and int8 graphs of the four ONNX models, and the accuracy of every precision.

Writes ``build/onnx/<model>.fp16.onnx``, ``<model>.int8.onnx`` and ``<model>.int8-cpu.onnx``
(:mod:`trimodal.training.compress`), then measures in process with ONNX Runtime, on the test split, the accuracy
of every modality subset for the whole pipeline at each precision and at the precisions each target serves
(pipeline.yaml's ``precision``). The table goes to ``build/precision.json`` and ``build/precision.md`` (copied
into ``benchmarks/precision/``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trimodal import contract
from trimodal.layout import BuildLayout
from trimodal.runtime.sessions import trim_padding
from trimodal.spec import PRECISIONS, TARGETS, PipelineSpec
from trimodal.training.features import FEATURE_TENSORS, LABELS, MASK_TENSORS, Arrays, EncodedSplit

LOGGER = logging.getLogger(__name__)

PRECISION_JSON = "precision.json"
PRECISION_MD = "precision.md"
CALIBRATION_SAMPLES = 256
BATCH = 32
FUSION_DROPOUT = 0.35
"""Share of modalities made absent in the fusion head's calibration batches (as in its training)."""

TENSORRT_FORM = "int8"
"""The precision whose graphs are TensorRT's form: outside the CPU target's column they are measured with ONNX's Q/DQ
semantics (graph optimizations off), as TensorRT computes them. ONNX Runtime's fused CPU kernels for them sum
u8 x s8 pairs in 16 bits on x86 without VNNI and saturate with their 8-bit weights (how far, on the build machine:
benchmarks/precision/int8_kernels.md), which says nothing about the graph TensorRT builds."""

Feeds = dict[str, np.ndarray]
InferFn = Callable[[str, Feeds], Feeds]


def _inputs(spec: PipelineSpec, model: str) -> list[str]:
    return [tensor.name for tensor in contract.model_io(spec)[model].inputs]


def encode(spec: PipelineSpec, infer: InferFn, arrays: Mapping[str, np.ndarray]) -> Feeds:
    """The three encoders' features (and the masks) of preprocessed samples, in batches of :data:`BATCH`.

    Args:
        spec: the pipeline spec.
        infer: ``infer(model, feeds) -> outputs`` (e.g. :func:`trimodal.runtime.pipeline.ort_infer`).
        arrays: preprocessor outputs by contract name.

    Returns:
        ``IMAGE_FEATURES``, ``TEXT_FEATURES``, ``AUDIO_FEATURES`` and the three masks.
    """
    count = len(arrays[contract.IMAGE_MASK])
    result: Feeds = {mask: np.asarray(arrays[mask]) for mask in contract.MASKS}
    for model in contract.ENCODERS[:-1]:
        names = _inputs(spec, model)
        parts = [infer(model, {n: arrays[n][i : i + BATCH] for n in names}) for i in range(0, count, BATCH)]
        for name in parts[0]:
            result[name] = np.concatenate([part[name] for part in parts])
    return result


def calibration_feeds(spec: PipelineSpec, train: Arrays, infer: InferFn, absent: Feeds) -> dict[str, list[Feeds]]:
    """Calibration batches of every model, from :data:`CALIBRATION_SAMPLES` training-split samples.

    The encoders get the preprocessed samples; the fusion head gets their fp32 features with modalities made
    absent at random (absent features, mask 0) as in its training, at least one present per sample.

    Args:
        spec: the pipeline spec.
        train: the training split's preprocessor outputs.
        infer: the fp32 graphs (the fusion head's calibration features).
        absent: the fp32 encoders' features of an absent element (one row per features name).

    Returns:
        ``{model: [feeds, ...]}`` for the four models.
    """
    rng = np.random.default_rng(spec.seed)
    chosen = rng.permutation(len(train[contract.IMAGE_MASK]))[:CALIBRATION_SAMPLES]
    sample = {name: train[name][chosen] for name in train}
    starts = range(0, len(chosen), BATCH)
    feeds = {
        model: [trim_padding({n: sample[n][i : i + BATCH] for n in _inputs(spec, model)}) for i in starts]
        for model in contract.ENCODERS[:-1]
    }
    encoded = encode(spec, infer, sample)
    drop = rng.random((len(chosen), 3)) < FUSION_DROPOUT
    drop[drop.all(axis=1), rng.integers(0, 3)] = False
    for column, modality in enumerate(contract.MODALITIES):
        gone = drop[:, column]
        encoded[FEATURE_TENSORS[modality]][gone] = absent[FEATURE_TENSORS[modality]][0]
        encoded[MASK_TENSORS[modality]][gone] = 0.0
    feeds[contract.FUSION] = [{n: encoded[n][i : i + BATCH] for n in _inputs(spec, contract.FUSION)} for i in starts]
    return feeds


class _Graphs:
    """Every model's graph at every precision, each run once on the test split and on an absent element."""

    def __init__(self, spec: PipelineSpec, build: BuildLayout, test: Arrays, empty: Feeds) -> None:
        from trimodal.runtime.pipeline import ort_infer

        self.spec, self.test, self.empty = spec, test, empty
        self.infer = {
            (p, fused): ort_infer(lambda model, p=p: build.onnx_file(model, p), fused=fused)
            for p in PRECISIONS
            for fused in (True, False)
        }
        self._encoded: dict[tuple[str, bool], tuple[Feeds, Feeds]] = {}

    @staticmethod
    def fused(precision: str, target: str | None) -> bool:
        """Whether ``precision`` runs with ONNX Runtime's fused kernels in a column of ``target``.

        Only the CPU target serves through them; TensorRT's form is measured as TensorRT computes it elsewhere.

        Args:
            precision: the graph's precision.
            target: ``cpu``, ``gpu``, or None for a column with every model at one precision.

        Returns:
            False for TensorRT's form outside the CPU target's column, else True.
        """
        return precision != TENSORRT_FORM or target == "cpu"

    def encoded(self, precision: str, fused: bool) -> tuple[Feeds, Feeds]:
        """``(test features and masks, absent features)`` of the three encoders at ``precision``."""
        key = (precision, fused)
        if key not in self._encoded:
            infer = self.infer[key]
            self._encoded[key] = (encode(self.spec, infer, self.test), encode(self.spec, infer, self.empty))
        return self._encoded[key]

    def split(self, choice: Mapping[str, str], target: str | None) -> EncodedSplit:
        """The test split as the fusion head sees it when each encoder runs at ``choice[model]``."""
        tensors: Feeds = {mask: self.test[mask] for mask in contract.MASKS}
        absent: Feeds = {}
        for model, modality in zip(contract.ENCODERS[:-1], contract.MODALITIES, strict=True):
            test, empty = self.encoded(choice[model], self.fused(choice[model], target))
            name = FEATURE_TENSORS[modality]
            tensors[name], absent[name] = test[name], empty[name]
        return EncodedSplit(tensors=tensors, labels=self.test[LABELS], absent=absent)

    def accuracy(self, choice: Mapping[str, str], target: str | None) -> dict[str, float]:
        """Test accuracy of every modality subset with each model at ``choice[model]``, as ``target`` runs it."""
        from trimodal.training.evaluate import modality_subsets, subset_inputs, subset_name

        split = self.split(choice, target)
        names = [FEATURE_TENSORS[m] for m in contract.MODALITIES] + [MASK_TENSORS[m] for m in contract.MODALITIES]
        fusion = choice[contract.FUSION]
        infer = self.infer[fusion, self.fused(fusion, target)]
        result = {}
        for subset in modality_subsets():
            feeds = dict(zip(names, subset_inputs(split, subset), strict=True))
            probabilities = infer(contract.FUSION, feeds)[contract.FUSED_PROBABILITIES]
            result[subset_name(subset)] = float(np.mean(np.argmax(probabilities, axis=1) == split.labels))
        return result


def columns(spec: PipelineSpec) -> dict[str, tuple[dict[str, str], str | None]]:
    """The measured configurations: every model at one precision (target None), then what each target serves."""
    uniform = {precision: (dict.fromkeys(contract.ENCODERS, precision), None) for precision in PRECISIONS}
    served = {f"served-{t}": ({m: spec.precision.of(m, t) for m in contract.ENCODERS}, t) for t in TARGETS}
    return {**uniform, **served}


def make_graphs(spec: PipelineSpec, build: BuildLayout, train: Arrays, absent: Feeds) -> None:
    """Write the fp16, int8 and int8-cpu graphs of the four models next to ``build/onnx/<model>.onnx``.

    Args:
        spec: the pipeline spec.
        build: the build folder.
        train: the training split's preprocessor outputs (int8 calibration).
        absent: the fp32 encoders' features of an absent element.
    """
    from trimodal.runtime.pipeline import ort_infer
    from trimodal.training.compress import convert_fp16, quantize_int8, quantize_int8_cpu

    calibration = calibration_feeds(spec, train, ort_infer(build.onnx_file), absent)
    for model in contract.ENCODERS:
        source = build.onnx_file(model)
        convert_fp16(source, build.onnx_file(model, "fp16"))
        quantize_int8(source, build.onnx_file(model, "int8"), calibration[model])
        quantize_int8_cpu(source, build.onnx_file(model, "int8-cpu"), calibration[model])
        LOGGER.info("%s: fp16, int8 and int8-cpu graphs written", model)


def precision_markdown(report: Mapping[str, Any]) -> str:
    """The accuracy table of ``build/precision.json`` as Markdown (subsets as rows, configurations as columns)."""
    accuracy = report["accuracy"]
    names = list(accuracy)
    lines = [
        "# Test accuracy per precision (ONNX Runtime, in process)",
        "",
        f"{report['test_samples']} test samples; int8 calibrated on {report['calibration_samples']} training samples.",
        f"{TENSORRT_FORM} runs as ONNX defines Q/DQ (graph optimizations off), as TensorRT computes it, outside the "
        "served-cpu column; everything else as ONNX Runtime's CPU kernels serve it.",
        "Served: "
        + "; ".join(f"{t}: " + ", ".join(f"{m} {p}" for m, p in report["served"][t].items()) for t in TARGETS),
        "",
        "| subset | " + " | ".join(names) + " |",
        "|---|" + "---|" * len(names),
    ]
    for subset in accuracy["fp32"]:
        lines.append(f"| {subset} | " + " | ".join(f"{100 * accuracy[n][subset]:.1f}%" for n in names) + " |")
    return "\n".join(lines) + "\n"


def build_precision(spec: PipelineSpec, build_dir: Path) -> dict[str, Any]:
    """The precision build step: graphs, then the accuracy table (``build/precision.json`` and ``.md``).

    Args:
        spec: the pipeline spec.
        build_dir: the build folder (features cache and ``onnx/`` from the export step).

    Returns:
        The report written to ``build/precision.json``.
    """
    from trimodal.runtime.pipeline import ort_infer
    from trimodal.training.features import empty_feeds, load_features

    build = BuildLayout(Path(build_dir))
    splits = load_features(spec, build.root, progress=False)
    empty = empty_feeds(spec)
    make_graphs(spec, build, splits["train"], encode(spec, ort_infer(build.onnx_file), empty))
    graphs = _Graphs(spec, build, splits["test"], empty)
    report = {
        "test_samples": len(splits["test"][LABELS]),
        "calibration_samples": CALIBRATION_SAMPLES,
        "served": {t: {m: spec.precision.of(m, t) for m in contract.ENCODERS} for t in TARGETS},
        "accuracy": {name: graphs.accuracy(choice, target) for name, (choice, target) in columns(spec).items()},
    }
    (build.root / PRECISION_JSON).write_text(json.dumps(report, indent=2) + "\n")
    (build.root / PRECISION_MD).write_text(precision_markdown(report))
    return report
