"""Evaluation of the fusion heads: accuracy per modality subset and the acceptance targets.

A modality outside the evaluated subset is sent exactly as the server sees an absent one: its encoder's
features for the preprocessor's output of an empty element, and mask 0.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from trimodal.spec import MODALITIES
from trimodal.training.features import FEATURE_TENSORS, MASK_TENSORS, EncodedSplit
from trimodal.training.loop import accuracy, predict

if TYPE_CHECKING:
    from torch import nn

LOGGER = logging.getLogger(__name__)


def modality_subsets() -> list[tuple[str, ...]]:
    """Every non-empty subset of the three modalities, singles first, then pairs, then all three.

    Returns:
        Seven tuples of modality names, in :data:`~trimodal.spec.MODALITIES` order.
    """
    return [combo for size in (1, 2, 3) for combo in itertools.combinations(MODALITIES, size)]


def subset_name(subset: Sequence[str]) -> str:
    """Row name of a modality subset, e.g. ``image+audio``."""
    return "+".join(subset)


def subset_inputs(data: EncodedSplit, subset: Sequence[str]) -> list[np.ndarray]:
    """The fusion head's inputs (features, then masks, in modality order) with the modalities outside ``subset`` absent.

    Args:
        data: one encoded split.
        subset: the present modalities.

    Returns:
        Three feature arrays and three (N, 1) masks; present modalities keep their real masks.
    """
    count = len(data)
    feats, masks = [], []
    for modality in MODALITIES:
        features = FEATURE_TENSORS[modality]
        if modality in subset:
            feats.append(data.tensors[features])
            masks.append(data.tensors[MASK_TENSORS[modality]])
        else:
            feats.append(np.repeat(data.absent[features], count, axis=0))
            masks.append(np.zeros((count, 1), dtype=np.float32))
    return [*feats, *masks]


def evaluate_subsets(model: nn.Module, data: EncodedSplit) -> dict[str, float]:
    """Accuracy of a fusion head for every non-empty modality subset.

    Args:
        model: a :class:`~trimodal.training.models.fusion.FusionClassifier` in eval mode.
        data: one encoded split (features, masks, labels and the absent-modality features).

    Returns:
        ``{subset_name: accuracy}`` for the seven subsets.
    """
    return {
        subset_name(subset): accuracy(predict(lambda *t: model(*t)[0], subset_inputs(data, subset)), data.labels)
        for subset in modality_subsets()
    }


def check_targets(test: dict[str, dict[str, float]], strategy: str) -> dict[str, bool]:
    """The acceptance targets for one strategy's test accuracies.

    Args:
        test: ``{strategy: {subset_name: accuracy}}``.
        strategy: the strategy to check.

    Returns:
        ``{target description: met}``.
    """
    acc = test[strategy]
    singles = {m: acc[m] for m in MODALITIES}
    best_single = max(singles.values())
    full = acc[subset_name(MODALITIES)]
    targets = {
        "all three modalities >= 97%": full >= 0.97,
        "every single modality alone <= 85%": all(v <= 0.85 for v in singles.values()),
        "all three beat the best single modality by >= 10 points": full - best_single >= 0.10,
    }
    for pair in itertools.combinations(MODALITIES, 2):
        targets[f"{subset_name(pair)} beats its best member"] = acc[subset_name(pair)] > max(acc[m] for m in pair)
    return targets
