"""Fusion-plus-classifier heads over the three modality feature vectors.

Every strategy first replaces an absent modality's features by zeros (``torch.where`` on its mask,
so even NaN/Inf from an encoder run on an empty input cannot leak through) and masks it out again
after projection, so an absent modality has no influence at all on the output.

Strategies:
    ``concat``: concatenation of the masked projected features (plus the masks) -> MLP.
    ``weighted``: learned per-modality weights ``w_i`` renormalised over the present modalities,
        ``h = sum_i w_i h_i`` -> MLP.
    ``attention``: the three projected features are tokens (plus a modality embedding); one masked
        self-attention layer lets each token see the others, then masked attention pooling (a
        per-sample gate over the present modalities) -> MLP.
"""

from __future__ import annotations

import logging
import math

import torch
from torch import nn

LOGGER = logging.getLogger(__name__)

STRATEGIES: tuple[str, ...] = ("concat", "weighted", "attention")
# Large enough to zero a softmax entry, small enough to stay finite in fp16 (TensorRT engines).
_NEG = -1.0e4


def _masked_softmax(scores: torch.Tensor, present: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over ``dim`` restricted to entries where ``present`` is true; all-absent rows give 0."""
    scores = torch.where(present, scores, torch.full_like(scores, _NEG))
    weights = torch.softmax(scores, dim=dim)
    return weights * present.to(weights.dtype)


class FusionClassifier(nn.Module):
    """Fuse image, text and audio features into class probabilities.

    Args:
        strategy: ``concat``, ``weighted`` or ``attention``.
        feature_dims: feature sizes of (image, text, audio).
        hidden_dim: width of the projections and the classifier MLP.
        num_classes: number of classes.
        dropout: dropout probability inside the head (training only).

    Raises:
        ValueError: for an unknown strategy.
    """

    def __init__(
        self,
        strategy: str,
        feature_dims: tuple[int, int, int],
        hidden_dim: int,
        num_classes: int,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if strategy not in STRATEGIES:
            raise ValueError(f"unknown fusion strategy {strategy!r}; expected one of {list(STRATEGIES)}")
        self.strategy = strategy
        self.feature_dims = tuple(feature_dims)
        self.hidden_dim = hidden_dim
        self.num_classes = num_classes
        self.proj = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, hidden_dim), nn.ReLU(), nn.Dropout(dropout))
            for dim in self.feature_dims
        )
        fused_dim = 3 * hidden_dim + 3 if strategy == "concat" else hidden_dim
        if strategy == "weighted":
            self.modality_logits = nn.Parameter(torch.zeros(3))
        if strategy == "attention":
            self.modality_embedding = nn.Parameter(torch.randn(3, hidden_dim) * 0.02)
            self.query = nn.Linear(hidden_dim, hidden_dim)
            self.key = nn.Linear(hidden_dim, hidden_dim)
            self.value = nn.Linear(hidden_dim, hidden_dim)
            self.attn_out = nn.Linear(hidden_dim, hidden_dim)
            self.attn_norm = nn.LayerNorm(hidden_dim)
            self.gate = nn.Sequential(nn.Linear(hidden_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, 1))
        self.classifier = nn.Sequential(
            nn.Linear(fused_dim, hidden_dim),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden_dim, num_classes),
        )

    def fuse(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        audio_features: torch.Tensor,
        image_mask: torch.Tensor,
        text_mask: torch.Tensor,
        audio_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused representation and per-modality weights.

        Args:
            image_features: (B, D_image).
            text_features: (B, D_text).
            audio_features: (B, D_audio).
            image_mask: (B, 1), 1 = present, 0 = absent.
            text_mask: (B, 1).
            audio_mask: (B, 1).

        Returns:
            The fused vector (B, F) and the modality weights (B, 3) (the masks for ``concat``).
        """
        masks = (image_mask, text_mask, audio_mask)
        projected = []
        for proj, features, mask in zip(self.proj, (image_features, text_features, audio_features), masks, strict=True):
            present = mask > 0.5
            features = torch.where(present, features, torch.zeros_like(features))
            hidden = proj(features)
            projected.append(torch.where(present, hidden, torch.zeros_like(hidden)))
        mask3 = torch.cat([(mask > 0.5).to(image_features.dtype) for mask in masks], dim=1)  # (B, 3)
        present3 = mask3 > 0.5
        if self.strategy == "concat":
            return torch.cat([*projected, mask3], dim=1), mask3
        tokens = torch.stack(projected, dim=1)  # (B, 3, H)
        if self.strategy == "weighted":
            scores = self.modality_logits.unsqueeze(0).expand_as(mask3)
            weights = _masked_softmax(scores, present3)
            return (weights.unsqueeze(-1) * tokens).sum(dim=1), weights
        # attention
        tokens = tokens + self.modality_embedding.unsqueeze(0)
        query, key, value = self.query(tokens), self.key(tokens), self.value(tokens)
        scores = query @ key.transpose(1, 2) / math.sqrt(self.hidden_dim)  # (B, 3, 3)
        attn = _masked_softmax(scores, present3.unsqueeze(1))
        tokens = self.attn_norm(tokens + self.attn_out(attn @ value))
        gate = self.gate(tokens).squeeze(-1)  # (B, 3)
        weights = _masked_softmax(gate, present3)
        return (weights.unsqueeze(-1) * tokens).sum(dim=1), weights

    def logits(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        audio_features: torch.Tensor,
        image_mask: torch.Tensor,
        text_mask: torch.Tensor,
        audio_mask: torch.Tensor,
    ) -> torch.Tensor:
        """Class logits (B, C); same arguments as :meth:`forward`."""
        fused, _ = self.fuse(image_features, text_features, audio_features, image_mask, text_mask, audio_mask)
        return self.classifier(fused)

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        audio_features: torch.Tensor,
        image_mask: torch.Tensor,
        text_mask: torch.Tensor,
        audio_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Class probabilities, twice (``PROBABILITIES`` and ``LABEL``).

        Args:
            image_features: (B, D_image).
            text_features: (B, D_text).
            audio_features: (B, D_audio).
            image_mask: (B, 1), 1 = present, 0 = absent.
            text_mask: (B, 1).
            audio_mask: (B, 1).

        Returns:
            ``(probabilities, label)``, both (B, C); ``label`` is an identical copy that Triton's
            classification extension turns into top-k labels.
        """
        logits = self.logits(image_features, text_features, audio_features, image_mask, text_mask, audio_mask)
        probabilities = torch.softmax(logits, dim=-1)
        return probabilities, probabilities.clone()
