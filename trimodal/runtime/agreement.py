"""The ensemble's last step, written once: fused + per-modality probabilities -> the answer and its agreement signal.

Torch-free numpy, run by the ``postprocess`` Triton model (:mod:`trimodal.runtime.backends.postprocess`), by the
in-process pipeline (:func:`trimodal.runtime.pipeline.run_pipeline`) and by the training's evaluation, so the
three agree exactly. For a batch of samples:

* ``PROBABILITIES`` / ``LABEL``: the fused probabilities, unchanged;
* ``MODALITY_PROBABILITIES``: each modality's head probabilities, a row of NaN where the modality is absent
  (marked, never guessed);
* ``MODALITY_LABELS``: each present modality's top class name, ``b""`` where absent;
* ``AGREEMENT``: True when every present modality has the same top class (trivially with one modality);
* ``CONFLICT_SCORE``: over the pairs of present modalities whose top classes differ, the largest of the
  smaller of their two top probabilities (both heads must be sure for a high score; a head that shrugs at a
  noisy input does not raise it); 0 without such a pair;
* ``CONFLICT``: ``CONFLICT_SCORE >= threshold``.

Samples whose modalities are all absent are refused before this step (:func:`refuse_all_empty`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Mapping, Sequence

import numpy as np

from trimodal import contract
from trimodal.errors import PreprocessError

LOGGER = logging.getLogger(__name__)


def presence(tensors: Mapping[str, np.ndarray], masks: Sequence[str] = contract.MASKS) -> np.ndarray:
    """Boolean (B, M) presence of every modality, from the preprocessors' masks.

    Args:
        tensors: arrays by contract name, the masks among them (each (B, 1) or (B,)).
        masks: the mask names, in modality order.

    Returns:
        True where the modality is present (mask > 0.5).
    """
    return np.stack([np.asarray(tensors[name], dtype=np.float32).reshape(-1) > 0.5 for name in masks], axis=1)


def refuse_all_empty(tensors: Mapping[str, np.ndarray], masks: Sequence[str] = contract.MASKS) -> None:
    """Refuse a batch in which some sample has every modality empty (all its presence masks 0).

    Args:
        tensors: the batch, with the presence masks among its tensors.
        masks: the names of the presence masks.

    Raises:
        PreprocessError: naming the samples (Triton answers it as INVALID_ARGUMENT).
    """
    empty = np.flatnonzero(~presence(tensors, masks).any(axis=1))
    if empty.size:
        raise PreprocessError(
            f"IMAGE, TEXT, AUDIO: sample(s) {empty.tolist()} have every modality empty; expected at least one "
            "non-empty input (an empty element means that modality is absent)"
        )


def conflict_scores(heads: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Conflict score per sample (see the module docstring).

    Args:
        heads: float (B, M, C) per-modality class probabilities.
        present: bool (B, M).

    Returns:
        float32 (B,) in [0, 1].
    """
    top = heads.argmax(axis=2)
    confidence = heads.max(axis=2)
    score = np.zeros(len(heads), dtype=np.float32)
    for a, b in itertools.combinations(range(heads.shape[1]), 2):
        disagree = present[:, a] & present[:, b] & (top[:, a] != top[:, b])
        pair = np.minimum(confidence[:, a], confidence[:, b])
        score = np.where(disagree, np.maximum(score, pair), score)
    return score.astype(np.float32)


def agreement(heads: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Whether every present modality has the same top class (True with fewer than two present).

    Args:
        heads: float (B, M, C) per-modality class probabilities.
        present: bool (B, M).

    Returns:
        bool (B,).
    """
    top = heads.argmax(axis=2)
    reference = np.take_along_axis(top, present.argmax(axis=1)[:, None], axis=1)
    return np.all((top == reference) | ~present, axis=1)


def postprocess(tensors: Mapping[str, np.ndarray], classes: Sequence[str], threshold: float) -> dict[str, np.ndarray]:
    """The ensemble's answer for a batch whose samples each have at least one modality.

    Args:
        tensors: the masks, ``FUSED_PROBABILITIES`` (B, C) and ``HEAD_PROBABILITIES`` (B, M, C), by contract name.
        classes: the class names (for ``MODALITY_LABELS``).
        threshold: the conflict threshold (``multitask.conflict_threshold``).

    Returns:
        The seven answer tensors by contract name, with the batch dimension first.

    Raises:
        PreprocessError: if a sample has every modality empty.
    """
    refuse_all_empty(tensors)
    fused = np.asarray(tensors[contract.FUSED_PROBABILITIES], dtype=np.float32)
    heads = np.asarray(tensors[contract.HEAD_PROBABILITIES], dtype=np.float32)
    present = presence(tensors)
    names = np.array([name.encode("utf-8") for name in classes], dtype=np.object_)
    labels = np.where(present, names[heads.argmax(axis=2)], b"").astype(np.object_)
    score = conflict_scores(heads, present)
    return {
        contract.PROBABILITIES: fused,
        contract.LABEL: fused.copy(),
        contract.MODALITY_PROBABILITIES: np.where(present[:, :, None], heads, np.float32(np.nan)),
        contract.MODALITY_LABELS: labels,
        contract.AGREEMENT: agreement(heads, present)[:, None],
        contract.CONFLICT_SCORE: score[:, None],
        contract.CONFLICT: (score >= threshold)[:, None],
    }
