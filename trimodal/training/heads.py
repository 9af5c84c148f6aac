"""Fusion heads: one :class:`~trimodal.training.models.fusion.FusionClassifier` per strategy, with modality dropout.

Each head is trained on the encoders' features (:class:`~trimodal.training.features.EncodedSplit`); every
batch drops each present modality with probability ``spec.fusion.modality_dropout`` (never all of them), and
early stopping keeps the epoch with the best mean validation accuracy over the seven modality subsets. Each
head is saved to ``build/checkpoints/fusion_<strategy>.pt``.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from trimodal.layout import BuildLayout
from trimodal.spec import MODALITIES, PipelineSpec
from trimodal.training.evaluate import evaluate_subsets
from trimodal.training.features import FEATURE_TENSORS, MASK_TENSORS, EncodedSplit
from trimodal.training.loop import Schedule, fit, seconds_since, timed

if TYPE_CHECKING:
    import torch

    from trimodal.training.models.fusion import FusionClassifier

LOGGER = logging.getLogger(__name__)

FUSION_PATIENCE = 8
FUSION_PCT_START = 0.1


def head_name(strategy: str) -> str:
    """The checkpoint name of a strategy's trained head (``fusion_<strategy>``)."""
    return f"fusion_{strategy}"


def modality_dropout(present: torch.Tensor, prob: float, generator: torch.Generator) -> torch.Tensor:
    """Randomly drop modalities, never all of a sample's present ones.

    Each present modality is dropped independently with probability ``prob``; a sample that would lose all
    of them keeps one of its present modalities, chosen uniformly.

    Args:
        present: float (B, 3), 1 where the modality is present.
        prob: drop probability per modality.
        generator: torch random generator (determinism).

    Returns:
        float (B, 3) masks, a subset of ``present``, non-empty wherever ``present`` is.
    """
    import torch

    keep = (torch.rand(present.shape, generator=generator) >= prob) & (present > 0.5)
    empty = (keep.sum(dim=1) == 0) & ((present > 0.5).sum(dim=1) > 0)
    if bool(empty.any()):
        noise = torch.rand(present.shape, generator=generator) * (present > 0.5)
        rescue = torch.zeros_like(keep)
        rescue[torch.arange(len(present)), noise.argmax(dim=1)] = True
        keep = keep | (rescue & empty.unsqueeze(1))
    return keep.to(present.dtype)


def train_fusion(
    strategy: str,
    train: EncodedSplit,
    val: EncodedSplit,
    spec: PipelineSpec,
    *,
    progress: bool = True,
) -> tuple[FusionClassifier, dict[str, Any]]:
    """Train one fusion head on encoder features with modality dropout (seeded with ``spec.seed``).

    Early stopping selects the epoch with the best mean validation accuracy over the seven modality subsets.

    Args:
        strategy: fusion strategy.
        train: the training split's features, masks and labels.
        val: the same for the validation split, with the absent-modality features as the server sees them.
        spec: the pipeline spec.
        progress: show a progress bar.

    Returns:
        The trained head (eval mode) and ``{"best_epoch", "epochs", "val_mean_subset_accuracy", "seconds"}``.
    """
    import torch
    from torch import nn

    from trimodal.training.models import build_fusion

    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    model = build_fusion(spec, strategy)
    feats = [torch.from_numpy(train.tensors[FEATURE_TENSORS[m]]) for m in MODALITIES]
    present = torch.from_numpy(np.concatenate([train.tensors[MASK_TENSORS[m]] for m in MODALITIES], axis=1))
    labels = torch.from_numpy(train.labels)
    generator = torch.Generator().manual_seed(spec.seed + 1)
    loss_fn = nn.CrossEntropyLoss()

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        masks = modality_dropout(present[idx], spec.fusion.modality_dropout, generator)
        logits = model.logits(*(f[idx] for f in feats), masks[:, 0:1], masks[:, 1:2], masks[:, 2:3])
        return loss_fn(logits, labels[idx])

    cfg = spec.training
    fitted = fit(
        model,
        batch_loss,
        len(labels),
        lambda: float(np.mean(list(evaluate_subsets(model, val).values()))),
        Schedule(cfg.fusion_epochs, cfg.batch_size, cfg.learning_rate, FUSION_PCT_START, FUSION_PATIENCE),
        generator=generator,
        desc=f"train fusion {strategy}",
        progress=progress,
    )
    info = {
        "best_epoch": fitted.best_epoch,
        "epochs": len(fitted.history),
        "val_mean_subset_accuracy": fitted.best_score,
        "seconds": seconds_since(started),
    }
    LOGGER.info("fusion %s: val mean subset accuracy %.4f (epoch %d)", strategy, fitted.best_score, fitted.best_epoch)
    return model, info


def fusion_checkpoint(model: FusionClassifier, strategy: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """What ``fusion_<strategy>.pt`` holds: ``state_dict``, ``config`` (the constructor's arguments), ``metrics``."""
    return {
        "state_dict": model.state_dict(),
        "config": {
            "strategy": strategy,
            "feature_dims": list(model.feature_dims),
            "hidden_dim": model.hidden_dim,
            "num_classes": model.num_classes,
        },
        "metrics": metrics,
    }


def train_heads(
    spec: PipelineSpec,
    splits: dict[str, EncodedSplit],
    build: BuildLayout,
    seconds: dict[str, float],
    *,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Train, evaluate and save one head per strategy of ``spec.fusion.train_strategies``.

    Args:
        spec: the pipeline spec.
        splits: the encoded train/val/test splits.
        build: the build folders; writes ``checkpoints/fusion_<strategy>.pt``.
        seconds: wall times, ``fusion_<strategy>`` is added per strategy.
        progress: show progress bars.

    Returns:
        ``{"val": {strategy: {subset: accuracy}}, "test": {...}, "fusion": {strategy: training info}}``.
    """
    import torch

    result: dict[str, dict[str, Any]] = {"val": {}, "test": {}, "fusion": {}}
    build.checkpoints.mkdir(parents=True, exist_ok=True)
    for strategy in spec.fusion.train_strategies:
        with timed(seconds, head_name(strategy)):
            model, result["fusion"][strategy] = train_fusion(
                strategy, splits["train"], splits["val"], spec, progress=progress
            )
            scores = {split: evaluate_subsets(model, splits[split]) for split in ("val", "test")}
            result["val"][strategy], result["test"][strategy] = scores["val"], scores["test"]
            torch.save(fusion_checkpoint(model, strategy, scores), build.checkpoint(head_name(strategy)))
    return result
