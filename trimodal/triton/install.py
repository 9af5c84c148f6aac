"""Install build outputs into the model repository (ONNX graphs, tokenizer) and list what is missing."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from trimodal.contract import ENCODERS
from trimodal.errors import RepositoryError
from trimodal.layout import BuildLayout, RepositoryLayout, tokenizer_source
from trimodal.spec import PRECISIONS

LOGGER = logging.getLogger(__name__)


def install_artifacts(build_dir: Path, repo_dir: Path, tokenizer_file: Path | None = None) -> None:
    """Copy the ONNX graphs (every precision) and the tokenizer into the repository's version folders.

    Args:
        build_dir: the build folder holding ``onnx/<model>.onnx`` and ``<model>.<precision>.onnx``.
        repo_dir: the model repository folder.
        tokenizer_file: the tokenizer.json to serve (defaults to the packaged all-MiniLM-L6-v2 one).

    Raises:
        RepositoryError: if an ONNX file is missing.
    """
    build, repository = BuildLayout(Path(build_dir)), RepositoryLayout(Path(repo_dir))
    for model in ENCODERS:
        for precision in PRECISIONS:
            source = build.onnx_file(model, precision)
            if not source.exists():
                raise RepositoryError(f"missing {source}: run `trimodal build` first")
            _copy_if_changed(source, repository.onnx_file(model, precision))
    _copy_if_changed(Path(tokenizer_file or tokenizer_source()), repository.tokenizer)


def _copy_if_changed(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.read_bytes() == source.read_bytes():
        return
    tmp = target.with_suffix(target.suffix + ".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    LOGGER.info("installed %s", target)


def missing_artifacts(repo_dir: Path) -> list[Path]:
    """Artifacts the CPU target needs that are not in the repository yet.

    Args:
        repo_dir: the model repository folder.

    Returns:
        The missing files.
    """
    repository = RepositoryLayout(Path(repo_dir))
    needed = [repository.onnx_file(m, p) for m in ENCODERS for p in PRECISIONS] + [repository.tokenizer]
    return [path for path in needed if not path.exists()]
