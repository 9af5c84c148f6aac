"""Fusion-plus-classifier heads over the three modality feature vectors, with one classification head per modality.

Every strategy first replaces an absent modality's features by zeros (``torch.where`` on its mask,
so even NaN/Inf from an encoder run on an empty input cannot leak through) and masks it out again
after projection, so an absent modality has no influence at all on the fused output.

Multi-task: each modality's projection (shared with the fusion) also feeds a linear classification head of
its own, trained jointly with the fused prediction (:mod:`trimodal.training.heads`). The served graph returns
both the fused probabilities and every head's probabilities (rows image, text, audio).

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
Features = tuple[torch.Tensor, ...] | list[torch.Tensor]


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
        self.heads = nn.ModuleList(nn.Linear(hidden_dim, num_classes) for _ in self.feature_dims)

    def project(self, features: Features, masks: Features) -> list[torch.Tensor]:
        """Every modality's projected features, zeros where it is absent.

        Args:
            features: (image, text, audio) features, (B, D_m) each.
            masks: (image, text, audio) masks, (B, 1) each, 1 = present.

        Returns:
            Three (B, hidden_dim) tensors.
        """
        projected = []
        for proj, feature, mask in zip(self.proj, features, masks, strict=True):
            present = mask > 0.5
            hidden = proj(torch.where(present, feature, torch.zeros_like(feature)))
            projected.append(torch.where(present, hidden, torch.zeros_like(hidden)))
        return projected

    def combine(self, projected: list[torch.Tensor], masks: Features) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused representation and per-modality weights of projected features (see the strategies above).

        Args:
            projected: the three (B, hidden_dim) projections, zeros where absent.
            masks: (image, text, audio) masks, (B, 1) each; a modality with mask 0 is left out.

        Returns:
            The fused vector (B, F) and the modality weights (B, 3) (the masks for ``concat``).
        """
        mask3 = torch.cat([(mask > 0.5).to(projected[0].dtype) for mask in masks], dim=1)  # (B, 3)
        projected = [torch.where(mask3[:, i : i + 1] > 0.5, h, torch.zeros_like(h)) for i, h in enumerate(projected)]
        present3 = mask3 > 0.5
        if self.strategy == "concat":
            return torch.cat([*projected, mask3], dim=1), mask3
        tokens = torch.stack(projected, dim=1)  # (B, 3, H)
        if self.strategy == "weighted":
            weights = _masked_softmax(self.modality_logits.unsqueeze(0).expand_as(mask3), present3)
            return (weights.unsqueeze(-1) * tokens).sum(dim=1), weights
        tokens = tokens + self.modality_embedding.unsqueeze(0)
        query, key, value = self.query(tokens), self.key(tokens), self.value(tokens)
        scores = query @ key.transpose(1, 2) / math.sqrt(self.hidden_dim)  # (B, 3, 3)
        attn = _masked_softmax(scores, present3.unsqueeze(1))
        tokens = self.attn_norm(tokens + self.attn_out(attn @ value))
        weights = _masked_softmax(self.gate(tokens).squeeze(-1), present3)
        return (weights.unsqueeze(-1) * tokens).sum(dim=1), weights

    def head_logits(self, projected: list[torch.Tensor]) -> torch.Tensor:
        """Every modality head's class logits, (B, 3, C)."""
        return torch.stack([head(hidden) for head, hidden in zip(self.heads, projected, strict=True)], dim=1)

    def multitask_logits(
        self, features: Features, present: Features, kept: Features, *, detach_heads: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Training view: fused logits over the kept modalities and every head's logits on the present ones.

        Args:
            features: (image, text, audio) features, (B, D_m) each.
            present: the masks of the modalities the samples have.
            kept: the masks after modality dropout (a subset of ``present``), used by the fusion.
            detach_heads: feed the heads detached projections (single-task: their losses then train only
                the heads, never the shared projections).

        Returns:
            Fused logits (B, C) and head logits (B, 3, C).
        """
        projected = self.project(features, present)
        fused, _ = self.combine(projected, kept)
        heads_in = [hidden.detach() for hidden in projected] if detach_heads else projected
        return self.classifier(fused), self.head_logits(heads_in)

    def fuse(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Fused representation and modality weights; same arguments as :meth:`forward`."""
        features, masks = inputs[:3], inputs[3:]
        return self.combine(self.project(features, masks), masks)

    def logits(self, *inputs: torch.Tensor) -> torch.Tensor:
        """Fused class logits (B, C); same arguments as :meth:`forward`."""
        fused, _ = self.fuse(*inputs)
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
        """Fused class probabilities and every modality head's probabilities.

        Args:
            image_features: (B, D_image).
            text_features: (B, D_text).
            audio_features: (B, D_audio).
            image_mask: (B, 1), 1 = present, 0 = absent.
            text_mask: (B, 1).
            audio_mask: (B, 1).

        Returns:
            ``(FUSED_PROBABILITIES, HEAD_PROBABILITIES)``: (B, C) and (B, 3, C). A head's row of an absent
            modality is computed from zeros and means nothing (the postprocess step replaces it with NaN).
        """
        masks = (image_mask, text_mask, audio_mask)
        projected = self.project((image_features, text_features, audio_features), masks)
        fused, _ = self.combine(projected, masks)
        probabilities = torch.softmax(self.classifier(fused), dim=-1)
        return probabilities, torch.softmax(self.head_logits(projected), dim=-1)
