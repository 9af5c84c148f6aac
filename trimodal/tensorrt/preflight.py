"""Pre-flight checks of the GPU target: plans vs the running TensorRT/GPU vs config.pbtxt, and accuracy.

Triton refuses a plan built by another TensorRT version or for another GPU architecture with an opaque
"magic tag" / deserialization error, and refuses a config whose max_batch_size, tensor names, dtypes or
dims disagree with the engine with a message about one tensor at a time. :func:`check_engines` finds all
of that before the server starts and says, in one sentence per problem, what does not match and how to
rebuild. It needs no TensorRT: it reads the metadata written next to each plan by
:mod:`trimodal.tensorrt.builder` (the running TensorRT/GPU are detected when available, or passed in).

:func:`verify_accuracy` runs the built engines (TensorRT, GPU) and the ONNX graphs (ONNX Runtime) on a
sample of the test split and reports top-1 agreement and the largest probability difference.

Entry points for the CLI (``trimodal check``): :func:`check_engines` and :func:`verify_accuracy`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from trimodal.contract import ENCODERS, PROBABILITIES, TensorSpec
from trimodal.errors import EngineError
from trimodal.spec import PipelineSpec
from trimodal.tensorrt.builder import (
    REBUILD_COMMAND,
    PlanMetadata,
    RuntimeInfo,
    ShapeRange,
    detect_runtime,
    metadata_path,
    profile_shapes,
    read_metadata,
    sha256_file,
)

LOGGER = logging.getLogger(__name__)

Severity = Literal["error", "warning"]
REBUILD = f"`{REBUILD_COMMAND}`"


@dataclass(frozen=True)
class Problem:
    """One mismatch found by :func:`check_engines`: a single sentence saying what and how to fix it."""

    model: str
    message: str
    path: Path | None = None
    severity: Severity = "error"

    def __str__(self) -> str:
        return self.message


def _dtype_name(data_type: int) -> str:
    """model_config DataType -> KServe name (``TYPE_FP32`` -> ``FP32``, ``TYPE_STRING`` -> ``BYTES``)."""
    name = mc.DataType.Name(data_type).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def _parse_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())


def _served_versions(model_dir: Path, config: mc.ModelConfig) -> list[int]:
    """The version folders Triton would load under the config's version_policy."""
    present = sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())
    policy = config.version_policy
    kind = policy.WhichOneof("policy_choice")
    if kind == "all":
        return present
    if kind == "specific":
        return sorted(v for v in policy.specific.versions if v in present) or list(policy.specific.versions)
    count = policy.latest.num_versions if kind == "latest" and policy.latest.num_versions > 0 else 1
    return present[-count:]


def _expected_plans(config: mc.ModelConfig) -> dict[str | None, str]:
    """``{compute capability or None: plan file name}`` the config makes Triton load."""
    if config.cc_model_filenames:
        return dict(config.cc_model_filenames)
    return {None: config.default_model_filename or "model.plan"}


def _fmt_dims(dims: tuple[int, ...] | list[int]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _axis_range(profile: ShapeRange | None, axis: int) -> tuple[int, int] | None:
    if profile is None or axis + 1 >= len(profile[0]):
        return None
    return profile[0][axis + 1], profile[2][axis + 1]


def _dims_match(config_dims: list[int], plan_dims: tuple[int, ...], profile: ShapeRange | None) -> bool:
    """Config dims vs engine dims (both without batch): equal, or a fixed config dim inside a dynamic axis' range."""
    if len(config_dims) != len(plan_dims):
        return False
    for axis, (want, have) in enumerate(zip(config_dims, plan_dims, strict=True)):
        if want == have:
            continue
        bounds = _axis_range(profile, axis)
        if have == -1 and want > 0 and bounds is not None and bounds[0] <= want <= bounds[1]:
            continue
        return False
    return True


def _compare_tensors(
    model: str,
    rel: str,
    kind: str,
    declared: list[mc.ModelInput] | list[mc.ModelOutput],
    built: tuple[TensorSpec, ...],
    profiles: dict[str, ShapeRange],
    path: Path,
) -> list[Problem]:
    problems: list[Problem] = []
    in_config = {t.name: t for t in declared}
    in_plan = {t.name: t for t in built}
    for name in in_config:
        if name not in in_plan:
            problems.append(Problem(model, (
                f"{model}/config.pbtxt declares {kind} {name} but {rel} has no such {kind} (it has "
                f"{sorted(in_plan)}); rebuild the plan from the current ONNX export with {REBUILD}"
            ), path))  # fmt: skip
    for name in in_plan:
        if name not in in_config:
            problems.append(Problem(model, (
                f"{rel} has {kind} {name} that {model}/config.pbtxt does not declare (it declares "
                f"{sorted(in_config)}); re-render the config with `trimodal render` or rebuild with {REBUILD}"
            ), path))  # fmt: skip
    for name in in_config.keys() & in_plan.keys():
        want, have = in_config[name], in_plan[name]
        if _dtype_name(want.data_type) != have.dtype:
            problems.append(Problem(model, (
                f"{kind} {name} of {model} is {_dtype_name(want.data_type)} in config.pbtxt but {have.dtype} in "
                f"{rel}; rebuild the plan with {REBUILD}"
            ), path))  # fmt: skip
        if not _dims_match(list(want.dims), have.dims, profiles.get(name)):
            problems.append(Problem(model, (
                f"{kind} {name} of {model} has dims {_fmt_dims(list(want.dims))} in config.pbtxt but "
                f"{_fmt_dims(have.dims)} in {rel}; rebuild the plan with {REBUILD}"
            ), path))  # fmt: skip
    return problems


def _check_plan(
    spec: PipelineSpec,
    model: str,
    config: mc.ModelConfig,
    plan: Path,
    rel: str,
    cc_key: str | None,
    runtime: RuntimeInfo | None,
    onnx_dir: Path | None,
) -> list[Problem]:
    try:
        meta: PlanMetadata = read_metadata(plan)
    except EngineError as exc:
        missing = not metadata_path(plan).exists()
        what = f"has no metadata file {metadata_path(plan).name}" if missing else f"has unreadable metadata ({exc})"
        return [Problem(model, (
            f"{rel} {what}, so the TensorRT version and GPU it was built for are unknown; rebuild it with {REBUILD}"
        ), plan)]  # fmt: skip
    problems: list[Problem] = []
    if sha256_file(plan) != meta.plan_sha256:
        problems.append(Problem(model, (
            f"{rel} is not the plan its metadata describes (sha256 differs), so it was replaced by hand; "
            f"rebuild it with {REBUILD}"
        ), plan))  # fmt: skip

    # The running TensorRT and GPU.
    if runtime is not None:
        if meta.tensorrt_version != runtime.tensorrt_version:
            problems.append(Problem(model, (
                f"{rel} was built with TensorRT {meta.tensorrt_version} but this server runs TensorRT "
                f"{runtime.tensorrt_version}, so Triton would fail to deserialize it (\"magic tag\" / version "
                f"error); rebuild it in the serving release's container with {REBUILD}"
            ), plan))  # fmt: skip
        serves_here = cc_key is None or cc_key == runtime.compute_capability
        if serves_here and meta.compute_capability != runtime.compute_capability:
            problems.append(Problem(model, (
                f"{rel} was built for compute capability {meta.compute_capability} ({meta.gpu_name}) but this "
                f"GPU is {runtime.gpu_name} with compute capability {runtime.compute_capability}; rebuild it on "
                f"this GPU with {REBUILD}"
            ), plan))  # fmt: skip
        elif serves_here and meta.gpu_name != runtime.gpu_name:
            problems.append(Problem(model, (
                f"{rel} was built on {meta.gpu_name} and runs on {runtime.gpu_name} (same compute capability "
                f"{runtime.compute_capability}, so it loads, but TensorRT tuned it for the other GPU); rebuild it "
                f"here with {REBUILD} for best performance"
            ), plan, "warning"))  # fmt: skip
    if cc_key is not None and meta.compute_capability != cc_key:
        problems.append(Problem(model, (
            f"{rel} is listed for compute capability {cc_key} in config.pbtxt but was built for "
            f"{meta.compute_capability} ({meta.gpu_name}); rebuild it on a {cc_key} GPU with {REBUILD}"
        ), plan))  # fmt: skip

    # config.pbtxt vs the engine.
    if config.max_batch_size <= 0:
        problems.append(Problem(model, (
            f"{model}/config.pbtxt has max_batch_size {config.max_batch_size} but {rel} has a dynamic batch "
            f"dimension (profile 1..{meta.max_batch_size}); re-render the config with `trimodal render`"
        ), plan))  # fmt: skip
    elif config.max_batch_size > meta.max_batch_size:
        problems.append(Problem(model, (
            f"{model}/config.pbtxt has max_batch_size {config.max_batch_size} but {rel} was built with an "
            f"optimization profile for batches up to {meta.max_batch_size}; rebuild it with {REBUILD}"
        ), plan))  # fmt: skip
    problems += _compare_tensors(model, rel, "input", list(config.input), meta.inputs, meta.profiles, plan)
    problems += _compare_tensors(model, rel, "output", list(config.output), meta.outputs, meta.profiles, plan)

    # pipeline.yaml and the ONNX export vs what the plan was built from.
    try:
        wanted = profile_shapes(spec, model)
    except EngineError as exc:
        wanted = None
        problems.append(Problem(model, f"cannot derive the profile of {model} from pipeline.yaml: {exc}", plan))
    if wanted is not None and wanted != meta.profiles:
        differing = sorted(n for n in wanted.keys() | meta.profiles.keys() if wanted.get(n) != meta.profiles.get(n))
        problems.append(Problem(model, (
            f"the optimization profile of {rel} for {differing} ({_fmt_profile(meta.profiles, differing)}) is not "
            f"what pipeline.yaml derives now ({_fmt_profile(wanted, differing)}); rebuild it with {REBUILD}"
        ), plan))  # fmt: skip
    if meta.precision != spec.precision:
        problems.append(Problem(model, (
            f"{rel} is {meta.precision} but pipeline.yaml asks for {spec.precision}; rebuild it with "
            f"{REBUILD} if that is not deliberate"
        ), plan, "warning"))  # fmt: skip
    if onnx_dir is not None:
        onnx = Path(onnx_dir) / meta.onnx_file
        if onnx.exists() and sha256_file(onnx) != meta.onnx_sha256:
            problems.append(Problem(model, (
                f"{rel} was built from an older {onnx.name} (sha256 differs from {onnx}); rebuild it with {REBUILD}"
            ), plan))  # fmt: skip
    return problems


def _fmt_profile(profiles: dict[str, ShapeRange], names: list[str]) -> str:
    parts = []
    for name in names:
        shapes = profiles.get(name)
        parts.append(f"{name}: none" if shapes is None else f"{name}: " + " / ".join(_fmt_dims(s) for s in shapes))
    return ", ".join(parts)


def check_engines(
    spec: PipelineSpec,
    repo_dir: Path,
    runtime: RuntimeInfo | None = None,
    *,
    onnx_dir: Path | None = None,
    detect: bool = True,
    models: tuple[str, ...] = ENCODERS,
) -> list[Problem]:
    """Compare every plan with the running TensorRT/GPU and with its config.pbtxt, before serving.

    Args:
        spec: the pipeline spec (the profiles the plans should have).
        repo_dir: the model repository.
        runtime: the TensorRT version and GPU to check against; detected when None and ``detect``.
        onnx_dir: when given, plans built from a different ONNX file than the one there are reported.
        detect: detect the runtime when ``runtime`` is None (a warning is reported when it cannot be).
        models: the models to check (the encoders and the fusion head).

    Returns:
        The problems found, errors and warnings (``problem.severity``), each one sentence naming what does
        not match and the command that fixes it; empty when everything matches.
    """
    repo_dir = Path(repo_dir)
    problems: list[Problem] = []
    if runtime is None and detect:
        try:
            runtime = detect_runtime()
        except EngineError as exc:
            problems.append(Problem("*", (
                f"plans were not compared with the running TensorRT and GPU because {exc}; run `trimodal check` "
                "inside the serving container to compare them"
            ), None, "warning"))  # fmt: skip
    for model in models:
        config_path = repo_dir / model / "config.pbtxt"
        try:
            config = _parse_config(config_path)
        except FileNotFoundError:
            problems.append(Problem(model, (
                f"{config_path} is missing; render the repository with `trimodal render`"
            ), config_path))  # fmt: skip
            continue
        except (OSError, text_format.ParseError) as exc:
            problems.append(Problem(model, (
                f"{config_path} cannot be parsed ({exc}); re-render it with `trimodal render`"
            ), config_path))  # fmt: skip
            continue
        if config.platform != "tensorrt_plan" and config.backend != "tensorrt":
            kind = config.platform or config.backend or "unset"
            problems.append(Problem(model, (
                f"{model}/config.pbtxt is for {kind!r}, not a TensorRT plan; re-render it with `trimodal render`"
            ), config_path))  # fmt: skip
            continue
        versions = _served_versions(repo_dir / model, config)
        if not versions:
            problems.append(Problem(model, (
                f"{model} has no version folder with a plan; build it with {REBUILD}"
            ), repo_dir / model))  # fmt: skip
            continue
        expected = _expected_plans(config)
        if runtime is not None and None not in expected and runtime.compute_capability not in expected:
            problems.append(Problem(model, (
                f"{model}/config.pbtxt lists plans for compute capabilities {sorted(expected)} but this GPU "
                f"({runtime.gpu_name}) is {runtime.compute_capability}; add \"{runtime.compute_capability}\" to "
                f"engines.compute_capabilities in pipeline.yaml, run `trimodal render` and {REBUILD}"
            ), config_path))  # fmt: skip
        for version in versions:
            for cc_key, filename in expected.items():
                plan = repo_dir / model / str(version) / filename
                rel = f"{model}/{version}/{filename}"
                if not plan.exists():
                    needed_here = cc_key is None or runtime is None or cc_key == runtime.compute_capability
                    where = "" if cc_key is None else f" (compute capability {cc_key})"
                    problems.append(Problem(model, (
                        f"plan {rel}{where} is missing; build it with {REBUILD}"
                        + ("" if needed_here else f" on a {cc_key} GPU before serving on one")
                    ), plan, "error" if needed_here else "warning"))  # fmt: skip
                    continue
                problems += _check_plan(spec, model, config, plan, rel, cc_key, runtime, onnx_dir)
    for problem in problems:
        LOGGER.log(logging.ERROR if problem.severity == "error" else logging.WARNING, "%s", problem.message)
    return problems


def errors(problems: list[Problem]) -> list[Problem]:
    """Only the problems that stop serving (severity ``error``)."""
    return [p for p in problems if p.severity == "error"]


# --------------------------------------------------------------------------------------------------
# Accuracy of the built engines vs ONNX Runtime
# --------------------------------------------------------------------------------------------------


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


def compare_outputs(
    precision: str,
    reference: dict[str, dict[str, np.ndarray]],
    candidate: dict[str, dict[str, np.ndarray]],
    labels: np.ndarray | None = None,
    tolerances: dict[str, Tolerance] | None = None,
) -> AccuracyReport:
    """Build an :class:`AccuracyReport` from two pipeline runs (see :func:`trimodal.tensorrt.builder.run_pipeline`).

    Args:
        precision: the engines' precision (picks the tolerance).
        reference: ONNX Runtime outputs by model and tensor.
        candidate: TensorRT outputs by model and tensor.
        labels: true labels, to report both accuracies.
        tolerances: thresholds per precision (default :data:`DEFAULT_TOLERANCES`).

    Returns:
        The report.
    """
    tolerance = (tolerances or DEFAULT_TOLERANCES)[precision]
    ref = reference["fusion_classifier"][PROBABILITIES].astype(np.float64)
    got = candidate["fusion_classifier"][PROBABILITIES].astype(np.float64)
    if ref.shape != got.shape or ref.size == 0:
        raise EngineError(f"cannot compare probabilities of shapes {ref.shape} and {got.shape}")
    agreement = float(np.mean(ref.argmax(axis=1) == got.argmax(axis=1)))
    feature_diff = {}
    for model, outputs in reference.items():
        for name, value in outputs.items():
            if name in candidate.get(model, {}):
                diff = np.abs(value.astype(np.float64) - candidate[model][name].astype(np.float64))
                feature_diff[f"{model}.{name}"] = float(diff.max(initial=0.0))
    trt_acc = ort_acc = None
    if labels is not None:
        trt_acc = float(np.mean(got.argmax(axis=1) == labels))
        ort_acc = float(np.mean(ref.argmax(axis=1) == labels))
    return AccuracyReport(
        precision=precision,
        samples=len(ref),
        top1_agreement=agreement,
        max_prob_diff=float(np.abs(ref - got).max()),
        tolerance=tolerance,
        feature_max_diff=feature_diff,
        trt_accuracy=trt_acc,
        ort_accuracy=ort_acc,
    )


def _trt_infer(plans: dict[str, Path]) -> tuple[Any, Any]:
    """An ``infer(model, feeds)`` over Polygraphy TrtRunners, and a closer that releases them."""
    try:
        from polygraphy.backend.trt import EngineFromBytes, TrtRunner
    except ImportError as exc:
        raise EngineError(f"polygraphy is not importable ({exc}); install trimodal[gpu]") from None
    runners: dict[str, Any] = {}

    def infer(model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        if model not in runners:
            runner = TrtRunner(EngineFromBytes(plans[model].read_bytes()))
            runner.activate()
            runners[model] = runner
        outputs = runners[model].infer(feeds)
        return {name: np.array(value, copy=True) for name, value in outputs.items()}

    def close() -> None:
        for runner in runners.values():
            runner.deactivate()
        runners.clear()

    return infer, close


def verify_accuracy(
    spec: PipelineSpec,
    repo_dir: Path,
    build_dir: Path,
    samples: int = 500,
    *,
    runtime: RuntimeInfo | None = None,
    tolerances: dict[str, Tolerance] | None = None,
) -> AccuracyReport:
    """Run the built plans (TensorRT) and the ONNX graphs (ONNX Runtime) on a sample of the test split.

    The same preprocessed inputs go through the three encoders and the fusion head on each side; the
    fusion head of each side gets that side's features. Needs TensorRT and a GPU.

    Args:
        spec: the pipeline spec.
        repo_dir: the model repository with the plans (the ones Triton would load on this GPU).
        build_dir: the build folder (``onnx/`` and the dataset).
        samples: how many test samples.
        runtime: the TensorRT/GPU (detected when None); picks per-architecture plans.
        tolerances: thresholds per precision (default :data:`DEFAULT_TOLERANCES`).

    Returns:
        The report (``report.passed``, ``report.summary()``).

    Raises:
        EngineError: if TensorRT, a GPU, a plan or an ONNX graph is missing, or plans differ in precision.
    """
    from trimodal.tensorrt.builder import encoder_inputs, ort_infer, plan_path_for, run_pipeline

    runtime = runtime or detect_runtime()
    plans = {model: plan_path_for(repo_dir, spec, model, runtime) for model in ENCODERS}
    missing = [str(p) for p in plans.values() if not p.exists()]
    if missing:
        raise EngineError(f"missing plan(s) {missing}: build them with {REBUILD}")
    precisions = {read_metadata(p).precision for p in plans.values()}
    if len(precisions) != 1:
        raise EngineError(f"plans have mixed precisions {sorted(precisions)}: rebuild them with {REBUILD}")
    precision = precisions.pop()
    batch = min(spec.serving.resolved(m).max_batch_size for m in ENCODERS)
    tensors, labels = encoder_inputs(spec, Path(build_dir), "test", samples)
    LOGGER.info("accuracy check: %d test samples, %s engines vs ONNX Runtime", len(labels), precision)
    reference = run_pipeline(spec, tensors, ort_infer(spec, Path(build_dir) / "onnx"), batch)
    infer, close = _trt_infer(plans)
    try:
        candidate = run_pipeline(spec, tensors, infer, batch)
    finally:
        close()
    report = compare_outputs(precision, reference, candidate, labels, tolerances)
    LOGGER.log(logging.INFO if report.passed else logging.ERROR, "%s", report.summary())
    return report


__all__ = [
    "DEFAULT_TOLERANCES",
    "AccuracyReport",
    "Problem",
    "Tolerance",
    "check_engines",
    "compare_outputs",
    "errors",
    "verify_accuracy",
]
