"""Image encoder: a small CNN over the preprocessed grayscale digit image."""

from __future__ import annotations

import logging

import torch
from torch import nn

LOGGER = logging.getLogger(__name__)


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, kernel_size=3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.ReLU(inplace=True),
    )


class ImageEncoder(nn.Module):
    """Small CNN: ``IMAGE_TENSOR`` (B, 1, S, S) -> ``IMAGE_FEATURES`` (B, feature_dim).

    Global average pooling is written as a plain mean so that the ONNX graph keeps a dynamic batch
    axis and accepts any image size.

    Args:
        size: side length ``S`` of the square input image.
        feature_dim: size of the output feature vector.
    """

    def __init__(self, size: int, feature_dim: int) -> None:
        super().__init__()
        self.size = size
        self.feature_dim = feature_dim
        self.body = nn.Sequential(
            _block(1, 16),
            nn.MaxPool2d(2),
            _block(16, 32),
            nn.MaxPool2d(2),
            _block(32, 64),
        )
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(64, feature_dim)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Encode a batch of images.

        Args:
            image: float tensor (B, 1, S, S).

        Returns:
            Features (B, feature_dim).
        """
        x = self.body(image)
        x = x.mean(dim=(2, 3))
        return self.head(self.dropout(x))
