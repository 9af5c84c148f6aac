"""Unit tests of the dataset generator (tiny sizes, a reduced espeak-ng voice bank)."""

from __future__ import annotations

import re
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from trimodal.contract import SPLITS
from trimodal.errors import DataError
from trimodal.layout import tokenizer_source
from trimodal.runtime import preprocess as pre
from trimodal.spec import PipelineSpec, load_spec
from trimodal.training.data import dataset, speech, texts

pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="espeak-ng is not installed")


def _tiny_spec(train: int = 40, val: int = 4, test: int = 4, seed: int | None = None) -> PipelineSpec:
    spec = load_spec()
    data = spec.dataset.model_copy(update={"train_per_class": train, "val_per_class": val, "test_per_class": test})
    update: dict[str, object] = {"dataset": data}
    if seed is not None:
        update["seed"] = seed
    return spec.model_copy(update=update)


@pytest.fixture(scope="module", autouse=True)
def small_bank():
    """2 voices x 2 speeds x 1 pitch = 4 utterances per digit: enough for disjoint train/val/test pools."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(speech, "VOICES", ("en", "en+f2"))
        patch.setattr(speech, "SPEEDS", (150, 190))
        patch.setattr(speech, "PITCHES", (50,))
        yield


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> tuple[PipelineSpec, Path, float]:
    root = tmp_path_factory.mktemp("ds1")
    spec = _tiny_spec()
    started = time.perf_counter()
    dataset.generate_dataset(spec, root, progress=False)
    return spec, root, time.perf_counter() - started


def test_layout_and_types(generated: tuple[PipelineSpec, Path, float]) -> None:
    spec, root, _ = generated
    sizes = {"train": 40, "val": 4, "test": 4}
    for name, per_class in sizes.items():
        split = dataset.load_split(root, name)
        assert len(split) == per_class * spec.num_classes
        assert split.labels.dtype == np.int64
        np.testing.assert_array_equal(np.bincount(split.labels, minlength=10), per_class)
        assert split.corrupted.dtype == bool and split.corrupted.shape == (len(split), 3)
        assert all(isinstance(b, bytes) and b for b in split.images + split.audio)
        assert all(isinstance(t, str) and t for t in split.texts)
    assert (root / "data" / "stamp.json").is_file()
    assert list((root / "data" / "speech").glob("bank-*.npz"))


def test_every_sample_preprocesses(generated: tuple[PipelineSpec, Path, float]) -> None:
    spec, root, _ = generated
    split = dataset.load_split(root, "val")
    image, image_mask = pre.preprocess_images(split.images, spec.modalities.image)
    audio, audio_mask = pre.preprocess_audio(split.audio, spec.modalities.audio)
    ids, _, text_mask = pre.TextPreprocessor(spec.modalities.text, tokenizer_source())(split.texts)
    assert image_mask.all() and audio_mask.all() and text_mask.all()
    assert np.isfinite(image).all() and np.isfinite(audio).all()
    assert ids.shape == (len(split), spec.modalities.text.max_tokens)


def test_formats_are_mixed(generated: tuple[PipelineSpec, Path, float]) -> None:
    _, root, _ = generated
    split = dataset.load_split(root, "train")
    assert any(blob.startswith(b"\x89PNG") for blob in split.images)
    assert any(blob.startswith(b"\xff\xd8") for blob in split.images)
    assert all(blob[:4] == b"RIFF" and blob[8:12] == b"WAVE" for blob in split.audio)


def test_deterministic(generated: tuple[PipelineSpec, Path, float], tmp_path: Path) -> None:
    spec, root, _ = generated
    dataset.generate_dataset(spec, tmp_path, progress=False)
    for name in SPLITS:
        first, second = dataset.load_split(root, name), dataset.load_split(tmp_path, name)
        assert first.images == second.images
        assert first.audio == second.audio
        assert first.texts == second.texts
        np.testing.assert_array_equal(first.labels, second.labels)
        np.testing.assert_array_equal(first.corrupted, second.corrupted)


def test_splits_use_disjoint_scans_and_utterances(generated: tuple[PipelineSpec, Path, float]) -> None:
    _, root, _ = generated
    provenance = {name: dataset.load_provenance(root, name) for name in SPLITS}
    for key in ("scan_ids", "utterance_ids"):
        sets = {name: set(provenance[name][key].tolist()) for name in SPLITS}
        assert not sets["train"] & sets["val"]
        assert not sets["train"] & sets["test"]
        assert not sets["val"] & sets["test"]


def test_scan_labels_match(generated: tuple[PipelineSpec, Path, float]) -> None:
    from trimodal.training.data.images import load_scans

    _, root, _ = generated
    _, scan_labels = load_scans()
    split = dataset.load_split(root, "train")
    np.testing.assert_array_equal(scan_labels[dataset.load_provenance(root, "train")["scan_ids"]], split.labels)


def test_cache_reused_and_invalidated(generated: tuple[PipelineSpec, Path, float]) -> None:
    spec, root, first_seconds = generated
    train = root / "data" / "train.npz"
    mtime = train.stat().st_mtime_ns
    started = time.perf_counter()
    assert dataset.generate_dataset(spec, root, progress=False) == root / "data"
    assert time.perf_counter() - started < max(0.5, first_seconds / 4)
    assert train.stat().st_mtime_ns == mtime
    changed = _tiny_spec(train=2, val=1, test=1, seed=spec.seed + 1)
    assert dataset.dataset_hash(changed) != dataset.dataset_hash(spec)
    dataset.generate_dataset(changed, root, progress=False)
    assert len(dataset.load_split(root, "train")) == 20
    dataset.generate_dataset(spec, root, progress=False)  # back to the module's dataset for other tests
    assert len(dataset.load_split(root, "train")) == 400


def test_corruption_fraction_near_spec(generated: tuple[PipelineSpec, Path, float]) -> None:
    spec, root, _ = generated
    corrupted = dataset.load_split(root, "train").corrupted
    expected = np.array([spec.dataset.corruption[m] for m in ("image", "text", "audio")])
    np.testing.assert_allclose(corrupted.mean(axis=0), expected, atol=0.07)
    # independent per modality: no sample is forced clean or corrupted in every modality together
    assert corrupted.all(axis=1).mean() < 0.05


def test_corrupted_texts_name_no_digit_and_clean_ones_do(generated: tuple[PipelineSpec, Path, float]) -> None:
    _, root, _ = generated
    split = dataset.load_split(root, "train")
    for sentence, bad, label in zip(split.texts, split.corrupted[:, 1], split.labels, strict=True):
        words = set(re.findall(r"\w+", sentence.lower()))
        if bad:
            assert not re.search(r"\d", sentence) and not words & texts.ALL_NUMBER_WORDS, sentence
        else:
            forms = {str(label)} | {texts.NUMBER_WORDS[lang][label] for lang in texts.NUMBER_WORDS}
            others = set(texts.ALL_NUMBER_WORDS) - forms
            assert not words & others, sentence


def test_fillers_and_templates_hold_no_number_word() -> None:
    pieces = texts.TEMPLATES + texts.FILLERS + texts.UNINFORMATIVE
    for piece in pieces:
        words = set(re.findall(r"\w+", piece.replace("{d}", "").lower()))
        assert not words & texts.ALL_NUMBER_WORDS, piece
        assert not re.search(r"\d", piece), piece


def test_load_split_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        dataset.load_split(tmp_path, "train")
    with pytest.raises(DataError, match="unknown split"):
        dataset.load_split(tmp_path, "training")
