"""ONNX -> strongly typed TensorRT plans for the encoders and the fusion head (GPU target), with Polygraphy.

Precision comes from the graph, not from builder flags: the network is created ``STRONGLY_TYPED`` (the only
mode TensorRT 11 has; TensorRT 10 accepts the flag too), and the fp16/int8 graphs carry their casts and Q/DQ
nodes (:mod:`.sources`). No FP16/INT8 builder flag and no implicit calibration is used, so one builder serves
TensorRT 10.x and 11.x. TensorRT and Polygraphy are imported when a build starts, never at module level.

The build runs inside NVIDIA's TensorRT container of the same release as the serving Triton container (a plan
only loads on the TensorRT version and GPU compute capability that built it). It reads graphs and configs,
never trains, exports or renders. Entry point for the CLI: :func:`build_all` (``trimodal build-engines``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trimodal.contract import ENCODERS, TensorSpec
from trimodal.errors import EngineError
from trimodal.layout import BuildLayout
from trimodal.spec import PipelineSpec
from trimodal.tensorrt.layers import LayerPrecisions, check_graph_precision, summarize_network
from trimodal.tensorrt.metadata import PlanMetadata, engine_io, read_metadata, sha256_file, write_metadata
from trimodal.tensorrt.plans import REBUILD_COMMAND, is_up_to_date, plan_path_for, timing_cache_path
from trimodal.tensorrt.profiles import ShapeRange, profile_shapes
from trimodal.tensorrt.runtime import RuntimeInfo, detect_runtime, import_polygraphy_trt, import_tensorrt
from trimodal.tensorrt.sources import GraphSource, check_precision, engine_precision

LOGGER = logging.getLogger(__name__)


def progress_monitor(trt: Any, model: str) -> Any | None:
    """A TensorRT ``IProgressMonitor`` logging the builder's phases (None on a TensorRT without the API).

    TensorRT calls ``phase_start(phase_name, parent_phase, num_steps)`` (NvInferRuntime.h ``phaseStart``; the
    Python trampoline passes them positionally in that order), ``step_complete(phase_name, step)`` and
    ``phase_finish(phase_name)``. Top-level phases (no parent) are logged at INFO, nested ones at DEBUG.
    """
    base = getattr(trt, "IProgressMonitor", None)
    if base is None:
        return None

    class _Monitor(base):  # type: ignore[misc, valid-type]
        def __init__(self) -> None:
            base.__init__(self)
            self._started: dict[str, float] = {}

        def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
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


@dataclass(frozen=True)
class BuildSettings:
    """What every plan of one ``build-engines`` run shares."""

    workspace_mib: int
    timing_cache: Path | None
    runtime: RuntimeInfo
    progress: bool = True


def needs_strongly_typed_flag(tensorrt_version: str) -> bool:
    """Whether the network must be created with ``STRONGLY_TYPED``: TensorRT 10 yes; 11 networks always are.

    NvInfer.h 11.1 deprecates the flag ("retained for API compatibility but is ignored"), and Polygraphy raises when
    a flag it is asked for is missing, so it is asked for only where it means something.
    """
    return int(tensorrt_version.split(".")[0]) < 11


def parse_network(
    polygraphy: Any, onnx_path: Path, model: str, profiles: dict[str, ShapeRange], strongly_typed_flag: bool = True
) -> tuple[Any, ...]:
    """``(builder, network, parser)`` of the graph, parsed once into a strongly typed network.

    ``NetworkFromOnnxPath`` is Polygraphy's lazy loader: calling it once parses the graph. (The snake_case
    ``network_from_onnx_path`` already returns the tuple; calling its result again was a TypeError.)
    ``strongly_typed_flag``: pass :func:`needs_strongly_typed_flag` of the TensorRT in use.

    Raises:
        EngineError: if the graph cannot be parsed or its inputs are not the ones the spec derives a profile for.
    """
    try:
        parsed = polygraphy.NetworkFromOnnxPath(str(onnx_path), strongly_typed=strongly_typed_flag)()
    except Exception as exc:  # Polygraphy raises PolygraphyException; TensorRT raises RuntimeError/TypeError
        raise EngineError(f"{model}: TensorRT cannot parse {onnx_path}: {exc}") from exc
    network = parsed[1]
    onnx_inputs = {network.get_input(i).name for i in range(network.num_inputs)}
    if onnx_inputs != set(profiles):
        raise EngineError(
            f"{onnx_path} has inputs {sorted(onnx_inputs)} but pipeline.yaml derives {sorted(profiles)} for {model}; "
            "re-export the graphs with `trimodal build`"
        )
    return tuple(parsed)


def config_arguments(
    trt: Any, polygraphy: Any, profiles: dict[str, ShapeRange], precision: str, settings: BuildSettings, model: str
) -> dict[str, Any]:
    """Polygraphy ``CreateConfig`` arguments: profile, workspace, TF32, timing cache, progress; no precision flag.

    TF32 stays off for fp32 plans (strict fp32) and on for the fp32 parts of fp16/int8 plans.
    """
    profile = polygraphy.Profile()
    for name, (low, opt, high) in profiles.items():
        profile.add(name, min=low, opt=opt, max=high)
    arguments: dict[str, Any] = {
        "profiles": [profile],
        "memory_pool_limits": {trt.MemoryPoolType.WORKSPACE: int(settings.workspace_mib) << 20},
        "tf32": precision != "fp32",
    }
    if settings.timing_cache is not None and Path(settings.timing_cache).exists():
        arguments["load_timing_cache"] = str(settings.timing_cache)
    monitor = progress_monitor(trt, model) if settings.progress else None
    if monitor is not None:
        arguments["progress_monitor"] = monitor
    return arguments


def serialize(polygraphy: Any, network: tuple[Any, ...], arguments: dict[str, Any], settings: BuildSettings,
              model: str, onnx_path: Path) -> bytes:  # fmt: skip
    """Build the engine and return the plan bytes; the timing cache is merged back to its file."""
    timing_cache = None
    if settings.timing_cache is not None:
        Path(settings.timing_cache).parent.mkdir(parents=True, exist_ok=True)
        timing_cache = str(settings.timing_cache)
    try:
        config = polygraphy.CreateConfig(**arguments)
        serialized = polygraphy.EngineBytesFromNetwork(network, config, save_timing_cache=timing_cache)()
    except Exception as exc:  # Polygraphy raises PolygraphyException; TensorRT raises RuntimeError
        raise EngineError(f"{model}: TensorRT build from {onnx_path} failed: {exc}") from exc
    if not serialized:
        raise EngineError(f"{model}: TensorRT returned no engine for {onnx_path} (see the log above)")
    return bytes(serialized)


def plan_tensors(trt: Any, plan_bytes: bytes, model: str) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """``(inputs, outputs)`` of the plan just built, read back from the deserialized engine."""
    engine = trt.Runtime(trt.Logger(trt.Logger.WARNING)).deserialize_cuda_engine(plan_bytes)
    if engine is None:
        raise EngineError(f"{model}: the plan just built cannot be deserialized")
    return engine_io(engine)


def write_plan(plan_path: Path, plan_bytes: bytes) -> None:
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


@dataclass(frozen=True)
class _Built:
    """One plan just built, before its metadata is written."""

    model: str
    precision: str
    onnx_path: Path
    onnx_origin: str
    plan_path: Path
    plan_bytes: bytes
    profiles: dict[str, ShapeRange]
    tensors: tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]
    layers: LayerPrecisions
    started: float

    def metadata(self, settings: BuildSettings) -> PlanMetadata:
        """The metadata written next to the plan."""
        runtime = settings.runtime
        return PlanMetadata(
            model=self.model, plan_file=self.plan_path.name, precision=self.precision,
            tensorrt_version=runtime.tensorrt_version, gpu_name=runtime.gpu_name,
            compute_capability=runtime.compute_capability, profiles=self.profiles, inputs=self.tensors[0],
            outputs=self.tensors[1], onnx_file=self.onnx_path.name, onnx_sha256=sha256_file(self.onnx_path),
            plan_sha256=hashlib.sha256(self.plan_bytes).hexdigest(), workspace_mib=int(settings.workspace_mib),
            built_at=_dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            build_seconds=round(time.monotonic() - self.started, 2), builder=_builder_version(),
            onnx_origin=self.onnx_origin, strongly_typed=True, layer_precisions=self.layers,
        )  # fmt: skip


def build_engine(
    onnx_path: Path,
    plan_path: Path,
    spec: PipelineSpec,
    model: str,
    *,
    precision: str,
    settings: BuildSettings,
    onnx_origin: str = "repository",
) -> PlanMetadata:
    """Build one strongly typed TensorRT plan from an ONNX graph, and write its metadata next to it.

    Args:
        onnx_path: the graph at ``precision`` (named, dynamic-batch inputs as exported by trimodal).
        plan_path: where to write the plan (written atomically; metadata goes to ``<plan>.json``).
        spec: the pipeline spec (optimization profile, see :func:`~trimodal.tensorrt.profiles.profile_shapes`).
        model: the model name (one of :data:`~trimodal.contract.ENCODERS`).
        precision: ``fp32``/``fp16``/``int8``: the precision the graph must carry (checked layer by layer).
        settings: workspace, timing cache, TensorRT/GPU and progress logging.
        onnx_origin: ``"repository"`` or ``"build"`` (recorded in the metadata).

    Returns:
        The plan's metadata.

    Raises:
        EngineError: on a bad argument, a missing graph, a graph that does not match the spec or the precision,
            or a failed build.
    """
    onnx_path, plan_path = Path(onnx_path), Path(plan_path)
    check_precision(precision)
    if not onnx_path.is_file():
        raise EngineError(f"{model}: missing ONNX graph {onnx_path}: produce it with `trimodal build` first")
    profiles = profile_shapes(spec, model)
    trt = import_tensorrt()
    polygraphy = import_polygraphy_trt()
    started = time.monotonic()
    LOGGER.info("%s: building a strongly typed %s plan from %s (TensorRT %s, %s)", model, precision, onnx_path,
                settings.runtime.tensorrt_version, settings.runtime.gpu_name)  # fmt: skip
    network = parse_network(
        polygraphy, onnx_path, model, profiles, needs_strongly_typed_flag(settings.runtime.tensorrt_version)
    )
    layers = summarize_network(network[1])
    LOGGER.info("%s: %s", model, layers.summary())
    check_graph_precision(layers, precision, onnx_path, model)
    arguments = config_arguments(trt, polygraphy, profiles, precision, settings, model)
    plan_bytes = serialize(polygraphy, network, arguments, settings, model, onnx_path)
    built = _Built(model, precision, onnx_path, onnx_origin, plan_path, plan_bytes, profiles,
                   plan_tensors(trt, plan_bytes, model), layers, started)  # fmt: skip
    write_plan(plan_path, plan_bytes)
    metadata = built.metadata(settings)
    write_metadata(plan_path, metadata)
    LOGGER.info("%s: wrote %s (%.1f MiB) in %.1f s", model, plan_path, len(plan_bytes) / 2**20, metadata.build_seconds)
    return metadata


def _check_models(models: Sequence[str], workspace_mib: int) -> None:
    if workspace_mib <= 0:
        raise EngineError(f"workspace must be a positive number of MiB, got {workspace_mib}")
    unknown = [m for m in models if m not in ENCODERS]
    if unknown:
        raise EngineError(f"unknown engine model(s) {unknown}; expected some of {list(ENCODERS)}")


def build_all(
    spec: PipelineSpec,
    repo_dir: Path,
    *,
    build_dir: Path | None = None,
    cache_dir: Path | None = None,
    precision: str | None = None,
    workspace: int | None = None,
    models: Sequence[str] = ENCODERS,
    force: bool = False,
    progress: bool = True,
    runtime: RuntimeInfo | None = None,
) -> list[PlanMetadata]:
    """Build the plans of the encoders and the fusion head next to their graphs (``trimodal build-engines``).

    Reads ``<repo>/<model>/1/model.<precision>.onnx`` (or ``<build_dir>/onnx/<model>.<precision>.onnx``) and
    writes ``<repo>/<model>/1/model.plan`` + ``model.plan.json``. Never trains, exports or renders. Plans that
    are up to date (same graph hash, profile, precision, TensorRT version and GPU architecture) are kept
    unless ``force``. Every graph is located before TensorRT is touched.

    Args:
        spec: the pipeline spec (it must have rendered the repository's configs).
        repo_dir: the model repository; plans go to ``<model>/1/``.
        build_dir: a mounted build folder to read the graphs from (its ``engines/`` keeps the timing cache).
        cache_dir: where the persistent timing cache lives (default: ``<build_dir>/engines`` when a build
            folder is given, else none).
        precision: ``fp32``/``fp16``/``int8``; defaults to pipeline.yaml's.
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
    workspace_mib = int(workspace or spec.engines.workspace_mib)
    _check_models(models, workspace_mib)
    source = GraphSource(Path(repo_dir), None if build_dir is None else Path(build_dir))
    graphs = {m: source.existing_graph(m, engine_precision(spec, m, precision)) for m in models}
    import_tensorrt()  # the first call into TensorRT: a clear error where the bindings are missing
    runtime = runtime or detect_runtime()
    cache_dir = cache_dir or (None if build_dir is None else BuildLayout(Path(build_dir)).engines)
    cache = None if cache_dir is None else timing_cache_path(Path(cache_dir), runtime)
    settings = BuildSettings(workspace_mib, cache, runtime, progress)
    LOGGER.info("building %d strongly typed engine(s) from the %s, workspace %d MiB, TensorRT %s on %s (cc %s)",
                len(models), source.origin, workspace_mib, runtime.tensorrt_version, runtime.gpu_name,
                runtime.compute_capability)  # fmt: skip
    results: list[PlanMetadata] = []
    for position, model in enumerate(models, start=1):
        model_precision = engine_precision(spec, model, precision)
        plan_path = plan_path_for(repo_dir, spec, model, runtime)
        if not force and is_up_to_date(plan_path, graphs[model], spec, model, model_precision, runtime):
            LOGGER.info("[%d/%d] %s: %s is up to date", position, len(models), model, plan_path)
            results.append(read_metadata(plan_path))
            continue
        LOGGER.info("[%d/%d] %s", position, len(models), model)
        results.append(build_engine(graphs[model], plan_path, spec, model, precision=model_precision,
                                    settings=settings, onnx_origin=source.origin))  # fmt: skip
    return results


__all__ = [
    "REBUILD_COMMAND", "BuildSettings", "build_all", "build_engine", "needs_strongly_typed_flag", "parse_network",
    "progress_monitor",
]  # fmt: skip
