"""Model quality beyond the accuracy table: the image path's robustness and the conflict signal.

* **Robustness**: the test split with its images replaced by each variant of the held-out robustness set
  (:mod:`trimodal.training.data.robustness`), image alone and with the sample's text and audio.
* **Conflict detection**: the agreement outputs (:func:`trimodal.runtime.agreement.postprocess`, the served
  code) on deliberately mismatched samples built from the test split (one modality's features from a sample of
  another class; only modalities the dataset did not destroy, since a destroyed one shows no digit to disagree
  with) and on matched samples (every sample as it is, destroyed modalities included). A mismatched sample
  should be flagged (``CONFLICT``), a matched one should not.

Everything is computed on features, exactly as the server would compute it for the corresponding bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np

from trimodal import contract
from trimodal.runtime.agreement import postprocess
from trimodal.spec import MODALITIES, PipelineSpec
from trimodal.training.evaluate import subset_inputs, subset_name
from trimodal.training.features import FEATURE_TENSORS, MASK_TENSORS, EncodedSplit
from trimodal.training.loop import accuracy, predict

if TYPE_CHECKING:
    from trimodal.training.models.fusion import FusionClassifier

ROBUSTNESS_SUBSETS: tuple[tuple[str, ...], ...] = (("image",), MODALITIES)
ROBUSTNESS_MAX_DROP = 0.05
ALL_THREE_MIN = 0.97
FLAGGED_MIN = 0.95
FALSE_FLAG_MAX = 0.05
PAIRS: tuple[tuple[str, str], ...] = tuple(itertools.combinations(MODALITIES, 2))


def robustness(model: FusionClassifier, test: EncodedSplit, variants: dict[str, np.ndarray]) -> dict[str, Any]:
    """Accuracy on the test split with each variant's image features (image alone, and with text and audio).

    Args:
        model: a fusion head in eval mode.
        test: the encoded test split.
        variants: ``{variant: image features (N, D)}`` aligned with ``test``.

    Returns:
        ``{"clean" and each variant: {subset name: accuracy}}``.
    """
    rows = {"clean": test.tensors[contract.IMAGE_FEATURES], **variants}
    result = {}
    for name, features in rows.items():
        data = replace(test, tensors={**test.tensors, contract.IMAGE_FEATURES: features})
        result[name] = {
            subset_name(subset): accuracy(predict(lambda *t: model(*t)[0], subset_inputs(data, subset)), data.labels)
            for subset in ROBUSTNESS_SUBSETS
        }
    return result


def _partners(labels: np.ndarray, sources: np.ndarray, targets: np.ndarray, seed: int) -> np.ndarray:
    """For each source sample, a target sample of another class (deterministic, spread over the targets)."""
    order = np.random.default_rng([seed, 10]).permutation(targets)
    partners = np.empty(len(sources), dtype=np.int64)
    for k, source in enumerate(sources):
        offset = k
        while labels[order[offset % len(order)]] == labels[source]:
            offset += 1
        partners[k] = order[offset % len(order)]
    return partners


def _combine(data: EncodedSplit, picks: dict[str, np.ndarray], count: int) -> list[np.ndarray]:
    """Fusion inputs taking each listed modality's features from the given samples; the others absent."""
    feats, masks = [], []
    for modality in MODALITIES:
        name = FEATURE_TENSORS[modality]
        if modality in picks:
            feats.append(data.tensors[name][picks[modality]])
            masks.append(np.ones((count, 1), dtype=np.float32))
        else:
            feats.append(np.repeat(data.absent[name], count, axis=0))
            masks.append(np.zeros((count, 1), dtype=np.float32))
    return [*feats, *masks]


def _clean(data: EncodedSplit, modalities: Sequence[str]) -> np.ndarray:
    corrupted = data.corrupted if data.corrupted is not None else np.zeros((len(data), 3), dtype=bool)
    keep = np.ones(len(data), dtype=bool)
    for modality in modalities:
        index = MODALITIES.index(modality)
        keep &= ~corrupted[:, index] & (data.tensors[MASK_TENSORS[modality]][:, 0] > 0.5)
    return np.flatnonzero(keep)


def conflict_sets(data: EncodedSplit, seed: int) -> dict[str, tuple[list[np.ndarray], bool]]:
    """Matched and deliberately mismatched fusion inputs, each with whether it should be flagged.

    Args:
        data: an encoded split (with ``corrupted``).
        seed: the random seed of the pairings.

    Returns:
        ``{set name: (fusion inputs, mismatched)}``: per pair of modalities the matched pairs (every sample)
        and the mismatched ones (the first modality of a clean sample with the second of a clean sample of
        another class); all three as they are; image and text of one sample with the audio of another class.
    """
    everyone = np.arange(len(data))
    sets: dict[str, tuple[list[np.ndarray], bool]] = {}
    for first, second in PAIRS:
        sets[f"matched {first}+{second}"] = (_combine(data, {first: everyone, second: everyone}, len(data)), False)
        sources, targets = _clean(data, [first]), _clean(data, [second])
        partners = _partners(data.labels, sources, targets, seed)
        sets[f"mismatched {first} vs {second}"] = (
            _combine(data, {first: sources, second: partners}, len(sources)),
            True,
        )
    sets["matched image+text+audio"] = (_combine(data, dict.fromkeys(MODALITIES, everyone), len(data)), False)
    sources = _clean(data, ["image", "text"])
    partners = _partners(data.labels, sources, _clean(data, ["audio"]), seed)
    picks = {"image": sources, "text": sources, "audio": partners}
    sets["mismatched image+text vs audio"] = (_combine(data, picks, len(sources)), True)
    return sets


def answers(model: FusionClassifier, inputs: list[np.ndarray], spec: PipelineSpec) -> dict[str, np.ndarray]:
    """The ensemble's outputs for fusion inputs: the head (torch) then the served postprocess step.

    Args:
        model: a fusion head in eval mode.
        inputs: three feature arrays and three masks.
        spec: the pipeline spec (classes, conflict threshold).

    Returns:
        The postprocess outputs by contract name.
    """
    fused = predict(lambda *t: model(*t)[0], inputs)
    heads = predict(lambda *t: model(*t)[1], inputs)
    tensors = {**dict(zip(contract.MASKS, inputs[3:], strict=True)), contract.FUSED_PROBABILITIES: fused}
    tensors[contract.HEAD_PROBABILITIES] = heads
    return postprocess(tensors, spec.classes, spec.multitask.conflict_threshold)


def conflict_rates(model: FusionClassifier, data: EncodedSplit, spec: PipelineSpec) -> dict[str, dict[str, Any]]:
    """Share of flagged samples (``CONFLICT``) in every set of :func:`conflict_sets`.

    Args:
        model: a fusion head in eval mode.
        data: an encoded split (with ``corrupted``).
        spec: the pipeline spec.

    Returns:
        ``{set name: {"samples", "flagged", "mismatched", "agreement"}}`` (shares in [0, 1]).
    """
    result = {}
    for name, (inputs, mismatched) in conflict_sets(data, spec.seed).items():
        outputs = answers(model, inputs, spec)
        result[name] = {
            "samples": len(inputs[0]),
            "flagged": float(np.mean(outputs[contract.CONFLICT])),
            "agreement": float(np.mean(outputs[contract.AGREEMENT])),
            "mismatched": mismatched,
        }
    return result


def quality_targets(robust: dict[str, Any], conflicts: dict[str, dict[str, Any]]) -> dict[str, bool]:
    """The robustness and conflict-detection targets.

    Args:
        robust: from :func:`robustness` (test split).
        conflicts: from :func:`conflict_rates` (test split).

    Returns:
        ``{target description: met}``.
    """
    clean_image = robust["clean"]["image"]
    variants = {name: row for name, row in robust.items() if name != "clean"}
    full = subset_name(MODALITIES)
    flagged = [row["flagged"] for row in conflicts.values() if row["mismatched"]]
    false_flags = [row["flagged"] for row in conflicts.values() if not row["mismatched"]]
    return {
        "image alone on every robustness variant within 5 points of the clean test split": all(
            clean_image - row["image"] <= ROBUSTNESS_MAX_DROP for row in variants.values()
        ),
        "all three modalities >= 97% on every robustness variant": all(
            row[full] >= ALL_THREE_MIN for row in variants.values()
        ),
        "every mismatched set flagged >= 95%": min(flagged) >= FLAGGED_MIN,
        "every matched set flagged <= 5%": max(false_flags) <= FALSE_FLAG_MAX,
    }
