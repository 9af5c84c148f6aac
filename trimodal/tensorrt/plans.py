"""Where plans and builder caches live, and whether a plan is current (no TensorRT needed).

Layout written by :func:`trimodal.tensorrt.builder.build_all` (``trimodal build-engines``)::

    model_repository/<model>/1/model.<precision>.onnx  the graph it is built from (model.onnx for fp32)
    model_repository/<model>/1/model.plan              (or model_sm86.plan when per-architecture plans are listed)
    model_repository/<model>/1/model.plan.json         metadata: TensorRT version, GPU, profiles, precision,
                                                       graph hash, per-layer precision summary
    <cache dir>/timing-trt<version>-sm<cc>.cache       persistent timing cache (shared by all models), kept in
                                                       <build dir>/engines/ when a build folder is mounted
"""

from __future__ import annotations

import logging
from pathlib import Path

from trimodal.errors import EngineError
from trimodal.layout import RepositoryLayout
from trimodal.spec import PipelineSpec
from trimodal.tensorrt.metadata import read_metadata, sha256_file
from trimodal.tensorrt.profiles import profile_shapes
from trimodal.tensorrt.runtime import RuntimeInfo
from trimodal.tensorrt.sources import PRECISIONS, check_precision
from trimodal.triton.config import plan_filename

LOGGER = logging.getLogger(__name__)

REBUILD_COMMAND = "trimodal build-engines"


def plan_path_for(repo_dir: Path, spec: PipelineSpec, model: str, runtime: RuntimeInfo, version: int = 1) -> Path:
    """Where the plan for ``runtime``'s GPU goes: ``<repo>/<model>/<version>/model.plan`` or ``model_smXY.plan``.

    Raises:
        EngineError: when per-architecture plans are configured but this GPU's architecture is not listed.
    """
    ccs = spec.engines.compute_capabilities
    if ccs and runtime.compute_capability not in ccs:
        raise EngineError(
            f"this GPU ({runtime.gpu_name}, compute capability {runtime.compute_capability}) is not listed in "
            f'engines.compute_capabilities {ccs} of pipeline.yaml; add "{runtime.compute_capability}" there, '
            f"run `trimodal render`, then `{REBUILD_COMMAND}`"
        )
    filename = plan_filename(runtime.compute_capability if ccs else None)
    return RepositoryLayout(Path(repo_dir)).version_dir(model, str(version)) / filename


def is_up_to_date(
    plan_path: Path, onnx_path: Path, spec: PipelineSpec, model: str, precision: str, runtime: RuntimeInfo
) -> bool:
    """Whether an existing plan was built from this ONNX graph, spec profile, precision, TensorRT and GPU."""
    if not plan_path.exists():
        return False
    try:
        meta = read_metadata(plan_path)
    except EngineError:
        return False
    return (
        meta.precision == precision
        and meta.tensorrt_version == runtime.tensorrt_version
        and meta.compute_capability == runtime.compute_capability
        and meta.profiles == profile_shapes(spec, model)
        and onnx_path.exists()
        and meta.onnx_sha256 == sha256_file(onnx_path)
        and meta.plan_sha256 == sha256_file(plan_path)
    )


def timing_cache_path(cache_dir: Path, runtime: RuntimeInfo) -> Path:
    """The persistent timing cache for one TensorRT version and GPU architecture, in ``cache_dir``."""
    return Path(cache_dir) / f"timing-trt{runtime.tensorrt_version}-{runtime.sm}.cache"


__all__ = ["PRECISIONS", "REBUILD_COMMAND", "check_precision", "is_up_to_date", "plan_path_for", "timing_cache_path"]
