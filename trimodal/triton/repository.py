"""Render the Triton model repository from the spec: the configs of :mod:`trimodal.triton.config` -> text_format.

``render`` writes them (and the Python-backend shims and label files) into the repository; ``stale_files``
lists committed files that differ from a fresh render.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from trimodal import contract
from trimodal.contract import ENCODERS, ENSEMBLE, POSTPROCESS, PREPROCESSORS
from trimodal.layout import CONFIG_FILE
from trimodal.spec import PipelineSpec
from trimodal.triton.config import (
    CPU_CONFIG_NAME,
    cpu_config,
    ensemble_config,
    gpu_config,
    postprocess_config,
    preprocess_config,
)
from trimodal.triton.validate import validate_ensemble

LOGGER = logging.getLogger(__name__)


HEADER = "# Rendered from pipeline.yaml by trimodal.triton.repository; do not edit (run `trimodal render`).\n"
SHIM_TEMPLATE_MODULE = {
    "preprocess_image": "trimodal.runtime.backends.preprocess:PreprocessImage",
    "preprocess_text": "trimodal.runtime.backends.preprocess:PreprocessText",
    "preprocess_audio": "trimodal.runtime.backends.preprocess:PreprocessAudio",
    "onnx": "trimodal.runtime.backends.onnx_model:OnnxModel",
    POSTPROCESS: "trimodal.runtime.backends.postprocess:Postprocess",
}


@dataclass(frozen=True)
class RenderedFile:
    """One file of the rendered repository, relative to the repository root."""

    path: Path
    text: str


def _to_text(config: mc.ModelConfig) -> str:
    return HEADER + text_format.MessageToString(config)


def shim_source(target: str) -> str:
    """The model.py of a Python-backend model whose code is ``module:Class`` in this package."""
    module, cls = target.split(":")
    return (
        '"""Triton Python-backend entry point, rendered by trimodal.triton.repository.\n\n'
        f'The code is in {module}.\n"""\n\n'
        f"from {module} import {cls} as TritonPythonModel\n\n"
        '__all__ = ["TritonPythonModel"]\n'
    )


def render_files(spec: PipelineSpec) -> list[RenderedFile]:
    """Every committed file of the model repository, rendered from the spec.

    Args:
        spec: the pipeline spec.

    Returns:
        Files with paths relative to the repository root.
    """
    ios = contract.model_io(spec)
    labels = "".join(f"{name}\n" for name in spec.classes)
    files = []
    for model in PREPROCESSORS:
        files.append(RenderedFile(Path(model, CONFIG_FILE), _to_text(preprocess_config(spec, model, ios[model]))))
        files.append(RenderedFile(Path(model, "1", "model.py"), shim_source(SHIM_TEMPLATE_MODULE[model])))
    for model in ENCODERS:
        files.append(RenderedFile(Path(model, CONFIG_FILE), _to_text(gpu_config(spec, model, ios[model]))))
        cpu_path = Path(model, "configs", f"{CPU_CONFIG_NAME}.pbtxt")
        files.append(RenderedFile(cpu_path, _to_text(cpu_config(spec, model, ios[model]))))
        files.append(RenderedFile(Path(model, "1", "model.py"), shim_source(SHIM_TEMPLATE_MODULE["onnx"])))
    files.append(RenderedFile(Path(POSTPROCESS, CONFIG_FILE), _to_text(postprocess_config(spec, ios[POSTPROCESS]))))
    files.append(RenderedFile(Path(POSTPROCESS, "1", "model.py"), shim_source(SHIM_TEMPLATE_MODULE[POSTPROCESS])))
    files.append(RenderedFile(Path(POSTPROCESS, contract.LABELS_FILE), labels))
    files.append(RenderedFile(Path(ENSEMBLE, CONFIG_FILE), _to_text(ensemble_config(spec, ios))))
    files.append(RenderedFile(Path(ENSEMBLE, contract.LABELS_FILE), labels))
    files.append(RenderedFile(Path(ENSEMBLE, "1", ".gitkeep"), ""))
    return files


def render(spec: PipelineSpec, repo_dir: Path) -> list[Path]:
    """Write the rendered configs into ``repo_dir`` (artifacts such as model.onnx are left alone).

    Args:
        spec: the pipeline spec.
        repo_dir: the model repository folder.

    Returns:
        The files written.
    """
    validate_ensemble(spec)
    written = []
    for rendered in render_files(spec):
        target = repo_dir / rendered.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text(encoding="utf-8") != rendered.text:
            target.write_text(rendered.text, encoding="utf-8")
            written.append(target)
    LOGGER.info("rendered %d file(s) into %s (%d changed)", len(render_files(spec)), repo_dir, len(written))
    return written


def stale_files(spec: PipelineSpec, repo_dir: Path) -> list[Path]:
    """Committed files that differ from a fresh render (empty when the repository is up to date).

    Args:
        spec: the pipeline spec.
        repo_dir: the model repository folder.

    Returns:
        Relative paths of missing or different files.
    """
    stale = []
    for rendered in render_files(spec):
        target = repo_dir / rendered.path
        if not target.exists() or target.read_text(encoding="utf-8") != rendered.text:
            stale.append(rendered.path)
    return stale
