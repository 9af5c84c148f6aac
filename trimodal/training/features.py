"""What the models are trained on: every split preprocessed once by the server's code, cached, keyed by contract name.

A cached split holds the preprocessors' outputs exactly as Triton's preprocessors emit them (the in-process
:class:`~trimodal.runtime.pipeline.Preprocessor`), keyed by contract tensor name (``IMAGE_TENSOR``,
``IMAGE_MASK``, ``INPUT_IDS``, ``ATTENTION_MASK``, ``TEXT_MASK``, ``AUDIO_TENSOR``, ``AUDIO_MASK``), plus
``labels`` (int64, N) and ``corrupted`` (bool, N x 3), under ``build/features/<split>-<fingerprint>.npz``.

The fusion heads see each split as an :class:`EncodedSplit`: the encoders' features and the masks, again keyed
by contract name.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trimodal import contract
from trimodal.errors import DataError
from trimodal.layout import BuildLayout, tokenizer_source
from trimodal.spec import MODALITIES, PipelineSpec

if TYPE_CHECKING:
    from trimodal.runtime.pipeline import Feeds, Preprocessor

LOGGER = logging.getLogger(__name__)

PREPROCESS_VERSION = "preprocess-v3"
"""Part of every cache fingerprint; v2 keyed the arrays by contract tensor name, v3 normalises images
(:mod:`trimodal.runtime.normalize`)."""
PREPROCESS_CHUNK = 256
LABELS = "labels"
CORRUPTED = "corrupted"

# Per modality, the contract tensors of its encoder's input (image and audio), its features and its mask.
INPUT_TENSORS: dict[str, str] = {"image": contract.IMAGE_TENSOR, "audio": contract.AUDIO_TENSOR}
FEATURE_TENSORS: dict[str, str] = {
    "image": contract.IMAGE_FEATURES,
    "text": contract.TEXT_FEATURES,
    "audio": contract.AUDIO_FEATURES,
}
MASK_TENSORS: dict[str, str] = dict(zip(MODALITIES, contract.MASKS, strict=True))

Arrays = dict[str, np.ndarray]


@dataclass
class EncodedSplit:
    """One split as a fusion head sees it.

    Attributes:
        tensors: the features (N, D) of every modality and the masks (N, 1), by contract name.
        labels: int64 (N,).
        absent: per features name, the (1, D) features its encoder emits for the preprocessor's output of an
            empty (absent) element.
        corrupted: bool (N, 3), True where the dataset destroyed the modality (None when unknown).
    """

    tensors: Arrays
    labels: np.ndarray
    absent: Arrays
    corrupted: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.labels)


def fingerprint(spec: PipelineSpec, *extra: str) -> str:
    """Hash of everything the cached arrays depend on (dataset, modalities, classes, seed, ``extra``).

    Args:
        spec: the pipeline spec.
        extra: further strings the cache depends on (versions, the dataset hash).

    Returns:
        16 hex digits.
    """
    payload = json.dumps(
        {
            "seed": spec.seed,
            "dataset": spec.dataset.model_dump(),
            "modalities": spec.modalities.model_dump(),
            "classes": spec.classes,
            "extra": list(extra),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def prune_cache(cache_dir: Path, pattern: str, keep: set[Path]) -> None:
    """Delete stale cache files (other fingerprints) matching ``pattern``.

    Args:
        cache_dir: the cache folder.
        pattern: a glob, e.g. ``train-*.npz``.
        keep: the current files.
    """
    for path in cache_dir.glob(pattern):
        if path not in keep:
            LOGGER.info("removing stale cache %s", path)
            path.unlink(missing_ok=True)


def save_npz(path: Path, arrays: Arrays) -> None:
    """Write ``arrays`` to ``path`` atomically (through a temporary file)."""
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


def preprocessor(spec: PipelineSpec) -> Preprocessor:
    """The in-process preprocessor (the server's code) with the packaged tokenizer."""
    from trimodal.runtime.pipeline import Preprocessor

    return Preprocessor(spec, tokenizer_source())


def empty_feeds(spec: PipelineSpec) -> Feeds:
    """What the preprocessors emit for an empty (absent) element of every modality: one sample, by contract name.

    Args:
        spec: the pipeline spec.

    Returns:
        The preprocessor outputs of one all-empty sample.
    """
    return preprocessor(spec)([b""], [b""], [b""])


def preprocess_split(split: Any, preprocess: Preprocessor, name: str, progress: bool) -> Arrays:
    """Run the server-side preprocessing over one split, in chunks.

    Args:
        split: a :class:`~trimodal.training.data.dataset.Split`.
        preprocess: the preprocessor.
        name: for the progress bar.
        progress: show a progress bar.

    Returns:
        The preprocessor outputs by contract name, ``labels`` and ``corrupted``.
    """
    from tqdm.auto import tqdm

    count = len(split.labels)
    parts: dict[str, list[np.ndarray]] = {}
    for start in tqdm(range(0, count, PREPROCESS_CHUNK), desc=f"preprocess {name}", disable=not progress):
        stop = min(start + PREPROCESS_CHUNK, count)
        feeds = preprocess(split.images[start:stop], split.texts[start:stop], split.audio[start:stop])
        for key, value in feeds.items():
            parts.setdefault(key, []).append(np.asarray(value))
    arrays = {key: np.concatenate(values) for key, values in parts.items()}
    arrays[LABELS] = np.asarray(split.labels, dtype=np.int64)
    arrays[CORRUPTED] = np.asarray(getattr(split, "corrupted", np.zeros((count, 3), dtype=bool)), dtype=bool)
    return arrays


def _cache_paths(spec: PipelineSpec, cache_dir: Path) -> dict[str, Path]:
    from trimodal.training.data.dataset import dataset_hash

    key = fingerprint(spec, PREPROCESS_VERSION, dataset_hash(spec))
    return {split: cache_dir / f"{split}-{key}.npz" for split in contract.SPLITS}


def _preprocess_dataset(spec: PipelineSpec, root: Path, paths: dict[str, Path], progress: bool) -> dict[str, Arrays]:
    """Generate the dataset under ``root`` if missing, preprocess every split and cache it at ``paths``."""
    from trimodal.training.data.dataset import generate_dataset, load_split

    generate_dataset(spec, root, progress=progress)
    preprocess = preprocessor(spec)
    result: dict[str, Arrays] = {}
    for split in contract.SPLITS:
        data = load_split(root, split)
        if len(data.labels) == 0:
            raise DataError(f"dataset split {split!r} in {root} is empty")
        result[split] = preprocess_split(data, preprocess, split, progress)
        save_npz(paths[split], result[split])
    return result


def load_features(
    spec: PipelineSpec, build_dir: Path, *, data_dir: Path | None = None, progress: bool = True
) -> dict[str, Arrays]:
    """Preprocessed arrays of every split, from the cache or computed once (generating the dataset if missing).

    Args:
        spec: the pipeline spec.
        build_dir: build folder; arrays are cached in its ``features`` folder.
        data_dir: dataset root (the folder given to ``generate_dataset``); defaults to ``build_dir``.
        progress: show progress bars.

    Returns:
        ``{split: {name: array}}``: the preprocessor outputs by contract name, ``labels`` and ``corrupted`` (N, 3).

    Raises:
        DataError: if the dataset cannot be generated or read.
    """
    build = BuildLayout(Path(build_dir))
    build.features.mkdir(parents=True, exist_ok=True)
    paths = _cache_paths(spec, build.features)
    if all(path.is_file() for path in paths.values()):
        LOGGER.info("using cached preprocessed arrays in %s", build.features)
        return {split: dict(np.load(path)) for split, path in paths.items()}
    root = Path(data_dir) if data_dir is not None else build.root
    result = _preprocess_dataset(spec, root, paths, progress)
    for split in contract.SPLITS:
        prune_cache(build.features, f"{split}-*.npz", {paths[split]})
    return result


def present_samples(arrays: Arrays, modality: str) -> tuple[np.ndarray, np.ndarray]:
    """The encoder inputs and labels of the samples where ``modality`` (image or audio) is present.

    Args:
        arrays: one split from :func:`load_features`.
        modality: ``image`` or ``audio``.

    Returns:
        ``(inputs, labels)``.
    """
    keep = arrays[MASK_TENSORS[modality]][:, 0] > 0.5
    return arrays[INPUT_TENSORS[modality]][keep], arrays[LABELS][keep]


def robustness_images(
    spec: PipelineSpec, build_dir: Path, *, data_dir: Path | None = None, progress: bool = True
) -> dict[str, np.ndarray]:
    """The image encoder's input for every robustness variant of the test split, preprocessed once and cached.

    The variants are built by :func:`trimodal.training.data.robustness.make_variants` from the test split's
    images and go through the server's own image preprocessing.

    Args:
        spec: the pipeline spec.
        build_dir: build folder; cached as ``features/robustness-<fingerprint>.npz``.
        data_dir: dataset root; defaults to ``build_dir``.
        progress: show a progress bar.

    Returns:
        ``{variant: IMAGE_TENSOR (N, 1, S, S)}``, aligned with the test split.
    """
    from tqdm.auto import tqdm

    from trimodal.runtime.preprocess import preprocess_images
    from trimodal.training.data.dataset import dataset_hash, load_split
    from trimodal.training.data.robustness import ROBUSTNESS_VERSION, VARIANTS, make_variants

    build = BuildLayout(Path(build_dir))
    key = fingerprint(spec, PREPROCESS_VERSION, dataset_hash(spec), f"robustness-v{ROBUSTNESS_VERSION}")
    path = build.features / f"robustness-{key}.npz"
    if path.is_file():
        return dict(np.load(path))
    split = load_split(Path(data_dir) if data_dir is not None else build.root, "test")
    result = {}
    for name in tqdm(VARIANTS, desc="robustness set", disable=not progress):
        blobs = make_variants(split.images, spec.seed, [name])[name]
        result[name] = preprocess_images(blobs, spec.modalities.image)[0]
    path.parent.mkdir(parents=True, exist_ok=True)
    save_npz(path, result)
    prune_cache(path.parent, "robustness-*.npz", {path})
    return result
