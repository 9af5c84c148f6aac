"""Torch encoders and fusion heads.

Importing this package does not import torch; the factories below import the model modules lazily.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from trimodal.spec import PipelineSpec

if TYPE_CHECKING:
    from torch import nn

    from trimodal.training.models.fusion import FusionClassifier

ENCODER_NAMES: tuple[str, ...] = ("image_encoder", "text_encoder", "audio_encoder")


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
    raise ValueError(f"unknown encoder {name!r}; expected one of {list(ENCODER_NAMES)}")


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
