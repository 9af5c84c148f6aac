"""Unit tests of the torch encoders and fusion heads (tiny dims, no server)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from trimodal.training.models.audio import AudioEncoder  # noqa: E402
from trimodal.training.models.fusion import STRATEGIES, FusionClassifier  # noqa: E402
from trimodal.training.models.image import ImageEncoder  # noqa: E402

DIMS = (8, 12, 6)
CLASSES = 5


def _inputs(batch: int = 6, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    feats = [torch.randn(batch, d, generator=gen) for d in DIMS]
    masks = [torch.ones(batch, 1) for _ in DIMS]
    return [*feats, *masks]


def _head(strategy: str) -> FusionClassifier:
    torch.manual_seed(0)
    return FusionClassifier(strategy, DIMS, hidden_dim=16, num_classes=CLASSES).eval()


def test_image_encoder_shape() -> None:
    encoder = ImageEncoder(size=16, feature_dim=7).eval()
    assert encoder(torch.randn(3, 1, 16, 16)).shape == (3, 7)


def test_audio_encoder_shape() -> None:
    encoder = AudioEncoder(n_mels=10, n_frames=21, feature_dim=9).eval()
    assert encoder(torch.randn(4, 1, 10, 21)).shape == (4, 9)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_fusion_shapes_and_probabilities(strategy: str) -> None:
    probs, heads = _head(strategy)(*_inputs())
    assert probs.shape == (6, CLASSES)
    assert heads.shape == (6, 3, CLASSES)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(6))
    torch.testing.assert_close(heads.sum(dim=2), torch.ones(6, 3))
    assert bool((probs >= 0).all()) and bool((heads >= 0).all())
    assert not torch.allclose(heads[:, 0], heads[:, 1])  # one head per modality


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_modality_head_sees_only_its_own_modality(strategy: str) -> None:
    head = _head(strategy)
    inputs = _inputs()
    changed = list(inputs)
    changed[1] = inputs[1] + torch.randn(inputs[1].shape)  # other text features
    with torch.no_grad():
        _, before = head(*inputs)
        _, after = head(*changed)
    torch.testing.assert_close(before[:, [0, 2]], after[:, [0, 2]])
    assert not torch.allclose(before[:, 1], after[:, 1])


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("absent", [(0,), (1,), (2,), (0, 1), (0, 2), (1, 2)])
def test_absent_modality_has_no_influence(strategy: str, absent: tuple[int, ...]) -> None:
    head = _head(strategy)
    inputs = _inputs()
    for i in absent:
        inputs[3 + i] = torch.zeros(6, 1)
    with torch.no_grad():
        reference, _ = head(*inputs)
        changed = list(inputs)
        for i in absent:
            junk = torch.randn(6, DIMS[i]) * 100
            junk[0, 0] = float("nan")
            junk[1, 0] = float("inf")
            changed[i] = junk
        after, _ = head(*changed)
    assert torch.equal(reference, after)
    # A present modality does influence the output.
    present = next(i for i in range(3) if i not in absent)
    changed[present] = changed[present] + torch.randn(changed[present].shape)
    with torch.no_grad():
        moved, _ = head(*changed)
    assert not torch.allclose(moved, reference)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_per_sample_masks_are_independent(strategy: str) -> None:
    """A row's output depends only on its own present modalities, whatever the rest of the batch holds."""
    head = _head(strategy)
    inputs = _inputs(batch=4)
    inputs[3] = torch.tensor([[1.0], [0.0], [1.0], [0.0]])
    with torch.no_grad():
        batch, _ = head(*inputs)
        single, _ = head(*(t[1:2] for t in inputs))
    torch.testing.assert_close(batch[1:2], single)


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_all_absent_is_finite(strategy: str) -> None:
    inputs = _inputs()
    for i in range(3):
        inputs[3 + i] = torch.zeros(6, 1)
    probs, _ = _head(strategy)(*inputs)
    assert bool(torch.isfinite(probs).all())


def test_unknown_strategy() -> None:
    with pytest.raises(ValueError, match="unknown fusion strategy"):
        FusionClassifier("median", DIMS, 16, CLASSES)


def test_build_encoder_unknown_name() -> None:
    from trimodal.spec import load_spec
    from trimodal.training.models import build_encoder

    with pytest.raises(ValueError, match="unknown encoder"):
        build_encoder("video_encoder", load_spec())


def test_text_encoder_matches_sentence_transformers() -> None:
    pytest.importorskip("transformers")
    st = pytest.importorskip("sentence_transformers")
    from transformers import AutoTokenizer

    from trimodal.training.models.text import TextEncoder, minilm_path

    torch.set_num_threads(2)
    folder = str(minilm_path())
    sentences = ["the digit seven, written out", "Je dis trois et pas quatre."]
    encoder = TextEncoder(folder)
    tokens = AutoTokenizer.from_pretrained(folder)(
        sentences, padding="max_length", truncation=True, max_length=32, return_tensors="pt"
    )
    with torch.no_grad():
        ours = encoder(tokens["input_ids"], tokens["attention_mask"]).numpy()
    reference = st.SentenceTransformer(folder, device="cpu").encode(sentences, convert_to_numpy=True)
    assert ours.shape == (2, 384)
    np.testing.assert_allclose(ours, reference, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-5)
    # An absent text (all padding) gives a finite (zero) vector.
    zeros = torch.zeros(1, 32, dtype=torch.long)
    with torch.no_grad():
        assert bool(torch.isfinite(encoder(zeros, zeros)).all())
