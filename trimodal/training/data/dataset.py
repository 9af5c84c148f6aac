"""The multimodal digits dataset: generation (deterministic from the spec's seed), caching and loading.

Layout under ``<root>/data`` (:attr:`trimodal.layout.BuildLayout.data`)::

    stamp.json              hash of the dataset-relevant spec fields (+ generator version); written last
    speech/bank-<hash>.npz  the espeak-ng utterance bank (cached separately)
    <split>.npz             images/audio as uint8 concatenated bytes + int64 offsets, labels, corrupted,
                            provenance (scan and utterance index); loaded with allow_pickle=False
    <split>.texts.json      the sentences, a UTF-8 JSON array

Every sample's three modalities share its label. Independently per modality and sample, with probability
``spec.dataset.corruption[modality]``, the modality is degraded beyond recognition (recorded in
``corrupted``), so that one modality alone scores about ``(1 - p) + p / 10`` while the three together stay
near perfect. Scans (image) and utterances (audio) are split into disjoint, stratified train/val/test pools.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np

from trimodal.contract import SPLITS
from trimodal.errors import DataError
from trimodal.layout import BuildLayout
from trimodal.spec import MODALITIES, PipelineSpec
from trimodal.training.data import images, speech, texts

LOGGER = logging.getLogger(__name__)

DATASET_VERSION = 2
POOL_FRACTIONS = (0.7, 0.15, 0.15)
_T = TypeVar("_T")


@dataclass
class Split:
    """One split of the dataset; index ``i`` of every field is sample ``i``."""

    images: list[bytes]
    texts: list[str]
    audio: list[bytes]
    labels: np.ndarray  # int64 (N,)
    corrupted: np.ndarray  # bool (N, 3): columns image, text, audio

    def __len__(self) -> int:
        return len(self.labels)


def dataset_config(spec: PipelineSpec) -> dict[str, object]:
    """The spec fields the generated data depends on (hashed into the cache stamp).

    Args:
        spec: the pipeline spec.

    Returns:
        A JSON-able mapping.
    """
    audio = spec.modalities.audio
    return {
        "version": DATASET_VERSION,
        "seed": spec.seed,
        "classes": list(spec.classes),
        "dataset": spec.dataset.model_dump(),
        "image_size": spec.modalities.image.size,
        "sample_rate": audio.sample_rate,
        "clip_samples": audio.clip_samples,
        "speech_bank": speech.bank_config(audio.sample_rate),
    }


def dataset_hash(spec: PipelineSpec) -> str:
    """Hash of :func:`dataset_config`."""
    return hashlib.sha256(json.dumps(dataset_config(spec), sort_keys=True).encode()).hexdigest()


def _progress(iterable: Iterable[_T], total: int, desc: str, enabled: bool) -> Iterator[_T]:
    if enabled:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            LOGGER.info("%s: %d samples", desc, total)
        else:
            yield from tqdm(iterable, total=total, desc=desc, unit="sample", leave=False)
            return
    yield from iterable


def stratified_pools(
    labels: np.ndarray, rng: np.random.Generator, fractions: tuple[float, float, float] = POOL_FRACTIONS
) -> list[np.ndarray]:
    """Stratified, disjoint train/val/test pools of source indices (scans or utterances).

    Args:
        labels: class of every source.
        rng: the random generator.
        fractions: shares of train, val, test.

    Returns:
        Three sorted int64 index arrays; every class has at least one source in val and test.
    """
    pools: list[list[int]] = [[], [], []]
    for cls in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == cls))
        n_val = max(1, round(fractions[1] * len(members)))
        n_test = max(1, round(fractions[2] * len(members)))
        if len(members) < n_val + n_test + 1:
            raise DataError(f"class {cls}: {len(members)} sources are too few for disjoint train/val/test pools")
        pools[0].extend(members[n_val + n_test :].tolist())
        pools[1].extend(members[:n_val].tolist())
        pools[2].extend(members[n_val : n_val + n_test].tolist())
    return [np.sort(np.array(pool, dtype=np.int64)) for pool in pools]


def _pack(blobs: list[bytes]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.zeros(len(blobs) + 1, dtype=np.int64)
    offsets[1:] = np.cumsum([len(b) for b in blobs])
    return np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets


def _unpack(data: np.ndarray, offsets: np.ndarray) -> list[bytes]:
    raw = data.tobytes()
    return [raw[offsets[i] : offsets[i + 1]] for i in range(len(offsets) - 1)]


def _generate_split(
    spec: PipelineSpec,
    name: str,
    per_class: int,
    scan_pool: np.ndarray,
    utterance_pool: np.ndarray,
    scans: tuple[np.ndarray, np.ndarray],
    bank: speech.SpeechBank,
    rng: np.random.Generator,
    progress: bool,
) -> tuple[Split, dict[str, np.ndarray]]:
    num_classes = spec.num_classes
    labels = rng.permutation(np.repeat(np.arange(num_classes, dtype=np.int64), per_class))
    count = len(labels)
    probs = np.array([spec.dataset.corruption[m] for m in MODALITIES])
    corrupted = rng.random((count, len(MODALITIES))) < probs
    scan_images, scan_labels = scans
    scan_by_class = [scan_pool[scan_labels[scan_pool] == c] for c in range(num_classes)]
    utterances_by_class = [utterance_pool[bank.digits[utterance_pool] == c] for c in range(num_classes)]
    scan_ids = np.array([rng.choice(scan_by_class[c]) for c in labels], dtype=np.int64)
    utterance_ids = np.array([rng.choice(utterances_by_class[c]) for c in labels], dtype=np.int64)
    size = spec.modalities.image.size
    audio = spec.modalities.audio
    image_blobs: list[bytes] = []
    text_list: list[str] = []
    audio_blobs: list[bytes] = []
    for i in _progress(range(count), count, f"dataset {name}", progress):
        label = int(labels[i])
        image_blobs.append(images.make_image(scan_images[scan_ids[i]], size, rng, corrupted=bool(corrupted[i, 0])))
        text_list.append(texts.make_text(label, rng, corrupted=bool(corrupted[i, 1])))
        audio_blobs.append(
            speech.make_audio(
                bank.utterance(int(utterance_ids[i])),
                audio.clip_samples,
                audio.sample_rate,
                rng,
                corrupted=bool(corrupted[i, 2]),
            )
        )
    split = Split(image_blobs, text_list, audio_blobs, labels, corrupted)
    return split, {"scan_ids": scan_ids, "utterance_ids": utterance_ids}


def _write_split(folder: Path, name: str, split: Split, provenance: dict[str, np.ndarray]) -> None:
    image_data, image_offsets = _pack(split.images)
    audio_data, audio_offsets = _pack(split.audio)
    tmp = folder / f"{name}.tmp.npz"
    np.savez(
        tmp,
        image_data=image_data,
        image_offsets=image_offsets,
        audio_data=audio_data,
        audio_offsets=audio_offsets,
        labels=split.labels,
        corrupted=split.corrupted,
        **provenance,
    )
    tmp.replace(folder / f"{name}.npz")
    (folder / f"{name}.texts.json").write_text(json.dumps(split.texts, ensure_ascii=False), encoding="utf-8")


def _stamp_matches(folder: Path, digest: str) -> bool:
    stamp = folder / "stamp.json"
    if not stamp.is_file():
        return False
    try:
        recorded = json.loads(stamp.read_text(encoding="utf-8")).get("hash")
    except (OSError, ValueError):
        return False
    complete = all((folder / f"{s}.npz").is_file() and (folder / f"{s}.texts.json").is_file() for s in SPLITS)
    return recorded == digest and complete


def generate_dataset(spec: PipelineSpec, root: Path, *, force: bool = False, progress: bool = True) -> Path:
    """Generate the train/val/test splits under ``root / "data"``, unless an up-to-date copy is there.

    The cache stamp holds a hash of the dataset-relevant spec fields (seed, classes, dataset sizes and
    corruption, image size, audio rate and clip length, speech bank settings, generator version); the data is
    regenerated only when it changes (or with ``force``). Deterministic: same spec, same bytes.

    Args:
        spec: the pipeline spec.
        root: the build folder.
        force: regenerate even if the stamp matches (the speech bank too).
        progress: show a progress bar (tqdm) while generating.

    Returns:
        The data folder (``root / "data"``).

    Raises:
        DataError: if espeak-ng is missing or the data cannot be written.
    """
    folder = BuildLayout(Path(root)).data
    digest = dataset_hash(spec)
    if not force and _stamp_matches(folder, digest):
        LOGGER.info("dataset in %s is up to date", folder)
        return folder
    started = time.perf_counter()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "stamp.json").unlink(missing_ok=True)
        seeds = np.random.SeedSequence(spec.seed).spawn(3 + len(SPLITS))
        bank = speech.load_or_build_bank(folder / "speech", spec.modalities.audio.sample_rate, force=force)
        scans = images.load_scans()
        scan_pools = stratified_pools(scans[1], np.random.default_rng(seeds[0]))
        utterance_pools = stratified_pools(bank.digits, np.random.default_rng(seeds[1]))
        sizes = {
            "train": spec.dataset.train_per_class,
            "val": spec.dataset.val_per_class,
            "test": spec.dataset.test_per_class,
        }
        for index, name in enumerate(SPLITS):
            rng = np.random.default_rng(seeds[3 + index])
            split, provenance = _generate_split(
                spec, name, sizes[name], scan_pools[index], utterance_pools[index], scans, bank, rng, progress
            )
            _write_split(folder, name, split, provenance)
            LOGGER.info("dataset %s: %d samples, corrupted fraction %s", name, len(split), split.corrupted.mean(0))
        stamp = {"hash": digest, "config": dataset_config(spec), "seconds": round(time.perf_counter() - started, 2)}
        (folder / "stamp.json").write_text(json.dumps(stamp, indent=2), encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot write the dataset to {folder}: {exc}") from exc
    LOGGER.info("dataset generated in %s in %.1f s", folder, time.perf_counter() - started)
    return folder


def _split_files(root: Path, split: str) -> tuple[Path, Path]:
    if split not in SPLITS:
        raise DataError(f"unknown split {split!r}; expected one of {list(SPLITS)}")
    folder = BuildLayout(Path(root)).data
    arrays, sentences = folder / f"{split}.npz", folder / f"{split}.texts.json"
    if not arrays.is_file() or not sentences.is_file():
        raise DataError(f"dataset split {split!r} not found in {folder}: generate it first (generate_dataset)")
    return arrays, sentences


def load_split(root: Path, split: str) -> Split:
    """Load one generated split.

    Args:
        root: the build folder given to :func:`generate_dataset`.
        split: ``train``, ``val`` or ``test``.

    Returns:
        The split.

    Raises:
        DataError: for an unknown split name or a missing/corrupt file.
    """
    arrays, sentences = _split_files(root, split)
    try:
        with np.load(arrays, allow_pickle=False) as npz:
            image_list = _unpack(npz["image_data"], npz["image_offsets"])
            audio_list = _unpack(npz["audio_data"], npz["audio_offsets"])
            labels = npz["labels"].astype(np.int64)
            corrupted = npz["corrupted"].astype(bool)
        text_list = json.loads(sentences.read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as exc:
        raise DataError(f"cannot read dataset split {split!r} from {arrays.parent}: {exc}") from exc
    if not len(image_list) == len(text_list) == len(audio_list) == len(labels) == len(corrupted):
        raise DataError(f"dataset split {split!r} in {arrays.parent} is inconsistent (field lengths differ)")
    return Split(image_list, text_list, audio_list, labels, corrupted)


def load_provenance(root: Path, split: str) -> dict[str, np.ndarray]:
    """Where each sample came from: ``scan_ids`` (index into ``load_digits``) and ``utterance_ids`` (bank).

    Args:
        root: the build folder.
        split: ``train``, ``val`` or ``test``.

    Returns:
        The two int64 arrays.

    Raises:
        DataError: for an unknown or missing split.
    """
    arrays, _ = _split_files(root, split)
    with np.load(arrays, allow_pickle=False) as npz:
        return {"scan_ids": npz["scan_ids"], "utterance_ids": npz["utterance_ids"]}
