"""Pre-flight check of the GPU target: plans vs the running TensorRT/GPU vs config.pbtxt.

Triton refuses a plan built by another TensorRT version or for another GPU architecture with an opaque
"magic tag" / deserialization error, and refuses a config whose max_batch_size, tensor names, dtypes or
dims disagree with the engine with a message about one tensor at a time. :func:`check_engines` finds all
of that before the server starts and says, in one sentence per problem, what does not match and how to
rebuild. It needs no TensorRT: it reads the metadata written next to each plan by
:mod:`trimodal.tensorrt.builder` (the running TensorRT/GPU are detected when available, or passed in).

Entry points for the CLI (``trimodal check``): :func:`check_engines`, :func:`errors`, and
:func:`~trimodal.tensorrt.accuracy.verify_accuracy`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from trimodal.contract import ENCODERS, TensorSpec
from trimodal.errors import EngineError
from trimodal.layout import CONFIG_FILE
from trimodal.spec import PipelineSpec
from trimodal.tensorrt.metadata import PlanMetadata, metadata_path, read_metadata, sha256_file
from trimodal.tensorrt.plans import REBUILD_COMMAND
from trimodal.tensorrt.profiles import ShapeRange, profile_shapes
from trimodal.tensorrt.runtime import RuntimeInfo, detect_runtime, same_tensorrt_version
from trimodal.tensorrt.sources import engine_precision

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


@dataclass(frozen=True)
class _Plan:
    """One plan file a config makes Triton load: ``rel`` is ``<model>/<version>/<file>``."""

    model: str
    config: mc.ModelConfig
    path: Path
    rel: str
    cc_key: str | None  # the compute capability the config lists it for (None: the single default plan)

    def problem(self, message: str, severity: Severity = "error") -> Problem:
        return Problem(self.model, message, self.path, severity)


# --- config.pbtxt -----------------------------------------------------------------------------------


def _dtype_name(data_type: int) -> str:
    """model_config DataType -> KServe name (``TYPE_FP32`` -> ``FP32``, ``TYPE_STRING`` -> ``BYTES``)."""
    name = mc.DataType.Name(data_type).removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def _parse_config(path: Path) -> mc.ModelConfig:
    return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())


def _load_tensorrt_config(model: str, path: Path) -> tuple[mc.ModelConfig | None, list[Problem]]:
    """The model's config, or None and the problem: missing, unparsable or not for a TensorRT plan."""
    try:
        config = _parse_config(path)
    except FileNotFoundError:
        return None, [Problem(model, f"{path} is missing; render the repository with `trimodal render`", path)]
    except (OSError, text_format.ParseError) as exc:
        return None, [Problem(model, f"{path} cannot be parsed ({exc}); re-render it with `trimodal render`", path)]
    if config.platform != "tensorrt_plan" and config.backend != "tensorrt":
        kind = config.platform or config.backend or "unset"
        return None, [Problem(model, (
            f"{model}/{CONFIG_FILE} is for {kind!r}, not a TensorRT plan; re-render it with `trimodal render`"
        ), path)]  # fmt: skip
    return config, []


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


# --- formatting and dims ----------------------------------------------------------------------------


def _fmt_dims(dims: tuple[int, ...] | list[int]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _fmt_profile(profiles: dict[str, ShapeRange], names: list[str]) -> str:
    parts = []
    for name in names:
        shapes = profiles.get(name)
        parts.append(f"{name}: none" if shapes is None else f"{name}: " + " / ".join(_fmt_dims(s) for s in shapes))
    return ", ".join(parts)


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


# --- one plan: each check returns its problems ------------------------------------------------------


def _read_plan_metadata(plan: _Plan) -> tuple[PlanMetadata | None, list[Problem]]:
    """The plan's metadata, or None and the problem (missing or unreadable)."""
    try:
        return read_metadata(plan.path), []
    except EngineError as exc:
        source = metadata_path(plan.path)
        what = f"has no metadata file {source.name}" if not source.exists() else f"has unreadable metadata ({exc})"
        return None, [plan.problem(
            f"{plan.rel} {what}, so the TensorRT version and GPU it was built for are unknown; "
            f"rebuild it with {REBUILD}"
        )]  # fmt: skip


def _check_hash(plan: _Plan, meta: PlanMetadata) -> list[Problem]:
    if sha256_file(plan.path) == meta.plan_sha256:
        return []
    return [plan.problem(
        f"{plan.rel} is not the plan its metadata describes (sha256 differs), so it was replaced by hand; "
        f"rebuild it with {REBUILD}"
    )]  # fmt: skip


def _check_runtime(plan: _Plan, meta: PlanMetadata, runtime: RuntimeInfo | None) -> list[Problem]:
    """The running TensorRT version and GPU vs the ones the plan was built with."""
    if runtime is None:
        return []
    problems: list[Problem] = []
    if not same_tensorrt_version(meta.tensorrt_version, runtime.tensorrt_version):
        problems.append(plan.problem(
            f"{plan.rel} was built with TensorRT {meta.tensorrt_version} but this server runs TensorRT "
            f"{runtime.tensorrt_version}, so Triton would fail to deserialize it (\"magic tag\" / version "
            f"error); rebuild it in the serving release's container with {REBUILD}"
        ))  # fmt: skip
    serves_here = plan.cc_key is None or plan.cc_key == runtime.compute_capability
    if serves_here and meta.compute_capability != runtime.compute_capability:
        problems.append(plan.problem(
            f"{plan.rel} was built for compute capability {meta.compute_capability} ({meta.gpu_name}) but this "
            f"GPU is {runtime.gpu_name} with compute capability {runtime.compute_capability}; rebuild it on "
            f"this GPU with {REBUILD}"
        ))  # fmt: skip
    elif serves_here and meta.gpu_name != runtime.gpu_name:
        problems.append(plan.problem(
            f"{plan.rel} was built on {meta.gpu_name} and runs on {runtime.gpu_name} (same compute capability "
            f"{runtime.compute_capability}, so it loads, but TensorRT tuned it for the other GPU); rebuild it "
            f"here with {REBUILD} for best performance", "warning"
        ))  # fmt: skip
    return problems


def _check_listed_architecture(plan: _Plan, meta: PlanMetadata) -> list[Problem]:
    if plan.cc_key is None or meta.compute_capability == plan.cc_key:
        return []
    return [plan.problem(
        f"{plan.rel} is listed for compute capability {plan.cc_key} in {CONFIG_FILE} but was built for "
        f"{meta.compute_capability} ({meta.gpu_name}); rebuild it on a {plan.cc_key} GPU with {REBUILD}"
    )]  # fmt: skip


def _check_max_batch_size(plan: _Plan, meta: PlanMetadata) -> list[Problem]:
    config, model, rel = plan.config, plan.model, plan.rel
    if config.max_batch_size <= 0:
        return [plan.problem(
            f"{model}/{CONFIG_FILE} has max_batch_size {config.max_batch_size} but {rel} has a dynamic batch "
            f"dimension (profile 1..{meta.max_batch_size}); re-render the config with `trimodal render`"
        )]  # fmt: skip
    if config.max_batch_size > meta.max_batch_size:
        return [plan.problem(
            f"{model}/{CONFIG_FILE} has max_batch_size {config.max_batch_size} but {rel} was built with an "
            f"optimization profile for batches up to {meta.max_batch_size}; rebuild it with {REBUILD}"
        )]  # fmt: skip
    return []


def _compare_tensors(
    plan: _Plan,
    kind: str,
    declared: list[mc.ModelInput] | list[mc.ModelOutput],
    built: tuple[TensorSpec, ...],
    profiles: dict[str, ShapeRange],
) -> list[Problem]:
    """The config's inputs (or outputs) vs the engine's: names both ways, then dtype and dims."""
    model, rel = plan.model, plan.rel
    problems: list[Problem] = []
    in_config = {t.name: t for t in declared}
    in_plan = {t.name: t for t in built}
    for name in (n for n in in_config if n not in in_plan):
        problems.append(plan.problem(
            f"{model}/{CONFIG_FILE} declares {kind} {name} but {rel} has no such {kind} (it has "
            f"{sorted(in_plan)}); rebuild the plan from the current ONNX export with {REBUILD}"
        ))  # fmt: skip
    for name in (n for n in in_plan if n not in in_config):
        problems.append(plan.problem(
            f"{rel} has {kind} {name} that {model}/{CONFIG_FILE} does not declare (it declares "
            f"{sorted(in_config)}); re-render the config with `trimodal render` or rebuild with {REBUILD}"
        ))  # fmt: skip
    for name in in_config.keys() & in_plan.keys():
        want, have = in_config[name], in_plan[name]
        if _dtype_name(want.data_type) != have.dtype:
            problems.append(plan.problem(
                f"{kind} {name} of {model} is {_dtype_name(want.data_type)} in {CONFIG_FILE} but {have.dtype} in "
                f"{rel}; rebuild the plan with {REBUILD}"
            ))  # fmt: skip
        if not _dims_match(list(want.dims), have.dims, profiles.get(name)):
            problems.append(plan.problem(
                f"{kind} {name} of {model} has dims {_fmt_dims(list(want.dims))} in {CONFIG_FILE} but "
                f"{_fmt_dims(have.dims)} in {rel}; rebuild the plan with {REBUILD}"
            ))  # fmt: skip
    return problems


def _check_profile(spec: PipelineSpec, plan: _Plan, meta: PlanMetadata) -> list[Problem]:
    """The plan's optimization profile vs the one pipeline.yaml derives now."""
    try:
        wanted = profile_shapes(spec, plan.model)
    except EngineError as exc:
        return [plan.problem(f"cannot derive the profile of {plan.model} from pipeline.yaml: {exc}")]
    if wanted == meta.profiles:
        return []
    differing = sorted(n for n in wanted.keys() | meta.profiles.keys() if wanted.get(n) != meta.profiles.get(n))
    return [plan.problem(
        f"the optimization profile of {plan.rel} for {differing} ({_fmt_profile(meta.profiles, differing)}) is not "
        f"what pipeline.yaml derives now ({_fmt_profile(wanted, differing)}); rebuild it with {REBUILD}"
    )]  # fmt: skip


def _check_precision(spec: PipelineSpec, plan: _Plan, meta: PlanMetadata) -> list[Problem]:
    wanted = engine_precision(spec, plan.model)
    if meta.precision == wanted:
        return []
    return [plan.problem(
        f"{plan.rel} is {meta.precision} but pipeline.yaml asks for {wanted}; rebuild it with "
        f"{REBUILD} if that is not deliberate", "warning"
    )]  # fmt: skip


def _built_from(plan: _Plan, meta: PlanMetadata, onnx_dir: Path | None) -> Path | None:
    """The graph the plan was built from, where it is now: next to the plan, else in ``onnx_dir``."""
    candidates = [plan.path.parent / meta.onnx_file] if meta.onnx_origin == "repository" else []
    candidates += [Path(onnx_dir) / meta.onnx_file] if onnx_dir is not None else []
    return next((c for c in candidates if c.is_file()), None)


def _check_onnx(plan: _Plan, meta: PlanMetadata, onnx_dir: Path | None) -> list[Problem]:
    """Whether the ONNX graph the plan was built from has been re-exported since."""
    onnx = _built_from(plan, meta, onnx_dir)
    if onnx is None or sha256_file(onnx) == meta.onnx_sha256:
        return []
    return [plan.problem(
        f"{plan.rel} was built from an older {onnx.name} (sha256 differs from {onnx}); rebuild it with {REBUILD}"
    )]  # fmt: skip


def _check_plan(spec: PipelineSpec, plan: _Plan, runtime: RuntimeInfo | None, onnx_dir: Path | None) -> list[Problem]:
    """Every check of one existing plan, in order: metadata, hash, runtime, config, spec, ONNX."""
    meta, problems = _read_plan_metadata(plan)
    if meta is None:
        return problems
    return [
        *_check_hash(plan, meta),
        *_check_runtime(plan, meta, runtime),
        *_check_listed_architecture(plan, meta),
        *_check_max_batch_size(plan, meta),
        *_compare_tensors(plan, "input", list(plan.config.input), meta.inputs, meta.profiles),
        *_compare_tensors(plan, "output", list(plan.config.output), meta.outputs, meta.profiles),
        *_check_profile(spec, plan, meta),
        *_check_precision(spec, plan, meta),
        *_check_onnx(plan, meta, onnx_dir),
    ]


# --- one model --------------------------------------------------------------------------------------


def _missing_plan(plan: _Plan, runtime: RuntimeInfo | None) -> Problem:
    """A missing plan: an error when this GPU would load it, else a warning (needed on another GPU)."""
    cc_key = plan.cc_key
    needed_here = cc_key is None or runtime is None or cc_key == runtime.compute_capability
    where = "" if cc_key is None else f" (compute capability {cc_key})"
    return plan.problem(
        f"plan {plan.rel}{where} is missing; build it with {REBUILD}"
        + ("" if needed_here else f" on a {cc_key} GPU before serving on one"),
        "error" if needed_here else "warning",
    )


def _check_architecture_listed(
    model: str, config_path: Path, expected: dict[str | None, str], runtime: RuntimeInfo | None
) -> list[Problem]:
    """With per-architecture plans, whether this GPU's compute capability is one of them."""
    if runtime is None or None in expected or runtime.compute_capability in expected:
        return []
    return [Problem(model, (
        f"{model}/{CONFIG_FILE} lists plans for compute capabilities {sorted(expected)} but this GPU "
        f"({runtime.gpu_name}) is {runtime.compute_capability}; add \"{runtime.compute_capability}\" to "
        f"engines.compute_capabilities in pipeline.yaml, run `trimodal render` and {REBUILD}"
    ), config_path)]  # fmt: skip


def _check_model(
    spec: PipelineSpec, repo_dir: Path, model: str, runtime: RuntimeInfo | None, onnx_dir: Path | None
) -> list[Problem]:
    """The config of one model, then every plan it makes Triton load."""
    config_path = repo_dir / model / CONFIG_FILE
    config, problems = _load_tensorrt_config(model, config_path)
    if config is None:
        return problems
    versions = _served_versions(repo_dir / model, config)
    if not versions:
        return [Problem(model, f"{model} has no version folder with a plan; build it with {REBUILD}", repo_dir / model)]
    expected = _expected_plans(config)
    problems = _check_architecture_listed(model, config_path, expected, runtime)
    for version in versions:
        for cc_key, filename in expected.items():
            rel = f"{model}/{version}/{filename}"
            plan = _Plan(model, config, repo_dir / rel, rel, cc_key)
            if plan.path.exists():
                problems += _check_plan(spec, plan, runtime, onnx_dir)
            else:
                problems.append(_missing_plan(plan, runtime))
    return problems


def _detected_runtime() -> tuple[RuntimeInfo | None, list[Problem]]:
    """The running TensorRT/GPU, or None and a warning that plans were not compared with them."""
    try:
        return detect_runtime(), []
    except EngineError as exc:
        return None, [Problem("*", (
            f"plans were not compared with the running TensorRT and GPU because {exc}; run `trimodal check` "
            "inside the serving container to compare them"
        ), None, "warning")]  # fmt: skip


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
        onnx_dir: a build folder's ``onnx/``: plans built from a graph there that changed since are reported
            (graphs next to the plans in the repository are always compared).
        detect: detect the runtime when ``runtime`` is None (a warning is reported when it cannot be).
        models: the models to check (the encoders and the fusion head).

    Returns:
        The problems found, errors and warnings (``problem.severity``), each one sentence naming what does
        not match and the command that fixes it; empty when everything matches.
    """
    problems: list[Problem] = []
    if runtime is None and detect:
        runtime, problems = _detected_runtime()
    for model in models:
        problems += _check_model(spec, Path(repo_dir), model, runtime, onnx_dir)
    for problem in problems:
        LOGGER.log(logging.ERROR if problem.severity == "error" else logging.WARNING, "%s", problem.message)
    return problems


def errors(problems: list[Problem]) -> list[Problem]:
    """Only the problems that stop serving (severity ``error``)."""
    return [p for p in problems if p.severity == "error"]


__all__ = ["Problem", "check_engines", "errors"]
