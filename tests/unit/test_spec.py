from pathlib import Path

import pytest
import yaml

from trimodal.errors import SpecError
from trimodal.spec import load_spec, parse_spec, spec_path


def _raw() -> dict:
    return yaml.safe_load(spec_path().read_text())


def test_committed_spec_loads() -> None:
    spec = load_spec()
    assert spec.num_classes == 10
    assert spec.fusion.strategy in spec.fusion.train_strategies
    assert spec.modalities.audio.n_frames == 1 + spec.modalities.audio.clip_samples // spec.modalities.audio.hop_length
    for model in ("preprocess_text", "text_encoder", "fusion_classifier"):
        assert spec.serving.resolved(model).max_batch_size >= spec.serving.ensemble_max_batch_size


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d["modalities"]["image"].__setitem__("size", 0), "modalities.image.size"),
        (lambda d: d["fusion"].__setitem__("strategy", "sum"), "fusion.strategy"),
        (lambda d: d.__setitem__("precision", "fp8"), "precision"),
        (lambda d: d["dataset"]["corruption"].pop("audio"), "dataset.corruption"),
        (lambda d: d["modalities"]["text"].__setitem__("colour", 1), "modalities.text.colour"),
        (lambda d: d["serving"]["models"].__setitem__("nope", {}), "serving.models"),
        (lambda d: d["engines"].__setitem__("compute_capabilities", ["sm90"]), "engines.compute_capabilities"),
        (lambda d: d["multitask"]["loss_weights"].pop("text"), "multitask.loss_weights"),
        (lambda d: d["multitask"]["loss_weights"].__setitem__("audio", -0.1), "multitask.loss_weights"),
        (lambda d: d["multitask"]["loss_weights"].__setitem__("fusion", 0.0), "multitask.loss_weights"),
        (lambda d: d["multitask"].__setitem__("conflict_threshold", 0.0), "multitask.conflict_threshold"),
        (lambda d: d.pop("multitask"), "multitask"),
        (lambda d: d["serving"]["models"].__setitem__("postprocess", {"max_batch_size": 8}), "models.postprocess"),
    ],
)
def test_invalid_field_is_named(mutate, field: str) -> None:
    data = _raw()
    mutate(data)
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        parse_spec(data, "test")


def test_ensemble_batch_above_model_max_is_rejected() -> None:
    data = _raw()
    data["serving"]["ensemble_max_batch_size"] = 64
    with pytest.raises(SpecError, match="ensemble_max_batch_size"):
        parse_spec(data, "test")


def test_preferred_batch_above_max_is_rejected() -> None:
    data = _raw()
    data["serving"]["models"]["text_encoder"] = {"preferred_batch_sizes": [64]}
    with pytest.raises(SpecError, match="text_encoder"):
        parse_spec(data, "test")


def test_missing_file_and_bad_yaml(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="cannot read"):
        load_spec(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("a: [1,\n")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("3\n")
    with pytest.raises(SpecError, match="expected a mapping"):
        load_spec(scalar)
