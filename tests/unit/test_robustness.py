"""The robustness set, the image augmentation and the conflict sets (no server, small synthetic data)."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("sklearn")
torch = pytest.importorskip("torch")

from trimodal import contract  # noqa: E402
from trimodal.runtime.preprocess import preprocess_images  # noqa: E402
from trimodal.spec import load_spec  # noqa: E402
from trimodal.training.augment import augment_images  # noqa: E402
from trimodal.training.data import images  # noqa: E402
from trimodal.training.data.robustness import VARIANTS, make_variants  # noqa: E402
from trimodal.training.features import EncodedSplit  # noqa: E402
from trimodal.training.quality import conflict_sets, quality_targets  # noqa: E402

SPEC = load_spec()
SIZE = SPEC.modalities.image.size


@pytest.fixture(scope="module")
def originals() -> list[bytes]:
    scans, _ = images.load_scans()
    rng = np.random.default_rng(0)
    return [images.make_image(scans[i], SIZE, rng, corrupted=False) for i in range(12)]


@pytest.fixture(scope="module")
def variants(originals: list[bytes]) -> dict[str, list[bytes]]:
    return make_variants(originals, seed=7)


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def _ink(data: bytes) -> float:
    """Share of dark pixels of an opaque gray image."""
    return float((np.asarray(_open(data).convert("L"), dtype=np.float32) < 128).mean())


def test_every_variant_is_built_for_every_image_deterministically(originals, variants) -> None:
    assert list(variants) == list(VARIANTS)
    assert all(len(blobs) == len(originals) for blobs in variants.values())
    assert make_variants(originals[:3], seed=7, variants=["rgb", "shifted"]) == {
        "rgb": variants["rgb"][:3], "shifted": variants["shifted"][:3]
    }  # fmt: skip
    assert make_variants(originals[:3], seed=8, variants=["shifted"])["shifted"] != variants["shifted"][:3]


def test_variants_differ_as_described(originals, variants) -> None:
    for i, original in enumerate(originals):
        base = np.asarray(_open(original).convert("L"), dtype=np.float32)
        inverted = np.asarray(_open(variants["inverted"][i]), dtype=np.float32)
        assert np.median(inverted[0]) < 128 < np.median(base[0])  # dark border
        assert 12 <= _open(variants["small"][i]).size[0] <= 20
        assert 96 <= _open(variants["large"][i]).size[0] <= 192
        width, height = _open(variants["wide"][i]).size
        assert 1.4 <= width / height <= 2.6
        assert _open(variants["rgb"][i]).mode == "RGB"
        for name in ("rgba", "rgba_light"):
            alpha = np.asarray(_open(variants[name][i]))[..., 3]
            assert _open(variants[name][i]).mode == "RGBA" and alpha.min() == 0 and alpha.max() > 200
        assert _open(variants["shifted"][i]).size == (2 * base.shape[1], 2 * base.shape[0])
        assert _ink(variants["thick"][i]) > _ink(original) > _ink(variants["thin"][i])


def test_the_server_normalisation_undoes_what_it_can(originals, variants) -> None:
    reference, _ = preprocess_images(originals, SPEC.modalities.image)
    for name in ("inverted", "wide", "rgba", "rgba_light", "shifted", "large"):
        tensor, mask = preprocess_images(variants[name], SPEC.modalities.image)
        assert mask.all()
        assert np.abs(tensor - reference).mean() < 0.12, name


def test_augmentation_is_seeded_in_range_and_varied(originals) -> None:
    tensor = torch.from_numpy(preprocess_images(originals, SPEC.modalities.image)[0])
    first = augment_images(tensor, torch.Generator().manual_seed(0))
    again = augment_images(tensor, torch.Generator().manual_seed(0))
    other = augment_images(tensor, torch.Generator().manual_seed(1))
    assert first.shape == tensor.shape and torch.equal(first, again) and not torch.equal(first, other)
    assert float(first.min()) >= -1.0 and float(first.max()) <= 1.0
    assert not torch.equal(first, tensor)
    same = [
        float(torch.corrcoef(torch.stack([a.ravel(), b.ravel()]))[0, 1]) for a, b in zip(first, tensor, strict=True)
    ]
    assert np.mean(same) > 0.5  # still the same digits, moved and restyled a little


def _encoded(labels: list[int], corrupted: list[list[bool]]) -> EncodedSplit:
    count = len(labels)
    rng = np.random.default_rng(0)
    tensors = {name: rng.standard_normal((count, 4)).astype(np.float32) for name in
               (contract.IMAGE_FEATURES, contract.TEXT_FEATURES, contract.AUDIO_FEATURES)}  # fmt: skip
    tensors.update({name: np.ones((count, 1), np.float32) for name in contract.MASKS})
    absent = {name: np.zeros((1, 4), np.float32) for name in tensors if name.endswith("FEATURES")}
    return EncodedSplit(tensors, np.array(labels), absent, np.array(corrupted))


def test_mismatched_sets_pair_clean_modalities_of_different_classes() -> None:
    labels = [0, 1, 2, 0, 1, 2, 3, 3]
    corrupted = [[False, False, False]] * 8
    corrupted[2] = [True, False, False]
    corrupted[5] = [False, False, True]
    data = _encoded(labels, corrupted)
    sets = conflict_sets(data, seed=1)
    assert {name for name, (_, mismatched) in sets.items() if mismatched} == {
        "mismatched image vs text", "mismatched image vs audio", "mismatched text vs audio",
        "mismatched image+text vs audio",
    }  # fmt: skip
    inputs, _ = sets["mismatched image vs audio"]
    image, audio = inputs[0], inputs[2]
    assert len(image) == 7  # sample 2's image is destroyed
    source = [int(np.flatnonzero((data.tensors[contract.IMAGE_FEATURES] == row).all(1))[0]) for row in image]
    partner = [int(np.flatnonzero((data.tensors[contract.AUDIO_FEATURES] == row).all(1))[0]) for row in audio]
    assert 2 not in source and 5 not in partner
    assert all(labels[s] != labels[p] for s, p in zip(source, partner, strict=True))
    np.testing.assert_array_equal(inputs[4], 0.0)  # text absent
    np.testing.assert_array_equal(inputs[1], 0.0)
    matched, _ = sets["matched image+audio"]
    assert len(matched[0]) == 8  # every sample, destroyed modalities included


def test_quality_targets() -> None:
    robust = {"clean": {"image": 0.8, "image+text+audio": 0.99}, "small": {"image": 0.76, "image+text+audio": 0.98}}
    conflicts = {"a": {"flagged": 0.96, "mismatched": True}, "b": {"flagged": 0.04, "mismatched": False}}
    assert all(quality_targets(robust, conflicts).values())
    robust["small"] = {"image": 0.74, "image+text+audio": 0.96}
    conflicts["b"]["flagged"] = 0.06
    assert not any(quality_targets(robust, {**conflicts, "a": {"flagged": 0.9, "mismatched": True}}).values())
