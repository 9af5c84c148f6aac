"""Torch encoders and fusion heads.

Importing this package does not import torch; the factories below import the model modules lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trimodal.contract import ENCODERS, FUSION
from trimodal.spec import PipelineSpec

if TYPE_CHECKING:
    from torch import nn

    from trimodal.training.models.fusion import FusionClassifier

TRAINED_MODALITIES: tuple[str, ...] = ("image", "audio")
"""The modalities whose encoder is trained here; the text encoder is the pretrained all-MiniLM-L6-v2, frozen."""


def encoder_name(modality: str) -> str:
    """The model name of a modality's encoder (``image`` -> ``image_encoder``), one of the contract's.

    Raises:
        ValueError: if the contract has no such encoder.
    """
    name = f"{modality}_encoder"
    if name not in _encoder_names():
        raise ValueError(f"unknown encoder {name!r}; expected one of {list(_encoder_names())}")
    return name


def _encoder_names() -> tuple[str, ...]:
    return tuple(name for name in ENCODERS if name != FUSION)


def build_encoder(name: str, spec: PipelineSpec) -> nn.Module:
    """Build an (untrained, except the pretrained text encoder) encoder from the spec.

    Args:
        name: ``image_encoder``, ``text_encoder`` or ``audio_encoder`` (``image``/``text``/``audio`` too).
        spec: the pipeline spec.

    Returns:
        The torch module.

    Raises:
        ValueError: for an unknown name, or a text encoder whose size differs from the spec.
    """
    key = name.removesuffix("_encoder")
    modalities = spec.modalities
    if key == "image":
        from trimodal.training.models.image import ImageEncoder

        return ImageEncoder(modalities.image.size, modalities.image.feature_dim)
    if key == "audio":
        from trimodal.training.models.audio import AudioEncoder

        return AudioEncoder(modalities.audio.n_mels, modalities.audio.n_frames, modalities.audio.feature_dim)
    if key == "text":
        from trimodal.training.models.text import TextEncoder

        encoder = TextEncoder()
        if encoder.feature_dim != modalities.text.feature_dim:
            raise ValueError(
                f"modalities.text.feature_dim: expected {encoder.feature_dim} (the text encoder's hidden size), "
                f"got {modalities.text.feature_dim}"
            )
        return encoder
    raise ValueError(f"unknown encoder {name!r}; expected one of {list(_encoder_names())}")


def build_fusion(spec: PipelineSpec, strategy: str | None = None) -> FusionClassifier:
    """Build a fusion head from the spec.

    Args:
        spec: the pipeline spec.
        strategy: the fusion strategy; defaults to the served one (``spec.fusion.strategy``).

    Returns:
        The untrained :class:`~trimodal.training.models.fusion.FusionClassifier`.
    """
    from trimodal.training.models.fusion import FusionClassifier

    modalities = spec.modalities
    return FusionClassifier(
        strategy or spec.fusion.strategy,
        (modalities.image.feature_dim, modalities.text.feature_dim, modalities.audio.feature_dim),
        spec.fusion.hidden_dim,
        spec.num_classes,
    )
