"""Unit tests of training helpers that need no dataset."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from spec_helpers import with_changes  # noqa: E402

from trimodal.spec import MODALITIES, load_spec  # noqa: E402
from trimodal.training.evaluate import check_targets, modality_subsets  # noqa: E402
from trimodal.training.heads import modality_dropout, multitask_loss, trained_variants  # noqa: E402
from trimodal.training.models.fusion import FusionClassifier  # noqa: E402
from trimodal.training.report import metrics_markdown  # noqa: E402


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


def _quality(drop: float, flagged: float, false_flag: float) -> dict:
    robust = {"clean": {"image": 0.76, "image+text+audio": 0.99}, "inverted": {"image": 0.76 - drop,
              "image+text+audio": 0.98}}  # fmt: skip
    conflict = {"mismatched image vs audio": {"samples": 700, "flagged": flagged, "agreement": 0.0, "mismatched": True},
                "matched image+audio": {"samples": 1000, "flagged": false_flag, "agreement": 0.6,
                                        "mismatched": False}}  # fmt: skip
    return {"robustness": robust, "conflict": {"val": conflict, "test": conflict}}


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
    variants = ["concat-multitask", "attention-multitask", "attention-single"]
    metrics = {
        "served_strategy": "attention",
        "served_variant": "attention-multitask",
        "auxiliary_losses": True,
        "conflict_threshold": 0.55,
        "test_accuracy": dict.fromkeys(variants, acc),
        "val_accuracy": dict.fromkeys(variants, acc),
        "fusion": {v: {"val_mean_subset_accuracy": 0.88 if v == "attention-single" else 0.89} for v in variants},
        "quality": {"attention-multitask": _quality(0.01, 0.97, 0.03), "attention-single": _quality(0.02, 0.9, 0.04)},
        "targets": {"attention-multitask": {**targets, "every mismatched set flagged >= 95%": False}},
        "samples": {"test": 1000},
        "encoders": {m: {"val_accuracy": 0.8, "train_accuracy": 0.9} for m in MODALITIES},
        "seconds": {"total": 100.0},
        "torch_threads": 1,
    }
    text = metrics_markdown(metrics)
    assert "| modalities | concat | attention (served, multi-task) | attention, single-task |" in text
    assert "| image+text+audio | 98.0% | 98.0% | 98.0% |" in text
    assert "| validation: mean over the 7 subsets (selects) | 89.0% | 88.0% |" in text
    assert "| robustness: largest image-alone drop | 1.0 points | 2.0 points |" in text
    assert "| inverted | 75.0% | -1.0 | 98.0% |" in text
    assert "| mismatched image vs audio | 700 | 97.0% | 0.0% |" in text
    assert "- [ ] every mismatched set flagged >= 95%" in text
    assert "Better on validation: **attention (served, multi-task)**" in text


def test_every_strategy_is_trained_as_the_spec_says_plus_the_ablation() -> None:
    spec = load_spec()
    variants = trained_variants(spec)
    aux = spec.multitask.auxiliary_losses
    assert variants[:-1] == [(s, aux) for s in spec.fusion.train_strategies]
    assert variants[-1] == (spec.fusion.strategy, not aux)
    single = with_changes(spec, multitask__auxiliary_losses=not aux)
    assert trained_variants(single)[-1] == (spec.fusion.strategy, aux)


def _head() -> FusionClassifier:
    torch.manual_seed(0)
    return FusionClassifier("attention", (8, 12, 6), hidden_dim=16, num_classes=5)


def _batch() -> tuple[list[torch.Tensor], list[torch.Tensor], torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    feats = [torch.randn(6, d, generator=gen) for d in (8, 12, 6)]
    present = [torch.ones(6, 1), torch.tensor([[1.0], [0.0], [1.0], [0.0], [1.0], [1.0]]), torch.ones(6, 1)]
    return feats, present, torch.tensor([0, 1, 2, 3, 4, 0])


def test_multitask_loss_weighs_each_task_and_ignores_absent_modalities() -> None:
    spec = load_spec()
    fused = torch.randn(6, 5)
    heads = torch.randn(6, 3, 5)
    labels = torch.tensor([0, 1, 2, 3, 4, 0])
    present = torch.ones(6, 3)
    present[1, 1] = 0.0
    weights = {"fusion": 1.0, "image": 0.0, "text": 0.0, "audio": 0.0}
    only_fusion = with_changes(spec, multitask__loss_weights=weights)
    fused_ce = torch.nn.functional.cross_entropy(fused, labels)
    torch.testing.assert_close(multitask_loss(fused, heads, labels, present, only_fusion), fused_ce)
    text_only = with_changes(spec, multitask__loss_weights={**weights, "fusion": 1e-9, "text": 1.0})
    keep = present[:, 1] > 0
    text_ce = torch.nn.functional.cross_entropy(heads[keep, 1], labels[keep])
    torch.testing.assert_close(multitask_loss(fused, heads, labels, present, text_only), text_ce, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("detach", [False, True])
def test_auxiliary_losses_reach_the_shared_projections_only_in_multitask(detach: bool) -> None:
    model = _head()
    feats, present, labels = _batch()
    _, heads = model.multitask_logits(feats, present, present, detach_heads=detach)
    torch.nn.functional.cross_entropy(heads[:, 0], labels).backward()
    projection = model.proj[0][1].weight.grad
    assert model.heads[0].weight.grad is not None and model.heads[0].weight.grad.abs().sum() > 0
    assert (projection is None or float(projection.abs().sum()) == 0.0) == detach


def test_dropped_modalities_leave_the_fusion_but_not_their_heads() -> None:
    model = _head().eval()
    feats, present, _ = _batch()
    kept = [present[0], torch.zeros(6, 1), present[2]]
    with torch.no_grad():
        fused, heads = model.multitask_logits(feats, present, kept)
        without_text = model.logits(*feats, kept[0], kept[1], kept[2])
        _, all_heads = model.multitask_logits(feats, present, present)
    torch.testing.assert_close(fused, without_text)
    torch.testing.assert_close(heads, all_heads)
