"""Training, end to end: image and audio encoders, frozen text embeddings, one fusion head per strategy.

Steps of :func:`train_all`, each in the module named after it:

1. :mod:`~trimodal.training.features`: generate the dataset if missing and preprocess every split once with
   the server's own preprocessing (:class:`~trimodal.runtime.pipeline.Preprocessor`), cached under
   ``build/features`` and keyed by contract tensor name;
2. :mod:`~trimodal.training.encoders`: pretrain the image and the audio encoder, each with a temporary linear
   head, then embed every text once with the frozen text encoder (cached);
3. :mod:`~trimodal.training.heads`: train one fusion head per strategy on the encoders' features, with
   modality dropout;
4. :mod:`~trimodal.training.evaluate`: evaluate every non-empty modality subset on the test split exactly as
   the server sees it and write ``metrics.json`` / ``metrics.md``.

Everything is seeded and runs on the CPU (:mod:`~trimodal.training.loop`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from trimodal import contract
from trimodal.layout import BuildLayout
from trimodal.spec import MODALITIES, PipelineSpec
from trimodal.training.encoders import encode_splits, pretrain_encoder, text_embeddings
from trimodal.training.evaluate import check_targets, write_metrics
from trimodal.training.features import (
    FEATURE_TENSORS,
    LABELS,
    MASK_TENSORS,
    Arrays,
    EncodedSplit,
    empty_feeds,
    load_features,
)
from trimodal.training.heads import train_heads
from trimodal.training.loop import TORCH_THREADS, seconds_since, setup_torch, timed

LOGGER = logging.getLogger(__name__)


def _encode(
    spec: PipelineSpec, build: BuildLayout, arrays: dict[str, Arrays], seconds: dict[str, float], progress: bool
) -> tuple[dict[str, EncodedSplit], dict[str, Any]]:
    """Pretrain the image and audio encoders, embed the texts, and encode every split for the fusion heads."""
    from trimodal.training.models import TRAINED_MODALITIES, encoder_name

    empty = empty_feeds(spec)
    features: dict[str, dict[str, np.ndarray]] = {split: {} for split in contract.SPLITS}
    absent: dict[str, np.ndarray] = {}
    encoder_info: dict[str, Any] = {}
    for modality in TRAINED_MODALITIES:
        with timed(seconds, encoder_name(modality)):
            encoder, encoder_info[modality] = pretrain_encoder(modality, spec, arrays, build, progress=progress)
            encoded, absent[FEATURE_TENSORS[modality]] = encode_splits(encoder, modality, arrays, empty)
        for split in contract.SPLITS:
            features[split][FEATURE_TENSORS[modality]] = encoded[split]
    with timed(seconds, "text_embeddings"):
        text, absent[contract.TEXT_FEATURES] = text_embeddings(spec, build, arrays, empty, progress=progress)
    splits = {}
    for split in contract.SPLITS:
        masks = {MASK_TENSORS[m]: arrays[split][MASK_TENSORS[m]].astype(np.float32) for m in MODALITIES}
        tensors = {**features[split], contract.TEXT_FEATURES: text[split], **masks}
        splits[split] = EncodedSplit(tensors, arrays[split][LABELS], absent)
    return splits, encoder_info


def train_all(
    spec: PipelineSpec, build_dir: Path, *, progress: bool = True, data_dir: Path | None = None
) -> dict[str, Any]:
    """Train everything and write checkpoints and metrics.

    Writes ``build_dir/checkpoints/{image_encoder,audio_encoder,fusion_<strategy>}.pt`` (each a dict with
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
    splits, encoder_info = _encode(spec, build, arrays, seconds, progress)
    heads = train_heads(spec, splits, build, seconds, progress=progress)
    seconds["total"] = seconds_since(started)
    metrics: dict[str, Any] = {
        "served_strategy": spec.fusion.strategy,
        "test_accuracy": heads["test"],
        "val_accuracy": heads["val"],
        "targets": {strategy: check_targets(heads["test"], strategy) for strategy in heads["test"]},
        "encoders": encoder_info,
        "fusion": heads["fusion"],
        "samples": {split: len(arrays[split][LABELS]) for split in contract.SPLITS},
        "seconds": seconds,
        "seed": spec.seed,
        "torch_threads": TORCH_THREADS,
    }
    LOGGER.info("training done in %.0f s; served strategy %s", seconds["total"], spec.fusion.strategy)
    write_metrics(build.root, metrics)
    return metrics
