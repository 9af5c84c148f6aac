"""The built model meets its targets: accuracy, robustness per variant, conflict detection (build/metrics.json).

``make test`` builds before it tests, so these check the model that the repository serves; without a build
they are skipped.
"""

from __future__ import annotations

import json

import pytest

from trimodal.layout import Layout
from trimodal.spec import load_spec

METRICS = Layout.default().build.root / "metrics.json"

pytestmark = pytest.mark.skipif(not METRICS.is_file(), reason="not built: run `make build` first")


@pytest.fixture(scope="module")
def metrics() -> dict:
    return json.loads(METRICS.read_text())


def test_metrics_describe_the_served_model(metrics: dict) -> None:
    from trimodal.training.heads import served_variant

    spec = load_spec()
    assert metrics["served_variant"] == served_variant(spec)
    assert metrics["conflict_threshold"] == spec.multitask.conflict_threshold
    strategy = spec.fusion.strategy
    assert {f"{strategy}-multitask", f"{strategy}-single"} <= set(metrics["test_accuracy"])  # both, same seeds


def test_served_model_passes_the_accuracy_gates(metrics: dict) -> None:
    """All three >= 97%, every single modality <= 85%, all three >= best single + 10 points (recomputed from the
    accuracies; tests/unit/test_evidence.py shows the gate failing on doctored figures)."""
    from trimodal.evidence.gates import accuracy_failures

    assert accuracy_failures(metrics) == []


def test_served_model_meets_every_target(metrics: dict) -> None:
    targets = metrics["targets"][metrics["served_variant"]]
    assert len(targets) >= 10
    assert [name for name, met in targets.items() if not met] == []


def test_robustness_is_reported_per_variant(metrics: dict) -> None:
    pytest.importorskip("torch")
    from trimodal.training.data.robustness import VARIANTS

    robust = metrics["quality"][metrics["served_variant"]]["robustness"]
    assert list(robust) == ["clean", *VARIANTS]
    clean = robust["clean"]["image"]
    for name, row in robust.items():
        assert clean - row["image"] <= 0.05, (name, row)
        assert row["image+text+audio"] >= 0.97, (name, row)


def test_conflicts_are_flagged_and_matched_samples_are_not(metrics: dict) -> None:
    conflict = metrics["quality"][metrics["served_variant"]]["conflict"]["test"]
    mismatched = {name: row["flagged"] for name, row in conflict.items() if row["mismatched"]}
    matched = {name: row["flagged"] for name, row in conflict.items() if not row["mismatched"]}
    assert len(mismatched) == 4 and len(matched) == 4
    assert min(mismatched.values()) >= 0.95, mismatched
    assert max(matched.values()) <= 0.05, matched
    assert all(row["samples"] >= 500 for row in conflict.values())
