"""The benchmark workload: test-split samples over a weighted mix of modality subsets, and answer checks.

Every baseline, locust and perf_analyzer get the same samples (same indices, same subsets, same order) from
:func:`build_workload`, so that their numbers are comparable.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from trimodal.bench import BenchError
from trimodal.client import Sample

LOGGER = logging.getLogger(__name__)

MODALITY_NAMES: tuple[str, ...] = ("image", "text", "audio")
SUBSETS: tuple[str, ...] = (
    "image+text+audio",
    "image+text",
    "image+audio",
    "text+audio",
    "image",
    "text",
    "audio",
)
DEFAULT_MIX = "image+text+audio=4,image+text=1,image+audio=1,text+audio=1,image=1,text=1,audio=1"
PROBABILITY_TOLERANCE = 1e-3


def parse_mix(text: str) -> dict[str, float]:
    """Parse a task mix such as ``"image+text+audio=4,text=1"`` into normalized subset weights.

    Modality order inside a subset does not matter (``text+image`` is ``image+text``); ``all`` is an alias of
    ``image+text+audio``.

    Args:
        text: comma-separated ``subset=weight`` entries.

    Returns:
        ``{canonical subset: weight}`` with the weights summing to 1.

    Raises:
        BenchError: for an unknown modality, a duplicate subset, or a negative, non-finite or all-zero weight.
    """
    weights: dict[str, float] = {}
    for entry in (part.strip() for part in text.split(",")):
        if not entry:
            continue
        name, sep, raw = entry.partition("=")
        name = name.strip().lower()
        if name == "all":
            name = "image+text+audio"
        parts = [p.strip() for p in name.split("+") if p.strip()]
        unknown = [p for p in parts if p not in MODALITY_NAMES]
        if not parts or unknown or len(set(parts)) != len(parts):
            raise BenchError(
                f"mix entry {entry!r}: expected a '+'-joined subset of {list(MODALITY_NAMES)} (or 'all') "
                "followed by '=weight'"
            )
        canonical = "+".join(m for m in MODALITY_NAMES if m in parts)
        try:
            weight = float(raw) if sep else 1.0
        except ValueError:
            raise BenchError(f"mix entry {entry!r}: weight {raw!r} is not a number") from None
        if not math.isfinite(weight) or weight < 0:
            raise BenchError(f"mix entry {entry!r}: weight must be a finite number >= 0, got {raw!r}")
        if canonical in weights:
            raise BenchError(f"mix entry {entry!r}: subset {canonical!r} is given twice")
        weights[canonical] = weight
    total = sum(weights.values())
    if total <= 0:
        raise BenchError(f"mix {text!r}: expected at least one subset with a weight > 0")
    return {name: weight / total for name, weight in weights.items() if weight > 0}


def format_mix(mix: Mapping[str, float]) -> str:
    """The inverse of :func:`parse_mix` (weights as percentages)."""
    return ",".join(f"{name}={100 * weight:g}" for name, weight in mix.items())


def subset_sample(split: object, index: int, subset: str) -> Sample:
    """The sample ``index`` of a split with only the modalities of ``subset``.

    Args:
        split: a :class:`trimodal.training.data.dataset.Split`.
        index: sample index.
        subset: canonical subset name (``image+audio``).

    Returns:
        The sample (absent modalities are None).
    """
    keep = set(subset.split("+"))
    return Sample(
        image=split.images[index] if "image" in keep else None,  # type: ignore[attr-defined]
        text=split.texts[index] if "text" in keep else None,  # type: ignore[attr-defined]
        audio=split.audio[index] if "audio" in keep else None,  # type: ignore[attr-defined]
    )


@dataclass(frozen=True)
class WorkItem:
    """One request of the workload: the subset it uses, the sample and its true class index."""

    subset: str
    sample: Sample
    label: int


def build_workload(split: object, mix: Mapping[str, float], count: int, seed: int = 0) -> list[WorkItem]:
    """A deterministic list of requests drawn from ``split`` with subsets drawn from ``mix``.

    Args:
        split: a :class:`trimodal.training.data.dataset.Split` (usually the test split).
        mix: subset weights from :func:`parse_mix`.
        count: number of requests.
        seed: random seed (same seed -> same requests).

    Returns:
        ``count`` work items.

    Raises:
        BenchError: if the split is empty or ``count`` < 1.
    """
    size = len(split)  # type: ignore[arg-type]
    if size == 0 or count < 1:
        raise BenchError(f"cannot build a workload of {count} request(s) from a split of {size} sample(s)")
    rng = random.Random(seed)
    names, weights = list(mix), list(mix.values())
    indices = [rng.randrange(size) for _ in range(count)]
    subsets = rng.choices(names, weights=weights, k=count)
    labels = split.labels  # type: ignore[attr-defined]
    return [WorkItem(s, subset_sample(split, i, s), int(labels[i])) for i, s in zip(indices, subsets, strict=True)]


def load_workload(build_dir: Path, mix: Mapping[str, float], count: int, seed: int = 0) -> list[WorkItem]:
    """:func:`build_workload` over the test split in ``build_dir/data``.

    Raises:
        BenchError: if the dataset has not been built.
    """
    from trimodal.errors import DataError
    from trimodal.training.data.dataset import load_split

    try:
        split = load_split(Path(build_dir), "test")
    except (DataError, OSError) as exc:
        raise BenchError(f"cannot load the test split from {build_dir}/data ({exc}); run `trimodal build`") from exc
    return build_workload(split, mix, count, seed)


def check_probabilities(probabilities: object, num_classes: int, batch: int = 1) -> np.ndarray:
    """Validate class probabilities: shape ``(batch, num_classes)``, finite, each row summing to 1 +- 1e-3.

    Args:
        probabilities: the array (or nested list) returned by a server.
        num_classes: expected number of classes.
        batch: expected number of rows.

    Returns:
        The probabilities as a float64 array.

    Raises:
        BenchError: naming what is wrong.
    """
    if probabilities is None:
        raise BenchError("response has no PROBABILITIES")
    array = np.asarray(probabilities, dtype=np.float64)
    if array.shape != (batch, num_classes):
        raise BenchError(f"PROBABILITIES has shape {list(array.shape)}, expected [{batch}, {num_classes}]")
    if not np.all(np.isfinite(array)):
        raise BenchError("PROBABILITIES holds non-finite values")
    sums = array.sum(axis=1)
    bad = np.flatnonzero(np.abs(sums - 1.0) > PROBABILITY_TOLERANCE)
    if bad.size:
        raise BenchError(f"PROBABILITIES row {int(bad[0])} sums to {sums[bad[0]]:.6f}, expected 1 +- 1e-3")
    if np.any(array < -PROBABILITY_TOLERANCE):
        raise BenchError("PROBABILITIES holds negative values")
    return array


def check_label(label: str, classes: Sequence[str]) -> str:
    """Validate that ``label`` is one of the classes.

    Raises:
        BenchError: if it is not.
    """
    if label not in classes:
        raise BenchError(f"label {label!r} is not one of the classes {list(classes)}")
    return label


def parse_label_entry(entry: object) -> tuple[float, int, str]:
    """Parse one element of Triton's classification output (``b"score:index:name"``).

    Raises:
        BenchError: if it is malformed.
    """
    text = entry.decode("utf-8", "replace") if isinstance(entry, bytes) else str(entry)
    parts = text.split(":", 2)
    try:
        return float(parts[0]), int(parts[1]), parts[2] if len(parts) > 2 else parts[1]
    except (ValueError, IndexError):
        raise BenchError(f"LABEL entry {text!r} is not 'score:index:name'") from None


@dataclass(frozen=True)
class SampleFolder:
    """A split read from a folder of bundled samples, for load tests of a remote server without a local build.

    ``clients/samples`` holds one JSON file per sample naming its image, text and audio files and its label.
    """

    images: list[bytes]
    texts: list[str]
    audio: list[bytes]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.labels)


def load_sample_folder(folder: Path, classes: Sequence[str]) -> SampleFolder:
    """Read every ``*.json`` sample of ``folder`` (see :class:`SampleFolder`).

    Raises:
        BenchError: if the folder holds no sample or a sample's label is not one of ``classes``.
    """
    import json

    images, texts, audio, labels = [], [], [], []
    for meta in sorted(Path(folder).glob("*.json")):
        info = json.loads(meta.read_text(encoding="utf-8"))
        if info.get("label") not in classes:
            raise BenchError(f"{meta}: label {info.get('label')!r} is not one of {list(classes)}")
        images.append((meta.parent / info["image"]).read_bytes())
        texts.append((meta.parent / info["text"]).read_text(encoding="utf-8"))
        audio.append((meta.parent / info["audio"]).read_bytes())
        labels.append(list(classes).index(info["label"]))
    if not labels:
        raise BenchError(f"no samples (*.json) in {folder}")
    return SampleFolder(images, texts, audio, labels)
