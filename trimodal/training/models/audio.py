"""Audio encoder: a small 1-D CNN over the log-mel spectrogram of one clip."""

from __future__ import annotations

import logging

import torch
from torch import nn

LOGGER = logging.getLogger(__name__)


def _block(c_in: int, c_out: int, kernel: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv1d(c_in, c_out, kernel_size=kernel, padding=kernel // 2, bias=False),
        nn.BatchNorm1d(c_out),
        nn.ReLU(inplace=True),
    )


class AudioEncoder(nn.Module):
    """Small CNN: ``AUDIO_TENSOR`` (B, 1, n_mels, n_frames) -> ``AUDIO_FEATURES`` (B, feature_dim).

    The mel bands are the channels of a 1-D convolution over time (cheap on a CPU, and well suited to
    short spoken words). A batch norm over the mel bands standardises the log-mel scale. Pooling is
    fixed-stride max pooling then a plain mean over time, which exports with a dynamic batch axis
    (no LSTM, no adaptive pooling).

    Args:
        n_mels: number of mel bands.
        n_frames: number of STFT frames per clip.
        feature_dim: size of the output feature vector.
    """

    def __init__(self, n_mels: int, n_frames: int, feature_dim: int) -> None:
        super().__init__()
        self.n_mels = n_mels
        self.n_frames = n_frames
        self.feature_dim = feature_dim
        self.input_norm = nn.BatchNorm1d(n_mels)
        self.body = nn.Sequential(
            _block(n_mels, 64, 5),
            nn.MaxPool1d(2),
            _block(64, 96, 5),
            nn.MaxPool1d(2),
            _block(96, 128, 3),
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(128, feature_dim)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        """Encode a batch of log-mel spectrograms.

        Args:
            audio: float tensor (B, 1, n_mels, n_frames).

        Returns:
            Features (B, feature_dim).
        """
        x = audio.flatten(1, 2)  # (B, n_mels, n_frames)
        x = self.body(self.input_norm(x))
        x = x.mean(dim=2)
        return self.head(self.dropout(x))
