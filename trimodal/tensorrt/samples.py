"""Preprocessed samples of a dataset split: the accuracy check's inputs.

The samples go through :class:`trimodal.runtime.pipeline.Preprocessor` (what the server's preprocessors run)
with the tokenizer the repository serves (``preprocess_text/1/tokenizer.json``), so neither the build extra
nor ``TRIMODAL_TOKENIZER`` is needed inside the GPU images. The dataset reader is imported lazily; it needs
numpy and Pillow only (no torch).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from trimodal.errors import EngineError
from trimodal.layout import BuildLayout, RepositoryLayout, tokenizer_source
from trimodal.runtime.pipeline import Feeds, Preprocessor
from trimodal.spec import PipelineSpec

LOGGER = logging.getLogger(__name__)

Columns = tuple[list[bytes], list[str], list[bytes], np.ndarray]
"""``(images, texts, audio, labels)`` of some samples."""


def subset(split: Any, count: int, seed: int) -> Columns:
    """A deterministic random subset of a split, in the split's order.

    Args:
        split: a :class:`trimodal.training.data.dataset.Split` (``images``, ``texts``, ``audio``, ``labels``).
        count: how many samples (all when the split is smaller).
        seed: the subset's seed.

    Returns:
        ``(images, texts, audio, labels)`` of the chosen samples.
    """
    total = len(split.labels)
    rng = np.random.default_rng(seed)
    chosen = np.sort(rng.permutation(total)[: min(count, total)])
    pick = lambda column: [column[i] for i in chosen]  # noqa: E731
    labels = np.asarray(split.labels, dtype=np.int64)[chosen]
    return pick(split.images), pick(split.texts), pick(split.audio), labels


def repository_tokenizer(repo_dir: Path | None) -> Path:
    """The tokenizer.json the repository serves, else the one :func:`~trimodal.layout.tokenizer_source` finds.

    Raises:
        PreprocessError: if there is none (the message names TEXT and where it looked).
    """
    if repo_dir is not None and RepositoryLayout(Path(repo_dir)).tokenizer.is_file():
        return RepositoryLayout(Path(repo_dir)).tokenizer
    return tokenizer_source()


def encoder_inputs(
    spec: PipelineSpec,
    build_dir: Path,
    split: str,
    count: int,
    seed: int | None = None,
    *,
    repo_dir: Path | None = None,
) -> tuple[Feeds, np.ndarray]:
    """Preprocess ``count`` samples of a dataset split exactly as the server's preprocessors do.

    Args:
        spec: the pipeline spec.
        build_dir: the build folder holding the dataset.
        split: ``"train"``, ``"val"`` or ``"test"``.
        count: how many samples (a deterministic random subset; all when the split is smaller).
        seed: subset seed (defaults to the spec's seed).
        repo_dir: the model repository whose tokenizer.json to use (else the installed one).

    Returns:
        ``(tensors, labels)``: every preprocessor output by tensor name (IMAGE_TENSOR, INPUT_IDS,
        ATTENTION_MASK, AUDIO_TENSOR and the three masks), batch first, in contract dtypes.

    Raises:
        EngineError: if the split is empty.
    """
    from trimodal.training.data.dataset import load_split

    if not BuildLayout(Path(build_dir)).data.is_dir():
        raise EngineError(f"no dataset in {BuildLayout(Path(build_dir)).data}: mount the build folder with --build-dir")
    loaded = load_split(Path(build_dir), split)
    if len(loaded.labels) == 0:
        raise EngineError(f"the {split} split in {build_dir} is empty")
    images, texts, audio, labels = subset(loaded, count, spec.seed if seed is None else seed)
    return Preprocessor(spec, repository_tokenizer(repo_dir))(images, texts, audio), labels
