"""Unit tests of training helpers that need no dataset."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from trimodal.spec import MODALITIES  # noqa: E402
from trimodal.training.evaluate import check_targets, metrics_markdown, modality_subsets  # noqa: E402
from trimodal.training.heads import modality_dropout  # noqa: E402


def test_modality_dropout_never_drops_all() -> None:
    gen = torch.Generator().manual_seed(0)
    present = torch.ones(20000, 3)
    present[:5000, 0] = 0  # some samples lack the image
    present[:1000, 2] = 0  # ... and the audio
    masks = modality_dropout(present, 0.9, gen)
    assert bool((masks.sum(dim=1) >= 1).all())
    assert bool((masks <= present).all())  # never revives an absent modality
    assert bool((masks[:1000, 1] == 1).all())  # text is the only one left there
    rate = 1 - masks[5000:].mean().item()
    assert 0.6 < rate < 0.9


def test_modality_dropout_rate_and_determinism() -> None:
    present = torch.ones(20000, 3)
    a = modality_dropout(present, 0.35, torch.Generator().manual_seed(1))
    b = modality_dropout(present, 0.35, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)
    # Dropped with prob 0.35, except the rescued all-dropped rows (0.35**3 of them keep one).
    expected = 0.35 - 0.35**3 / 3
    assert abs((1 - a.mean().item()) - expected) < 0.02
    assert modality_dropout(present, 0.0, torch.Generator()).min().item() == 1.0


def test_subsets_targets_and_markdown() -> None:
    subsets = modality_subsets()
    assert len(subsets) == 7 and len(set(subsets)) == 7
    names = ["+".join(s) for s in subsets]
    acc = dict.fromkeys(names, 0.9)
    acc.update({"image": 0.7, "text": 0.75, "audio": 0.72, "image+text+audio": 0.98})
    targets = check_targets({"attention": acc}, "attention")
    assert targets["all three modalities >= 97%"]
    assert targets["every single modality alone <= 85%"]
    assert targets["all three beat the best single modality by >= 10 points"]
    metrics = {
        "served_strategy": "attention",
        "test_accuracy": {"attention": acc, "concat": acc},
        "targets": {"attention": targets},
        "samples": {"test": 1000},
        "encoders": {m: {"val_accuracy": 0.8, "train_accuracy": 0.9} for m in MODALITIES},
        "seconds": {"total": 100.0},
        "torch_threads": 1,
    }
    text = metrics_markdown(metrics)
    assert "| modalities | attention (served) | concat |" in text
    assert "| image+text+audio | 98.0% | 98.0% |" in text
