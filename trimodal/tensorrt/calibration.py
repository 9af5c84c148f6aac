"""Preprocessed samples of a dataset split: INT8 calibration batches and the accuracy check's inputs.

The samples go through :class:`trimodal.runtime.pipeline.Preprocessor` (what the server's preprocessors
run), and the fusion head's calibration inputs are the encoders' features from ONNX Runtime
(:func:`trimodal.runtime.pipeline.run_models`). The dataset module (training extra) is imported lazily.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from trimodal import contract
from trimodal.contract import ENCODERS
from trimodal.errors import EngineError
from trimodal.layout import BuildLayout, tokenizer_source
from trimodal.runtime.pipeline import Feeds, Preprocessor, ort_infer, run_models
from trimodal.spec import PipelineSpec
from trimodal.tensorrt.profiles import opt_batch_size

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


def encoder_inputs(
    spec: PipelineSpec, build_dir: Path, split: str, count: int, seed: int | None = None
) -> tuple[Feeds, np.ndarray]:
    """Preprocess ``count`` samples of a dataset split exactly as the server's preprocessors do.

    Args:
        spec: the pipeline spec.
        build_dir: the build folder holding the dataset.
        split: ``"train"``, ``"val"`` or ``"test"``.
        count: how many samples (a deterministic random subset; all when the split is smaller).
        seed: subset seed (defaults to the spec's seed).

    Returns:
        ``(tensors, labels)``: every preprocessor output by tensor name (IMAGE_TENSOR, INPUT_IDS,
        ATTENTION_MASK, AUDIO_TENSOR and the three masks), batch first, in contract dtypes.

    Raises:
        EngineError: if the split is empty.
    """
    from trimodal.training.data.dataset import load_split

    loaded = load_split(Path(build_dir), split)
    if len(loaded.labels) == 0:
        raise EngineError(f"the {split} split in {build_dir} is empty")
    images, texts, audio, labels = subset(loaded, count, spec.seed if seed is None else seed)
    return Preprocessor(spec, tokenizer_source())(images, texts, audio), labels


def _batches(names: list[str], tensors: Mapping[str, np.ndarray], batch: int) -> list[Feeds]:
    """Whole batches of ``batch`` rows of the named tensors (a last partial batch is dropped)."""
    usable = (len(next(iter(tensors.values()))) // batch) * batch
    feeds = [
        {name: np.ascontiguousarray(tensors[name][start : start + batch]) for name in names}
        for start in range(0, usable, batch)
    ]
    if not feeds:
        raise EngineError(f"too few training samples for one INT8 calibration batch of {batch}")
    return feeds


def calibration_feeds(spec: PipelineSpec, build_dir: Path) -> dict[str, list[Feeds]]:
    """INT8 calibration batches for every model, from the training split.

    The encoders see preprocessed training samples; the fusion head sees the encoders' features computed by
    ONNX Runtime on the same samples, with the preprocessors' presence masks. Every batch has the profile's
    opt batch size (TensorRT calibrates at the opt shape).

    Args:
        spec: the pipeline spec.
        build_dir: the build folder (the dataset, and the ONNX graphs in ``onnx/``).

    Returns:
        ``{model: [feeds, ...]}`` with ``spec.engines.calibration_batches`` batches each.

    Raises:
        EngineError: if the training split is too small for one batch.
    """
    build = BuildLayout(Path(build_dir))
    batch = min(opt_batch_size(spec, model) for model in ENCODERS)
    count = batch * spec.engines.calibration_batches
    LOGGER.info("INT8 calibration data: %d training samples in %d batches of %d", count, count // batch, batch)
    tensors, _ = encoder_inputs(spec, build.root, "train", count)
    available = dict(tensors)
    for outputs in run_models(spec, tensors, ort_infer(build.onnx_file), batch).values():
        available.update(outputs)
    ios = contract.model_io(spec)
    return {model: _batches([t.name for t in ios[model].inputs], available, batch) for model in ENCODERS}
