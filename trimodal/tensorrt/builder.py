"""ONNX -> TensorRT plans for the encoders and the fusion head (GPU target), with Polygraphy.

The build runs inside NVIDIA's TensorRT container of the same release as the serving Triton container (a
plan only loads on the TensorRT version and GPU compute capability that built it). TensorRT and Polygraphy
are imported when a build starts, never at module level. Where plans and caches go: :mod:`.plans`; what is
recorded next to a plan: :mod:`.metadata`.

Entry point for the CLI: :func:`build_all` (``trimodal build --target gpu``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from trimodal.contract import ENCODERS, TensorSpec
from trimodal.errors import EngineError
from trimodal.layout import BuildLayout
from trimodal.runtime.pipeline import Feeds
from trimodal.spec import PipelineSpec
from trimodal.tensorrt.calibration import calibration_feeds
from trimodal.tensorrt.metadata import PlanMetadata, engine_io, read_metadata, sha256_file, write_metadata
from trimodal.tensorrt.plans import (
    PRECISIONS,
    REBUILD_COMMAND,
    calibration_cache_path,
    check_precision,
    is_up_to_date,
    plan_path_for,
    timing_cache_path,
)
from trimodal.tensorrt.profiles import ShapeRange, profile_shapes
from trimodal.tensorrt.runtime import RuntimeInfo, detect_runtime, import_polygraphy_trt, import_tensorrt

LOGGER = logging.getLogger(__name__)


def _progress_monitor(trt: Any, model: str) -> Any | None:
    """A TensorRT progress monitor logging the builder's phases (None on TensorRT without the API)."""
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._started: dict[str, float] = {}

        def phase_start(self, parent_phase: str | None, phase_name: str, num_steps: int) -> None:
            self._started[phase_name] = time.monotonic()
            level = logging.INFO if parent_phase is None else logging.DEBUG
            LOGGER.log(level, "%s: %s (%d steps)", model, phase_name, num_steps)

        def step_complete(self, phase_name: str, step: int) -> bool:
            LOGGER.debug("%s: %s step %d", model, phase_name, step)
            return True  # False would cancel the build

        def phase_finish(self, phase_name: str) -> None:
            elapsed = time.monotonic() - self._started.pop(phase_name, time.monotonic())
            LOGGER.debug("%s: %s done in %.1f s", model, phase_name, elapsed)

    return _Monitor()


def _check_build_arguments(
    onnx_path: Path, model: str, precision: str, calibration_data: object, calibration_cache: Path | None
) -> None:
    """Refuse an unknown precision, a missing ONNX graph, or INT8 without calibration data or cache."""
    check_precision(precision)
    if not onnx_path.exists():
        raise EngineError(f"missing ONNX graph {onnx_path}: run `trimodal build` (CPU target) first")
    if precision == "int8" and calibration_data is None and not (calibration_cache and calibration_cache.exists()):
        raise EngineError(f"{model}: INT8 needs calibration data or an existing calibration cache")


def _parse_network(polygraphy: Any, onnx_path: Path, model: str, profiles: dict[str, ShapeRange]) -> Any:
    """The parsed ONNX network, checked to have exactly the inputs the spec derives a profile for."""
    network = polygraphy.network_from_onnx_path(str(onnx_path))()
    _, net, _ = network
    onnx_inputs = {net.get_input(i).name for i in range(net.num_inputs)}
    if onnx_inputs != set(profiles):
        raise EngineError(
            f"{onnx_path} has inputs {sorted(onnx_inputs)} but pipeline.yaml derives {sorted(profiles)} for {model}; "
            "re-export with `trimodal build`"
        )
    return network


def _config_arguments(
    trt: Any, polygraphy: Any, profiles: dict[str, ShapeRange], precision: str, workspace_mib: int, timing_cache: Path
) -> dict[str, Any]:
    """Polygraphy ``CreateConfig`` arguments: the profile, workspace, precision flags and timing cache."""
    profile = polygraphy.Profile()
    for name, (low, opt, high) in profiles.items():
        profile.add(name, min=low, opt=opt, max=high)
    arguments: dict[str, Any] = {
        "profiles": [profile],
        "memory_pool_limits": {trt.MemoryPoolType.WORKSPACE: int(workspace_mib) << 20},
        "fp16": precision in ("fp16", "int8"),
        "tf32": precision != "fp32",
    }
    if Path(timing_cache).exists():
        arguments["load_timing_cache"] = str(timing_cache)
    return arguments


def _int8_arguments(
    trt: Any,
    polygraphy: Any,
    runtime: RuntimeInfo,
    calibration_data: Iterable[Feeds] | None,
    calibration_cache: Path | None,
) -> dict[str, Any]:
    """``CreateConfig`` arguments for INT8 entropy calibration (data, or the cache of an earlier run)."""
    if not hasattr(trt, "IInt8EntropyCalibrator2"):
        raise EngineError(
            f"TensorRT {runtime.tensorrt_version} has no implicit INT8 calibration; build with precision fp16, "
            "or quantize the ONNX graph explicitly (Q/DQ nodes)"
        )
    data = list(calibration_data) if calibration_data is not None else []
    calibrator = polygraphy.Calibrator(
        iter(data), cache=str(calibration_cache) if calibration_cache else None,
        BaseClass=trt.IInt8EntropyCalibrator2,
    )  # fmt: skip
    return {"int8": True, "calibrator": calibrator}


def _serialize(
    polygraphy: Any, network: Any, arguments: dict[str, Any], timing_cache: Path, model: str, onnx_path: Path
) -> bytes:
    """Build the engine and return the plan bytes; the timing cache is merged back to ``timing_cache``."""
    Path(timing_cache).parent.mkdir(parents=True, exist_ok=True)
    try:
        serialized = polygraphy.EngineBytesFromNetwork(
            network, polygraphy.CreateConfig(**arguments), save_timing_cache=str(timing_cache)
        )()
    except Exception as exc:  # Polygraphy raises PolygraphyException; TensorRT raises RuntimeError
        raise EngineError(f"{model}: TensorRT build from {onnx_path} failed: {exc}") from exc
    if not serialized:
        raise EngineError(f"{model}: TensorRT returned no engine for {onnx_path} (see the log above)")
    return bytes(serialized)


def _plan_tensors(trt: Any, plan_bytes: bytes, model: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """``(inputs, outputs)`` of the plan just built, read back from the deserialized engine."""
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise EngineError(f"{model}: the plan just built cannot be deserialized")
    return engine_io(engine)


def _write_plan(plan_path: Path, plan_bytes: bytes) -> None:
    """Write the plan atomically (a temporary file renamed over it)."""
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = plan_path.with_name(plan_path.name + ".tmp")
    tmp.write_bytes(plan_bytes)
    tmp.replace(plan_path)


def _builder_version() -> str:
    try:
        from importlib.metadata import version

        return f"trimodal {version('trimodal')}, polygraphy {version('polygraphy')}"
    except Exception:  # metadata missing in an uninstalled checkout
        return "trimodal"


def _plan_metadata(
    onnx_path: Path,
    plan_path: Path,
    plan_bytes: bytes,
    *,
    model: str,
    precision: str,
    profiles: dict[str, ShapeRange],
    tensors: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]],
    runtime: RuntimeInfo,
    workspace_mib: int,
    started: float,
) -> PlanMetadata:
    """The metadata of a plan just built from ``onnx_path`` and written to ``plan_path``."""
    return PlanMetadata(
        model=model,
        plan_file=plan_path.name,
        precision=precision,
        tensorrt_version=runtime.tensorrt_version,
        gpu_name=runtime.gpu_name,
        compute_capability=runtime.compute_capability,
        profiles=profiles,
        inputs=tensors[0],
        outputs=tensors[1],
        onnx_file=onnx_path.name,
        onnx_sha256=sha256_file(onnx_path),
        plan_sha256=hashlib.sha256(plan_bytes).hexdigest(),
        workspace_mib=int(workspace_mib),
        built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        build_seconds=round(time.monotonic() - started, 2),
        builder=_builder_version(),
    )


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    spec: PipelineSpec,
    model: str,
    *,
    precision: str,
    workspace_mib: int,
    timing_cache: Path,
    calibration_data: Iterable[Feeds] | None = None,
    calibration_cache: Path | None = None,
    progress: bool = True,
    runtime: RuntimeInfo | None = None,
) -> PlanMetadata:
    """Build one TensorRT plan from an ONNX graph with Polygraphy, and write its metadata next to it.

    Args:
        onnx_path: the ONNX graph (named, dynamic-batch inputs as exported by :mod:`trimodal.training.export`).
        plan_path: where to write the plan (written atomically; metadata goes to ``<plan>.json``).
        spec: the pipeline spec (optimization profile, see :func:`~trimodal.tensorrt.profiles.profile_shapes`).
        model: the model name (one of :data:`~trimodal.contract.ENCODERS`).
        precision: ``"fp16"`` (FP16 + FP32 kernels), ``"int8"`` (INT8 entropy calibration, FP16 fallback) or
            ``"fp32"`` (strict FP32, TF32 disabled).
        workspace_mib: builder workspace memory pool limit in MiB.
        timing_cache: persistent timing cache file; loaded when present and merged back after the build.
        calibration_data: INT8 only: batches of ``{input name: array}`` at the profile's opt shape. May be
            omitted when ``calibration_cache`` already exists.
        calibration_cache: INT8 only: calibration cache file (read if present, written after calibration).
        progress: log the builder's phases.
        runtime: the TensorRT version/GPU recorded in the metadata (detected when None).

    Returns:
        The plan's metadata.

    Raises:
        EngineError: on a bad argument, a missing input, an ONNX graph that does not match the spec, or a
            failed build.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    _check_build_arguments(onnx_path, model, precision, calibration_data, calibration_cache)
    profiles = profile_shapes(spec, model)
    trt = import_tensorrt()
    runtime = runtime or detect_runtime()
    polygraphy = import_polygraphy_trt()
    started = time.monotonic()
    LOGGER.info("%s: building %s plan from %s (TensorRT %s, %s)", model, precision, onnx_path,
                runtime.tensorrt_version, runtime.gpu_name)  # fmt: skip
    network = _parse_network(polygraphy, onnx_path, model, profiles)
    arguments = _config_arguments(trt, polygraphy, profiles, precision, workspace_mib, timing_cache)
    if precision == "int8":
        arguments |= _int8_arguments(trt, polygraphy, runtime, calibration_data, calibration_cache)
    monitor = _progress_monitor(trt, model) if progress else None
    if monitor is not None:
        arguments["progress_monitor"] = monitor
    plan_bytes = _serialize(polygraphy, network, arguments, timing_cache, model, onnx_path)
    tensors = _plan_tensors(trt, plan_bytes, model)
    _write_plan(plan_path, plan_bytes)
    metadata = _plan_metadata(
        onnx_path, plan_path, plan_bytes, model=model, precision=precision, profiles=profiles, tensors=tensors,
        runtime=runtime, workspace_mib=workspace_mib, started=started,
    )  # fmt: skip
    write_metadata(plan_path, metadata)
    LOGGER.info("%s: wrote %s (%.1f MiB) in %.1f s", model, plan_path, len(plan_bytes) / 2**20, metadata.build_seconds)
    return metadata


def _check_build_all_arguments(build: BuildLayout, models: Sequence[str], precision: str, workspace_mib: int) -> None:
    """Refuse an unknown precision, a non-positive workspace, unknown models or missing ONNX graphs."""
    check_precision(precision)
    if workspace_mib <= 0:
        raise EngineError(f"workspace must be a positive number of MiB, got {workspace_mib}")
    unknown = [m for m in models if m not in ENCODERS]
    if unknown:
        raise EngineError(f"unknown engine model(s) {unknown}; expected some of {list(ENCODERS)}")
    missing = [str(build.onnx_file(m)) for m in models if not build.onnx_file(m).exists()]
    if missing:
        raise EngineError(f"missing ONNX graph(s) {missing}: run `trimodal build` (CPU target) first")


class _Calibration:
    """INT8 calibration per model: the cache path, and the data when there is no cache yet (computed once)."""

    def __init__(self, spec: PipelineSpec, build: BuildLayout) -> None:
        self.spec, self.build = spec, build
        self._feeds: dict[str, list[Feeds]] | None = None

    def for_model(self, model: str) -> tuple[list[Feeds] | None, Path]:
        """``(data or None when the cache exists, cache path)`` of one model."""
        cache = calibration_cache_path(self.build.root, model, sha256_file(self.build.onnx_file(model)))
        if cache.exists():
            return None, cache
        if self._feeds is None:
            self._feeds = calibration_feeds(self.spec, self.build.root)
        return self._feeds[model], cache


def build_all(
    spec: PipelineSpec,
    build_dir: Path,
    repo_dir: Path,
    precision: str | None = None,
    workspace: int | None = None,
    *,
    models: Sequence[str] = ENCODERS,
    force: bool = False,
    progress: bool = True,
    runtime: RuntimeInfo | None = None,
) -> list[PlanMetadata]:
    """Build the plans of the encoders and the fusion head into the model repository (``trimodal build --target gpu``).

    Plans that are up to date (same ONNX hash, profile, precision, TensorRT version and GPU architecture)
    are kept unless ``force``.

    Args:
        spec: the pipeline spec.
        build_dir: the build folder holding ``onnx/<model>.onnx`` (and the dataset for INT8); timing and
            calibration caches are kept in ``build_dir/engines/``.
        repo_dir: the model repository; plans go to ``<model>/1/``.
        precision: ``fp32``/``fp16``/``int8``; defaults to ``spec.precision``.
        workspace: builder workspace in MiB; defaults to ``spec.engines.workspace_mib``.
        models: which models to build.
        force: rebuild even when up to date.
        progress: log the builder's phases.
        runtime: TensorRT version/GPU (detected when None).

    Returns:
        The metadata of every plan (built or kept), in ``models`` order.

    Raises:
        EngineError: naming the model and what went wrong.
    """
    precision = precision or spec.precision
    workspace_mib = int(workspace or spec.engines.workspace_mib)
    build = BuildLayout(Path(build_dir))
    _check_build_all_arguments(build, models, precision, workspace_mib)
    runtime = runtime or detect_runtime()
    LOGGER.info("building %d engine(s): %s, workspace %d MiB, TensorRT %s on %s (cc %s)", len(models), precision,
                workspace_mib, runtime.tensorrt_version, runtime.gpu_name, runtime.compute_capability)  # fmt: skip
    options: dict[str, Any] = {
        "precision": precision,
        "workspace_mib": workspace_mib,
        "timing_cache": timing_cache_path(build.root, runtime),
        "progress": progress,
        "runtime": runtime,
    }
    calibration = _Calibration(spec, build)
    results: list[PlanMetadata] = []
    for position, model in enumerate(models, start=1):
        onnx_path = build.onnx_file(model)
        plan_path = plan_path_for(repo_dir, spec, model, runtime)
        if not force and is_up_to_date(plan_path, onnx_path, spec, model, precision, runtime):
            LOGGER.info("[%d/%d] %s: %s is up to date", position, len(models), model, plan_path)
            results.append(read_metadata(plan_path))
            continue
        LOGGER.info("[%d/%d] %s", position, len(models), model)
        data, cache = calibration.for_model(model) if precision == "int8" else (None, None)
        results.append(
            build_engine(onnx_path, plan_path, spec, model, calibration_data=data, calibration_cache=cache, **options)
        )
    return results


__all__ = ["PRECISIONS", "REBUILD_COMMAND", "build_all", "build_engine"]
