"""Unit tests of the ONNX export checks (tiny random models, no server)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from trimodal.contract import (  # noqa: E402
    AUDIO_FEATURES,
    AUDIO_MASK,
    FUSED_PROBABILITIES,
    HEAD_PROBABILITIES,
    IMAGE_FEATURES,
    IMAGE_MASK,
    IMAGE_TENSOR,
    TEXT_FEATURES,
    TEXT_MASK,
    ModelIO,
    TensorSpec,
)
from trimodal.errors import ExportError  # noqa: E402
from trimodal.training.export import check_dims, check_parity, export_and_check, export_onnx, random_feeds  # noqa: E402
from trimodal.training.models.fusion import FusionClassifier  # noqa: E402
from trimodal.training.models.image import ImageEncoder  # noqa: E402

torch.set_num_threads(2)

IMAGE_IO = ModelIO((TensorSpec(IMAGE_TENSOR, "FP32", (1, 8, 8)),), (TensorSpec(IMAGE_FEATURES, "FP32", (4,)),))
FUSION_IO = ModelIO(
    (
        TensorSpec(IMAGE_FEATURES, "FP32", (4,)),
        TensorSpec(TEXT_FEATURES, "FP32", (6,)),
        TensorSpec(AUDIO_FEATURES, "FP32", (5,)),
        TensorSpec(IMAGE_MASK, "FP32", (1,)),
        TensorSpec(TEXT_MASK, "FP32", (1,)),
        TensorSpec(AUDIO_MASK, "FP32", (1,)),
    ),
    (TensorSpec(FUSED_PROBABILITIES, "FP32", (3,)), TensorSpec(HEAD_PROBABILITIES, "FP32", (3, 3))),
)


def _fusion() -> FusionClassifier:
    torch.manual_seed(0)
    return FusionClassifier("attention", (4, 6, 5), hidden_dim=8, num_classes=3).eval()


@pytest.fixture(scope="module")
def fusion_onnx(tmp_path_factory: pytest.TempPathFactory) -> tuple[FusionClassifier, Path]:
    model = _fusion()
    path = tmp_path_factory.mktemp("fusion") / "fusion_classifier.onnx"
    result = export_and_check("fusion_classifier", model, FUSION_IO, path, batches=(1, 5))
    assert set(result["max_abs_diff"]) == {FUSED_PROBABILITIES, HEAD_PROBABILITIES}
    return model, path


def test_image_encoder_export_dims_and_parity(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ImageEncoder(size=8, feature_dim=4).eval()
    path = tmp_path / "image_encoder.onnx"
    result = export_and_check("image_encoder", model, IMAGE_IO, path, batches=(1, 5))
    assert result["path"] == path and path.is_file()
    check_dims(path, IMAGE_IO)
    assert result["max_abs_diff"][IMAGE_FEATURES] < 1e-4


def test_fusion_export_dims_and_parity(fusion_onnx: tuple[FusionClassifier, Path]) -> None:
    model, path = fusion_onnx
    check_dims(path, FUSION_IO)
    rng = np.random.default_rng(1)
    feeds = [random_feeds(FUSION_IO, batch, rng=rng) for batch in (2, 7)]
    diffs = check_parity(model, path, feeds, output_names=[FUSED_PROBABILITIES, HEAD_PROBABILITIES])
    assert max(diffs.values()) < 1e-5


def test_check_parity_lists_every_differing_output(fusion_onnx: tuple[FusionClassifier, Path]) -> None:
    _, path = fusion_onnx
    perturbed = _fusion()
    with torch.no_grad():
        perturbed.classifier[-1].bias.add_(torch.tensor([2.0, -2.0, 0.0]))
    feeds = [random_feeds(FUSION_IO, batch, rng=np.random.default_rng(2)) for batch in (1, 5)]
    with pytest.raises(ExportError) as info:
        check_parity(
            perturbed,
            path,
            feeds,
            output_names=[FUSED_PROBABILITIES, HEAD_PROBABILITIES],
            model_name="fusion_classifier",
        )
    message = str(info.value)
    assert "fusion_classifier" in message
    lines = [line for line in message.splitlines() if line.strip().startswith(FUSED_PROBABILITIES)]
    assert len(lines) == 2, message  # both batch sizes
    assert all("max |diff| =" in line and "atol=" in line for line in lines)
    assert not any(line.strip().startswith(HEAD_PROBABILITIES) for line in message.splitlines())  # unchanged
    with torch.no_grad():
        perturbed.heads[1].bias.add_(torch.tensor([0.0, 3.0, -3.0]))
    with pytest.raises(ExportError) as info:
        check_parity(perturbed, path, feeds, output_names=[FUSED_PROBABILITIES, HEAD_PROBABILITIES])
    for name in (FUSED_PROBABILITIES, HEAD_PROBABILITIES):
        lines = [line for line in str(info.value).splitlines() if line.strip().startswith(name)]
        assert len(lines) == 2, str(info.value)
        assert all("max |diff| =" in line and "atol=" in line for line in lines)


def test_check_dims_reports_fixed_batch(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = ImageEncoder(size=8, feature_dim=4).eval()
    example = random_feeds(IMAGE_IO, 3, rng=np.random.default_rng(0))
    path = export_onnx(model, example, tmp_path / "fixed.onnx", IMAGE_IO, dynamic={})
    with pytest.raises(ExportError) as info:
        check_dims(path, IMAGE_IO, model_name="image_encoder")
    message = str(info.value)
    assert "IMAGE_TENSOR: expected dims [batch, 1, 8, 8]" in message
    assert "got [3, 1, 8, 8]" in message
    assert "IMAGE_FEATURES" in message


def test_check_dims_reports_wrong_contract(fusion_onnx: tuple[FusionClassifier, Path]) -> None:
    _, path = fusion_onnx
    wrong = ModelIO(
        (*FUSION_IO.inputs[:3], TensorSpec(IMAGE_MASK, "INT64", (2,)), *FUSION_IO.inputs[4:]), FUSION_IO.outputs
    )
    with pytest.raises(ExportError) as info:
        check_dims(path, wrong)
    message = str(info.value)
    assert "IMAGE_MASK: expected dtype INT64, got FP32" in message
    assert "IMAGE_MASK: expected dims [batch, 2]" in message and "got [s" in message
