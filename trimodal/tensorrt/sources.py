"""Which ONNX graph a plan is built from, and with which precision (no TensorRT needed).

Precision lives in the graph (strongly typed builds): ``model.onnx`` is fp32, ``model.fp16.onnx`` computes in
half precision with fp32 inputs/outputs, ``model.int8.onnx`` carries Q/DQ nodes. The GPU build reads them from
the model repository it writes the plans into (``<repo>/<model>/1/model.<precision>.onnx``), or from a mounted
build folder (``<build>/onnx/<model>.<precision>.onnx``, fp32: ``<model>.onnx``) when one is given.

The builder also refuses a pipeline.yaml that did not render the repository's configs (it never re-renders):
plans built from another spec would get profiles that disagree with the config.pbtxt Triton loads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from trimodal.contract import ENCODERS
from trimodal.errors import EngineError
from trimodal.layout import CONFIG_FILE, BuildLayout, RepositoryLayout
from trimodal.spec import PipelineSpec

LOGGER = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8")
PRODUCE_GRAPHS = (
    "`trimodal build` (CPU machine with the build extra) writes the precision graphs into model_repository/; "
    "copy the repository (or mount the build folder with --build-dir) again"
)


def check_precision(precision: str) -> None:
    """Refuse a precision the builder does not know.

    Raises:
        EngineError: naming the precisions it knows.
    """
    if precision not in PRECISIONS:
        raise EngineError(f"precision {precision!r}: expected one of {list(PRECISIONS)}")


def engine_precision(spec: PipelineSpec, model: str, override: str | None = None) -> str:
    """The precision the GPU target builds ``model`` at: ``override`` (``--precision``), else pipeline.yaml's.

    Raises:
        EngineError: for an unknown precision.
    """
    precision = override or spec.precision.of(model, "gpu")
    check_precision(precision)
    return precision


@dataclass(frozen=True)
class GraphSource:
    """Where the ONNX graphs come from: the model repository, or a build folder when one is given."""

    repository: Path
    build_dir: Path | None = None

    @property
    def origin(self) -> str:
        """``"repository"`` or ``"build"``: recorded in the plan metadata."""
        return "repository" if self.build_dir is None else "build"

    def graph(self, model: str, precision: str) -> Path:
        """The ONNX graph of ``model`` at ``precision`` (it may not exist)."""
        check_precision(precision)
        if self.build_dir is None:
            return RepositoryLayout(Path(self.repository)).onnx_file(model, precision)
        name = f"{model}.onnx" if precision == "fp32" else f"{model}.{precision}.onnx"
        return BuildLayout(Path(self.build_dir)).onnx / name

    def existing_graph(self, model: str, precision: str) -> Path:
        """The graph of ``model`` at ``precision``.

        Raises:
            EngineError: naming the missing file and how to produce it.
        """
        path = self.graph(model, precision)
        if not path.is_file():
            raise EngineError(
                f"{model}: missing {precision} ONNX graph {path} (the GPU build never trains or exports); "
                f"{PRODUCE_GRAPHS}, or build another precision with --precision"
            )
        return path


def check_spec_matches_repository(spec: PipelineSpec, repo_dir: Path, spec_path: Path | None = None) -> None:
    """Refuse a pipeline.yaml whose engine configs differ from the repository's config.pbtxt files.

    Args:
        spec: the spec the plans' profiles would be derived from.
        repo_dir: the model repository the plans go into.
        spec_path: where the spec was read from (named in the message).

    Raises:
        EngineError: naming the first differing config and how to fix it.
    """
    from trimodal.triton.repository import render_files

    wanted = {str(f.path): f.text for f in render_files(spec)}
    for model in ENCODERS:
        relative = str(Path(model, CONFIG_FILE))
        target = Path(repo_dir) / relative
        if not target.is_file():
            raise EngineError(f"{target} is missing: copy the rendered model repository (`trimodal render`) first")
        if target.read_text(encoding="utf-8") != wanted[relative]:
            raise EngineError(
                f"{target} was not rendered from {spec_path or 'this pipeline.yaml'} (the engine build never "
                "re-renders): point --spec / TRIMODAL_SPEC at the pipeline.yaml that rendered the repository, or "
                "run `trimodal render` with this one and copy the repository again"
            )
