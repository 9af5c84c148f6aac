"""Accuracy of the built engines: TensorRT vs ONNX Runtime on the same preprocessed test samples.

:func:`verify_accuracy` runs the built plans (TensorRT, GPU, through Polygraphy) and the ONNX graphs (ONNX
Runtime) through :func:`trimodal.runtime.pipeline.run_models` on a sample of the test split, and reports
top-1 agreement and the largest probability difference (:class:`AccuracyReport`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trimodal.contract import ENCODERS, FUSED_PROBABILITIES, FUSION
from trimodal.errors import EngineError
from trimodal.runtime.pipeline import Feeds, InferFn, ort_infer, run_models
from trimodal.spec import PipelineSpec
from trimodal.tensorrt.metadata import read_metadata
from trimodal.tensorrt.plans import REBUILD_COMMAND, plan_path_for
from trimodal.tensorrt.runtime import RuntimeInfo, detect_runtime, import_polygraphy_trt, import_tensorrt
from trimodal.tensorrt.samples import encoder_inputs
from trimodal.tensorrt.sources import GraphSource

LOGGER = logging.getLogger(__name__)

REBUILD = f"`{REBUILD_COMMAND}`"


@dataclass(frozen=True)
class Tolerance:
    """Acceptance thresholds for one precision."""

    min_top1_agreement: float
    max_prob_diff: float


DEFAULT_TOLERANCES: dict[str, Tolerance] = {
    "fp32": Tolerance(min_top1_agreement=0.999, max_prob_diff=1e-3),
    "fp16": Tolerance(min_top1_agreement=0.99, max_prob_diff=2e-2),
    "int8": Tolerance(min_top1_agreement=0.97, max_prob_diff=1e-1),
}


@dataclass(frozen=True)
class AccuracyReport:
    """TensorRT vs ONNX Runtime on the same preprocessed samples."""

    precision: str
    samples: int
    top1_agreement: float
    max_prob_diff: float
    tolerance: Tolerance
    feature_max_diff: dict[str, float] = field(default_factory=dict)
    trt_accuracy: float | None = None
    ort_accuracy: float | None = None

    @property
    def passed(self) -> bool:
        """Whether both thresholds of the precision are met."""
        return self.top1_agreement >= self.tolerance.min_top1_agreement and (
            self.max_prob_diff <= self.tolerance.max_prob_diff
        )

    def summary(self) -> str:
        """One line for the CLI."""
        verdict = "OK" if self.passed else "FAILED"
        accuracy = ""
        if self.trt_accuracy is not None and self.ort_accuracy is not None:
            accuracy = f"; accuracy TensorRT {self.trt_accuracy:.2%} vs ONNX Runtime {self.ort_accuracy:.2%}"
        return (
            f"{verdict}: {self.precision} engines agree with ONNX Runtime on top-1 for {self.top1_agreement:.2%} of "
            f"{self.samples} test samples (needs >= {self.tolerance.min_top1_agreement:.1%}), max probability "
            f"difference {self.max_prob_diff:.2e} (needs <= {self.tolerance.max_prob_diff:.0e}){accuracy}"
        )


def _feature_diffs(reference: dict[str, Feeds], candidate: dict[str, Feeds]) -> dict[str, float]:
    """``{"<model>.<output>": largest absolute difference}`` for every output both runs have."""
    diffs = {}
    for model, outputs in reference.items():
        for name, value in outputs.items():
            if name in candidate.get(model, {}):
                diff = np.abs(value.astype(np.float64) - candidate[model][name].astype(np.float64))
                diffs[f"{model}.{name}"] = float(diff.max(initial=0.0))
    return diffs


def compare_outputs(
    precision: str,
    reference: dict[str, Feeds],
    candidate: dict[str, Feeds],
    labels: np.ndarray | None = None,
    tolerances: dict[str, Tolerance] | None = None,
) -> AccuracyReport:
    """Build an :class:`AccuracyReport` from two runs of :func:`trimodal.runtime.pipeline.run_models`.

    Args:
        precision: the engines' precision (picks the tolerance).
        reference: ONNX Runtime outputs by model and tensor.
        candidate: TensorRT outputs by model and tensor.
        labels: true labels, to report both accuracies.
        tolerances: thresholds per precision (default :data:`DEFAULT_TOLERANCES`).

    Returns:
        The report.

    Raises:
        EngineError: if the two runs' probabilities differ in shape or are empty.
    """
    tolerance = (tolerances or DEFAULT_TOLERANCES)[precision]
    ref = reference[FUSION][FUSED_PROBABILITIES].astype(np.float64)
    got = candidate[FUSION][FUSED_PROBABILITIES].astype(np.float64)
    if ref.shape != got.shape or ref.size == 0:
        raise EngineError(f"cannot compare probabilities of shapes {ref.shape} and {got.shape}")
    trt_acc = ort_acc = None
    if labels is not None:
        trt_acc = float(np.mean(got.argmax(axis=1) == labels))
        ort_acc = float(np.mean(ref.argmax(axis=1) == labels))
    return AccuracyReport(
        precision=precision,
        samples=len(ref),
        top1_agreement=float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1))),
        max_prob_diff=float(np.abs(ref - got).max()),
        tolerance=tolerance,
        feature_max_diff=_feature_diffs(reference, candidate),
        trt_accuracy=trt_acc,
        ort_accuracy=ort_acc,
    )


def trt_infer(plans: dict[str, Path]) -> tuple[InferFn, Callable[[], None]]:
    """An ``infer(model, feeds)`` over Polygraphy TrtRunners (created on first use), and a closer.

    Args:
        plans: model name -> its plan file.

    Returns:
        ``(infer, close)``; ``close()`` releases the runners.

    Raises:
        EngineError: if Polygraphy is not installed; ``infer`` raises it when a plan cannot run.
    """
    polygraphy = import_polygraphy_trt()
    runners: dict[str, Any] = {}

    def infer(model: str, feeds: Feeds) -> Feeds:
        try:
            if model not in runners:
                runner = polygraphy.TrtRunner(polygraphy.EngineFromBytes(plans[model].read_bytes()))
                runner.activate()
                runners[model] = runner
            outputs = runners[model].infer(feeds)
        except Exception as exc:  # Polygraphy, TensorRT and CUDA raise their own types
            raise EngineError(f"TensorRT cannot run {plans[model]}: {type(exc).__name__}: {exc}") from exc
        return {name: np.array(value, copy=True) for name, value in outputs.items()}

    def close() -> None:
        for runner in runners.values():
            runner.deactivate()
        runners.clear()

    return infer, close


def _served_plans(spec: PipelineSpec, repo_dir: Path, runtime: RuntimeInfo) -> tuple[dict[str, Path], str]:
    """The plans Triton would load on this GPU, and their common precision.

    Raises:
        EngineError: if a plan is missing or the plans differ in precision.
    """
    plans = {model: plan_path_for(repo_dir, spec, model, runtime) for model in ENCODERS}
    missing = [str(p) for p in plans.values() if not p.exists()]
    if missing:
        raise EngineError(f"missing plan(s) {missing}: build them with {REBUILD}")
    precisions = {read_metadata(p).precision for p in plans.values()}
    if len(precisions) != 1:
        raise EngineError(f"plans have mixed precisions {sorted(precisions)}: rebuild them with {REBUILD}")
    return plans, precisions.pop()


def unavailable_reason() -> str | None:
    """Why the accuracy check cannot run in this process, or None when it can.

    It needs TensorRT's Python bindings and Polygraphy, which the serving image does not have.
    """
    try:
        import_tensorrt()
        import_polygraphy_trt()
    except EngineError as exc:
        return str(exc)
    return None


def reference_graphs(repo_dir: Path, build_dir: Path | None) -> GraphSource:
    """Where the fp32 reference graphs are: next to the plans in the repository, else in the build folder.

    Raises:
        EngineError: if neither has every fp32 graph.
    """
    for source in (GraphSource(Path(repo_dir)), *([GraphSource(Path(repo_dir), Path(build_dir))] if build_dir else [])):
        if all(source.graph(m, "fp32").is_file() for m in ENCODERS):
            return source
    raise EngineError(f"missing fp32 ONNX graphs in {repo_dir} (and no build folder has them): run `trimodal build`")


def verify_accuracy(
    spec: PipelineSpec,
    repo_dir: Path,
    build_dir: Path,
    samples: int = 500,
    *,
    runtime: RuntimeInfo | None = None,
    tolerances: dict[str, Tolerance] | None = None,
) -> AccuracyReport:
    """Run the built plans (TensorRT) and the fp32 ONNX graphs (ONNX Runtime) on a sample of the test split.

    The same preprocessed inputs go through the three encoders and the fusion head on each side; the
    fusion head of each side gets that side's features. Needs TensorRT's Python bindings, Polygraphy and a GPU
    (the engine-builder image on a GPU host); the serving image skips it (:func:`unavailable_reason`).

    Args:
        spec: the pipeline spec.
        repo_dir: the model repository with the plans (the ones Triton would load on this GPU), the fp32
            graphs and the tokenizer.
        build_dir: the build folder holding the dataset (and fp32 graphs in ``onnx/`` if the repository
            has none).
        samples: how many test samples.
        runtime: the TensorRT/GPU (detected when None); picks per-architecture plans.
        tolerances: thresholds per precision (default :data:`DEFAULT_TOLERANCES`).

    Returns:
        The report (``report.passed``, ``report.summary()``).

    Raises:
        EngineError: if TensorRT, a GPU, a plan or an ONNX graph is missing, or plans differ in precision.
    """
    runtime = runtime or detect_runtime()
    plans, precision = _served_plans(spec, repo_dir, runtime)
    graphs = reference_graphs(Path(repo_dir), Path(build_dir))
    batch = min(spec.serving.resolved(m).max_batch_size for m in ENCODERS)
    tensors, labels = encoder_inputs(spec, Path(build_dir), "test", samples, repo_dir=Path(repo_dir))
    LOGGER.info("accuracy check: %d test samples, %s engines vs fp32 ONNX Runtime", len(labels), precision)
    reference = run_models(spec, tensors, ort_infer(lambda model: graphs.graph(model, "fp32")), batch)
    infer, close = trt_infer(plans)
    try:
        candidate = run_models(spec, tensors, infer, batch)
    finally:
        close()
    report = compare_outputs(precision, reference, candidate, labels, tolerances)
    LOGGER.log(logging.INFO if report.passed else logging.ERROR, "%s", report.summary())
    return report


__all__ = [
    "DEFAULT_TOLERANCES", "AccuracyReport", "Tolerance", "compare_outputs", "trt_infer", "unavailable_reason",
    "verify_accuracy",
]  # fmt: skip
