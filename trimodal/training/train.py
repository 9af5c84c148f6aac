"""Training, end to end: image and audio encoders, frozen text embeddings, one fusion head per strategy.

Steps of :func:`train_all`, each in the module named after it:

1. :mod:`~trimodal.training.features`: generate the dataset if missing and preprocess every split once with
   the server's own preprocessing (:class:`~trimodal.runtime.pipeline.Preprocessor`), cached under
   ``build/features`` and keyed by contract tensor name;
2. :mod:`~trimodal.training.encoders`: pretrain the image and the audio encoder, each with a temporary linear
   head, then embed every text once with the frozen text encoder (cached);
3. :mod:`~trimodal.training.heads`: train one fusion head per strategy on the encoders' features, with
   modality dropout and per-modality heads (multi-task), plus the served strategy the other way (single-task
   or multi-task) for comparison;
4. :mod:`~trimodal.training.evaluate` and :mod:`~trimodal.training.quality`: evaluate every non-empty modality
   subset on the test split exactly as the server sees it, the robustness set and conflict detection, and write
   ``metrics.json`` / ``metrics.md``.

Everything is seeded and runs on the CPU (:mod:`~trimodal.training.loop`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trimodal import contract
from trimodal.layout import BuildLayout
from trimodal.machine import fingerprint
from trimodal.spec import MODALITIES, PipelineSpec
from trimodal.training.encoders import encode_splits, pretrain_encoder, text_embeddings
from trimodal.training.evaluate import check_targets
from trimodal.training.features import (
    CORRUPTED,
    FEATURE_TENSORS,
    LABELS,
    MASK_TENSORS,
    Arrays,
    EncodedSplit,
    empty_feeds,
    load_features,
    robustness_images,
)
from trimodal.training.heads import served_variant, train_heads, variant_name
from trimodal.training.loop import TORCH_THREADS, predict, seconds_since, setup_torch, timed
from trimodal.training.quality import conflict_rates, quality_targets, robustness
from trimodal.training.report import write_metrics

if TYPE_CHECKING:
    from torch import nn

    from trimodal.training.models.fusion import FusionClassifier

LOGGER = logging.getLogger(__name__)


def _encode(
    spec: PipelineSpec, build: BuildLayout, arrays: dict[str, Arrays], seconds: dict[str, float], progress: bool
) -> tuple[dict[str, EncodedSplit], dict[str, nn.Module], dict[str, Any]]:
    """Pretrain the image and audio encoders, embed the texts, and encode every split for the fusion heads."""
    from trimodal.training.models import TRAINED_MODALITIES, encoder_name

    empty = empty_feeds(spec)
    features: dict[str, dict[str, np.ndarray]] = {split: {} for split in contract.SPLITS}
    absent: dict[str, np.ndarray] = {}
    encoders: dict[str, nn.Module] = {}
    encoder_info: dict[str, Any] = {}
    for modality in TRAINED_MODALITIES:
        with timed(seconds, encoder_name(modality)):
            encoders[modality], encoder_info[modality] = pretrain_encoder(
                modality, spec, arrays, build, progress=progress
            )
            encoded, absent[FEATURE_TENSORS[modality]] = encode_splits(encoders[modality], modality, arrays, empty)
        for split in contract.SPLITS:
            features[split][FEATURE_TENSORS[modality]] = encoded[split]
    with timed(seconds, "text_embeddings"):
        text, absent[contract.TEXT_FEATURES] = text_embeddings(spec, build, arrays, empty, progress=progress)
    splits = {}
    for split in contract.SPLITS:
        masks = {MASK_TENSORS[m]: arrays[split][MASK_TENSORS[m]].astype(np.float32) for m in MODALITIES}
        tensors = {**features[split], contract.TEXT_FEATURES: text[split], **masks}
        splits[split] = EncodedSplit(tensors, arrays[split][LABELS], absent, arrays[split][CORRUPTED])
    return splits, encoders, encoder_info


def _quality(
    spec: PipelineSpec,
    build: BuildLayout,
    splits: dict[str, EncodedSplit],
    image_encoder: nn.Module,
    models: dict[str, FusionClassifier],
    data_dir: Path | None,
    progress: bool,
) -> dict[str, Any]:
    """Robustness and conflict detection of the served strategy, multi-task and single-task."""
    images = robustness_images(spec, build.root, data_dir=data_dir, progress=progress)
    variants = {name: predict(image_encoder, [tensor]) for name, tensor in images.items()}
    result = {}
    for auxiliary in (True, False):
        name = variant_name(spec.fusion.strategy, auxiliary)
        result[name] = {
            "robustness": robustness(models[name], splits["test"], variants),
            "conflict": {split: conflict_rates(models[name], splits[split], spec) for split in ("val", "test")},
        }
    return result


def _targets(test: dict[str, dict[str, float]], quality: dict[str, Any]) -> dict[str, dict[str, bool]]:
    """The accuracy targets of every variant, plus the quality targets where they were measured."""
    targets = {}
    for name in test:
        targets[name] = check_targets(test, name)
        if name in quality:
            targets[name].update(quality_targets(quality[name]["robustness"], quality[name]["conflict"]["test"]))
    return targets


def train_all(
    spec: PipelineSpec, build_dir: Path, *, progress: bool = True, data_dir: Path | None = None
) -> dict[str, Any]:
    """Train everything and write checkpoints and metrics.

    Writes ``build_dir/checkpoints/{image_encoder,audio_encoder,fusion_<variant>}.pt`` (each a dict with
    ``state_dict`` and ``config``), ``build_dir/metrics.json`` and ``build_dir/metrics.md``.

    Args:
        spec: the pipeline spec.
        build_dir: build folder.
        progress: show tqdm progress bars.
        data_dir: dataset root (the folder given to ``generate_dataset``, which keeps the data in its
            ``data/`` subfolder); defaults to ``build_dir``. Generated there if missing.

    Returns:
        The metrics dictionary (also written to ``metrics.json``).

    Raises:
        DataError: if the dataset cannot be generated or read.
    """
    started = time.perf_counter()
    build = BuildLayout(Path(build_dir))
    setup_torch(spec.seed)
    seconds: dict[str, float] = {}
    arrays = load_features(spec, build.root, data_dir=data_dir, progress=progress)
    seconds["data"] = seconds_since(started)
    splits, encoders, encoder_info = _encode(spec, build, arrays, seconds, progress)
    heads, models = train_heads(spec, splits, build, seconds, progress=progress)
    with timed(seconds, "quality"):
        quality = _quality(spec, build, splits, encoders["image"], models, data_dir, progress)
    seconds["total"] = seconds_since(started)
    metrics: dict[str, Any] = {
        "served_strategy": spec.fusion.strategy,
        "served_variant": served_variant(spec),
        "auxiliary_losses": spec.multitask.auxiliary_losses,
        "conflict_threshold": spec.multitask.conflict_threshold,
        "test_accuracy": heads["test"],
        "val_accuracy": heads["val"],
        "targets": _targets(heads["test"], quality),
        "quality": quality,
        "encoders": encoder_info,
        "fusion": heads["fusion"],
        "samples": {split: len(arrays[split][LABELS]) for split in contract.SPLITS},
        "seconds": seconds,
        "seed": spec.seed,
        "torch_threads": TORCH_THREADS,
        # The same seeds give other last bits on another instruction set: committed figures are compared exactly
        # only with a build from the same kind of machine (tests/unit/test_evidence.py).
        "machine": fingerprint(),
    }
    LOGGER.info("training done in %.0f s; served %s", seconds["total"], served_variant(spec))
    write_metrics(build.root, metrics)
    return metrics
