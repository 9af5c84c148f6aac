"""Fusion heads: one :class:`~trimodal.training.models.fusion.FusionClassifier` per strategy, multi-task.

Each head is trained on the encoders' features (:class:`~trimodal.training.features.EncodedSplit`) with one
loss per task, weighted by ``spec.multitask.loss_weights``: the fused prediction (every batch drops each
present modality with probability ``spec.fusion.modality_dropout``, never all of them) and each modality's own
head (on the samples where that modality is present). Early stopping keeps the epoch with the best mean
validation accuracy of the fused prediction over the seven modality subsets.

Every strategy is trained as ``spec.multitask.auxiliary_losses`` says; the served strategy is also trained the
other way (same seeds), so that the metrics compare multi-task with single-task learning. A trained variant is
saved to ``build/checkpoints/fusion_<strategy>-<multitask|single>.pt``.
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


def variant_name(strategy: str, auxiliary: bool) -> str:
    """The name of a trained fusion variant: ``<strategy>-multitask`` or ``<strategy>-single``."""
    return f"{strategy}-{'multitask' if auxiliary else 'single'}"


def head_name(strategy: str, auxiliary: bool) -> str:
    """The checkpoint name of a trained fusion variant (``fusion_<strategy>-<multitask|single>``)."""
    return f"fusion_{variant_name(strategy, auxiliary)}"


def served_variant(spec: PipelineSpec) -> str:
    """The variant the repository serves: the spec's strategy, trained as ``multitask.auxiliary_losses`` says."""
    return variant_name(spec.fusion.strategy, spec.multitask.auxiliary_losses)


def trained_variants(spec: PipelineSpec) -> list[tuple[str, bool]]:
    """``(strategy, auxiliary)`` of every variant to train: each strategy as the spec says, then the ablation."""
    auxiliary = spec.multitask.auxiliary_losses
    return [(strategy, auxiliary) for strategy in spec.fusion.train_strategies] + [
        (spec.fusion.strategy, not auxiliary)
    ]


def multitask_loss(
    fused: torch.Tensor, heads: torch.Tensor, labels: torch.Tensor, present: torch.Tensor, spec: PipelineSpec
) -> torch.Tensor:
    """The weighted sum of the fused cross-entropy and each modality head's (over its present samples).

    Args:
        fused: fused logits (B, C).
        heads: head logits (B, 3, C), rows in modality order.
        labels: int64 (B,).
        present: float (B, 3), 1 where the modality is present.
        spec: the pipeline spec (``multitask.loss_weights``).

    Returns:
        The scalar loss.
    """
    from torch.nn import functional

    weights = spec.multitask.loss_weights
    loss = weights["fusion"] * functional.cross_entropy(fused, labels)
    for index, modality in enumerate(MODALITIES):
        mask = present[:, index]
        per_sample = functional.cross_entropy(heads[:, index], labels, reduction="none")
        loss = loss + weights[modality] * (per_sample * mask).sum() / mask.sum().clamp(min=1.0)
    return loss


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
    auxiliary: bool = True,
    progress: bool = True,
) -> tuple[FusionClassifier, dict[str, Any]]:
    """Train one fusion head and its modality heads (seeded with ``spec.seed``; the same draws either way).

    Early stopping selects the epoch with the best mean validation accuracy over the seven modality subsets.

    Args:
        strategy: fusion strategy.
        train: the training split's features, masks and labels.
        val: the same for the validation split, with the absent-modality features as the server sees them.
        spec: the pipeline spec.
        auxiliary: multi-task (the modality heads' losses also train the shared projections); False trains the
            heads on detached projections (single-task baseline).
        progress: show a progress bar.

    Returns:
        The trained head (eval mode) and ``{"best_epoch", "epochs", "val_mean_subset_accuracy", "seconds"}``.
    """
    import torch

    from trimodal.training.models import build_fusion

    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    model = build_fusion(spec, strategy)
    feats = [torch.from_numpy(train.tensors[FEATURE_TENSORS[m]]) for m in MODALITIES]
    present = torch.from_numpy(np.concatenate([train.tensors[MASK_TENSORS[m]] for m in MODALITIES], axis=1))
    labels = torch.from_numpy(train.labels)
    generator = torch.Generator().manual_seed(spec.seed + 1)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        kept = modality_dropout(present[idx], spec.fusion.modality_dropout, generator)
        masks = [present[idx, i : i + 1] for i in range(3)]
        fused, heads = model.multitask_logits(
            [f[idx] for f in feats], masks, [kept[:, i : i + 1] for i in range(3)], detach_heads=not auxiliary
        )
        return multitask_loss(fused, heads, labels[idx], present[idx], spec)

    cfg = spec.training
    name = variant_name(strategy, auxiliary)
    fitted = fit(
        model,
        batch_loss,
        len(labels),
        lambda: float(np.mean(list(evaluate_subsets(model, val).values()))),
        Schedule(cfg.fusion_epochs, cfg.batch_size, cfg.learning_rate, FUSION_PCT_START, FUSION_PATIENCE),
        generator=generator,
        desc=f"train fusion {name}",
        progress=progress,
    )
    info = {
        "best_epoch": fitted.best_epoch,
        "epochs": len(fitted.history),
        "val_mean_subset_accuracy": fitted.best_score,
        "auxiliary_losses": auxiliary,
        "seconds": seconds_since(started),
    }
    LOGGER.info("fusion %s: val mean subset accuracy %.4f (epoch %d)", name, fitted.best_score, fitted.best_epoch)
    return model, info


def fusion_checkpoint(model: FusionClassifier, strategy: str, metrics: dict[str, Any]) -> dict[str, Any]:
    """What ``fusion_<variant>.pt`` holds: ``state_dict``, ``config`` (the constructor's arguments), ``metrics``."""
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
) -> tuple[dict[str, dict[str, Any]], dict[str, FusionClassifier]]:
    """Train, evaluate and save every variant of :func:`trained_variants`.

    Args:
        spec: the pipeline spec.
        splits: the encoded train/val/test splits.
        build: the build folders; writes ``checkpoints/fusion_<variant>.pt``.
        seconds: wall times, ``fusion_<variant>`` is added per variant.
        progress: show progress bars.

    Returns:
        ``{"val": {variant: {subset: accuracy}}, "test": {...}, "fusion": {variant: training info}}`` and the
        trained models by variant name.
    """
    import torch

    result: dict[str, dict[str, Any]] = {"val": {}, "test": {}, "fusion": {}}
    models: dict[str, FusionClassifier] = {}
    build.checkpoints.mkdir(parents=True, exist_ok=True)
    for strategy, auxiliary in trained_variants(spec):
        name = variant_name(strategy, auxiliary)
        with timed(seconds, f"fusion_{name}"):
            model, result["fusion"][name] = train_fusion(
                strategy, splits["train"], splits["val"], spec, auxiliary=auxiliary, progress=progress
            )
            scores = {split: evaluate_subsets(model, splits[split]) for split in ("val", "test")}
            result["val"][name], result["test"][name] = scores["val"], scores["test"]
            torch.save(fusion_checkpoint(model, strategy, scores), build.checkpoint(head_name(strategy, auxiliary)))
        models[name] = model
    return result, models
