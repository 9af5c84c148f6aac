"""Encoders: image and audio pretraining (temporary linear head), frozen text embeddings, features of every split.

The image and the audio encoder are each pretrained with a temporary linear head (cross-entropy with label
smoothing, early stop on validation accuracy) and saved to ``build/checkpoints/<modality>_encoder.pt``; the
image encoder sees randomly augmented training images (:mod:`trimodal.training.augment`). The
text encoder is the pretrained all-MiniLM-L6-v2, frozen: every text is embedded once (batched, cached under
``build/features``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np

from trimodal import contract
from trimodal.layout import BuildLayout
from trimodal.spec import PipelineSpec
from trimodal.training.features import (
    INPUT_TENSORS,
    PREPROCESS_VERSION,
    Arrays,
    fingerprint,
    present_samples,
    prune_cache,
    save_npz,
)
from trimodal.training.loop import Schedule, accuracy, fit, predict, seconds_since

if TYPE_CHECKING:
    import torch
    from torch import nn

    from trimodal.runtime.pipeline import Feeds

LOGGER = logging.getLogger(__name__)

ENCODER_PATIENCE = 3
ENCODER_PCT_START = 0.2
LABEL_SMOOTHING = 0.05
TEXT_BATCH = 128
TEXT_CACHE_VERSION = "text-v2"
ABSENT = "absent"


def train_encoder(
    encoder: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    spec: PipelineSpec,
    *,
    name: str,
    augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain one encoder with a temporary linear head (cross-entropy, early stop on validation accuracy).

    The encoder is left in eval mode with the weights of the best validation epoch.

    Args:
        encoder: the module, ``(B, ...) -> (B, feature_dim)``; must have a ``feature_dim`` attribute.
        train: ``(inputs, labels)`` of the present training samples.
        val: ``(inputs, labels)`` of the present validation samples.
        spec: the pipeline spec (``training`` hyper-parameters, ``seed``, classes).
        name: for logs and progress bars.
        augment: ``augment(batch, generator)`` applied to every training batch (None = none); its generator is
            seeded with ``spec.seed + 2``.
        progress: show a progress bar.

    Returns:
        ``{"best_epoch", "epochs", "val_accuracy", "train_accuracy", "history", "seconds"}``.
    """
    import torch
    from torch import nn

    started = time.perf_counter()
    model = nn.Sequential(encoder, nn.Linear(encoder.feature_dim, spec.num_classes))
    x_train, y_train = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    loss_fn = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    augment_generator = torch.Generator().manual_seed(spec.seed + 2)

    def batch_loss(idx: torch.Tensor) -> torch.Tensor:
        batch = x_train[idx] if augment is None else augment(x_train[idx], augment_generator)
        return loss_fn(model(batch), y_train[idx])

    cfg = spec.training
    fitted = fit(
        model,
        batch_loss,
        len(y_train),
        lambda: accuracy(predict(model, [val[0]]), val[1]),
        Schedule(cfg.encoder_epochs, cfg.batch_size, cfg.learning_rate, ENCODER_PCT_START, ENCODER_PATIENCE),
        generator=torch.Generator().manual_seed(spec.seed),
        desc=f"train {name}",
        progress=progress,
    )
    train_acc = accuracy(predict(model, [train[0]]), train[1])
    history = [{"epoch": h["epoch"], "loss": h["loss"], "val_accuracy": h["score"]} for h in fitted.history]
    result = {
        "best_epoch": fitted.best_epoch,
        "epochs": len(history),
        "val_accuracy": fitted.best_score,
        "train_accuracy": train_acc,
        "history": history,
        "seconds": seconds_since(started),
    }
    LOGGER.info(
        "%s: val accuracy %.4f (epoch %d), train accuracy %.4f, %.1fs",
        name,
        fitted.best_score,
        fitted.best_epoch,
        train_acc,
        result["seconds"],
    )
    return result


def encoder_config(modality: str, spec: PipelineSpec) -> dict[str, Any]:
    """The ``config`` saved with an image or audio encoder checkpoint (its constructor's sizes)."""
    if modality == "image":
        return {"size": spec.modalities.image.size, "feature_dim": spec.modalities.image.feature_dim}
    audio = spec.modalities.audio
    return {"n_mels": audio.n_mels, "n_frames": audio.n_frames, "feature_dim": audio.feature_dim}


def pretrain_encoder(
    modality: str, spec: PipelineSpec, arrays: dict[str, Arrays], build: BuildLayout, *, progress: bool = True
) -> tuple[nn.Module, dict[str, Any]]:
    """Build, pretrain and save the image or audio encoder (seeded with ``spec.seed``).

    Args:
        modality: ``image`` or ``audio``.
        spec: the pipeline spec.
        arrays: the preprocessed splits (:func:`~trimodal.training.features.load_features`).
        build: the build folders; writes ``checkpoints/<modality>_encoder.pt``.
        progress: show a progress bar.

    Returns:
        The encoder (eval mode) and its training metrics (see :func:`train_encoder`).
    """
    import torch

    from trimodal.training.models import build_encoder, encoder_name

    name = encoder_name(modality)
    torch.manual_seed(spec.seed)
    encoder = build_encoder(name, spec)
    from trimodal.training.augment import augment_images

    train, val = present_samples(arrays["train"], modality), present_samples(arrays["val"], modality)
    augment = augment_images if modality == "image" else None
    info = train_encoder(encoder, train, val, spec, name=name, augment=augment, progress=progress)
    encoder.eval()
    build.checkpoints.mkdir(parents=True, exist_ok=True)
    checkpoint = {"state_dict": encoder.state_dict(), "config": encoder_config(modality, spec), "metrics": info}
    torch.save(checkpoint, build.checkpoint(name))
    return encoder, info


def encode_splits(
    encoder: nn.Module, modality: str, arrays: dict[str, Arrays], empty: Feeds
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Features of every split for the image or audio encoder, and of an absent element.

    Args:
        encoder: the trained encoder.
        modality: ``image`` or ``audio``.
        arrays: the preprocessed splits.
        empty: the preprocessor outputs of an all-empty sample (:func:`~trimodal.training.features.empty_feeds`).

    Returns:
        ``({split: (N, D) features}, (1, D) features of an absent element)``.
    """
    name = INPUT_TENSORS[modality]
    features = {split: predict(encoder, [arrays[split][name]]) for split in contract.SPLITS}
    return features, predict(encoder, [empty[name]])


def embed_texts(
    input_ids: np.ndarray, attention_mask: np.ndarray, encoder: nn.Module, *, progress: bool = True, desc: str = ""
) -> np.ndarray:
    """Frozen text embeddings, batched; each batch is cut to its longest sequence (same result, less work).

    Args:
        input_ids: int64 (N, T).
        attention_mask: int64 (N, T).
        encoder: the :class:`~trimodal.training.models.text.TextEncoder`.
        progress: show a progress bar.
        desc: progress bar label.

    Returns:
        float32 (N, feature_dim).
    """
    import torch
    from tqdm.auto import tqdm

    lengths = attention_mask.sum(axis=1)
    order = np.argsort(-lengths, kind="stable")
    out = np.zeros((len(order), encoder.feature_dim), dtype=np.float32)
    encoder.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(order), TEXT_BATCH), desc=f"embed text {desc}", disable=not progress):
            idx = order[start : start + TEXT_BATCH]
            width = max(1, int(lengths[idx].max()))
            ids = torch.from_numpy(np.ascontiguousarray(input_ids[idx, :width]))
            att = torch.from_numpy(np.ascontiguousarray(attention_mask[idx, :width]))
            out[idx] = encoder(ids, att).numpy()
    return out


def _embed_splits(
    spec: PipelineSpec, arrays: dict[str, Arrays], empty: Feeds, progress: bool
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    from trimodal.training.models import build_encoder, encoder_name

    encoder = build_encoder(encoder_name("text"), spec)
    result = {
        split: embed_texts(
            arrays[split][contract.INPUT_IDS],
            arrays[split][contract.ATTENTION_MASK],
            encoder,
            progress=progress,
            desc=split,
        )
        for split in contract.SPLITS
    }
    absent = predict(encoder, [empty[contract.INPUT_IDS], empty[contract.ATTENTION_MASK]])
    return result, absent


def text_embeddings(
    spec: PipelineSpec, build: BuildLayout, arrays: dict[str, Arrays], empty: Feeds, *, progress: bool = True
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Text embeddings of every split plus the embedding of an absent (empty) text, cached under ``features``.

    Args:
        spec: the pipeline spec.
        build: the build folders.
        arrays: the preprocessed splits.
        empty: the preprocessor outputs of an all-empty sample.
        progress: show progress bars.

    Returns:
        ``({split: (N, D) embeddings}, (1, D) embedding of an absent text)``.
    """
    from trimodal.training.data.dataset import dataset_hash

    key = fingerprint(spec, PREPROCESS_VERSION, dataset_hash(spec), TEXT_CACHE_VERSION)
    path = build.features / f"text-embeddings-{key}.npz"
    if path.is_file():
        cached = dict(np.load(path))
        return {split: cached[split] for split in contract.SPLITS}, cached[ABSENT]
    result, absent = _embed_splits(spec, arrays, empty, progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npz(path, {ABSENT: absent, **result})
    prune_cache(path.parent, "text-embeddings-*.npz", {path})
    return result, absent
