"""Training augmentation of the image encoder's inputs: what the deterministic normalisation cannot undo.

:mod:`trimodal.runtime.normalize` removes polarity, transparency, size, aspect, position and most of the
contrast differences. What remains varies from one writer, pen or scanner to the next, so the encoder is
trained on randomly altered copies of its (already normalised) inputs, drawn anew for every batch from a seeded
generator:

* stroke width: thicker (3x3 max pooling of the ink) or thinner (3x3 min pooling, mixed back in) strokes;
* geometry: rotation (+-``ROTATION_DEG``), scale (``SCALE``) and shift (+-``SHIFT`` of the half-side);
* blur: a Gaussian of sigma in ``BLUR_SIGMA`` (thumbnails, out-of-focus photos);
* contrast: ink scaled by a factor in ``INK_LEVEL`` and raised to a power in ``GAMMA``.

Everything runs in torch on the batch, per sample, on the encoder's input scale (``-1`` ink, ``+1`` paper).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

LOGGER = logging.getLogger(__name__)

THICKER_PROB = 0.25
THINNER_PROB = 0.2
ROTATION_DEG = 12.0
SCALE = (0.85, 1.1)
SHIFT = 0.08
BLUR_PROB = 0.3
BLUR_SIGMA = (0.4, 1.1)
INK_LEVEL = (0.7, 1.0)
GAMMA = (0.7, 1.4)
_BLUR_RADIUS = 2


def _uniform(count: int, bounds: tuple[float, float], generator: torch.Generator) -> torch.Tensor:
    import torch

    low, high = bounds
    return low + (high - low) * torch.rand(count, generator=generator)


def _chosen(count: int, prob: float, generator: torch.Generator) -> torch.Tensor:
    """(B, 1, 1, 1) booleans, True with probability ``prob``."""
    import torch

    return (torch.rand(count, generator=generator) < prob).view(-1, 1, 1, 1)


def stroke_width(ink: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Thicken (max pooling) or thin (min pooling, half mixed back) the strokes of some samples."""
    import torch
    from torch.nn import functional

    thicker = functional.max_pool2d(ink, 3, stride=1, padding=1)
    thinner = 0.5 * (ink - functional.max_pool2d(-ink, 3, stride=1, padding=1))
    count = len(ink)
    ink = torch.where(_chosen(count, THICKER_PROB, generator), thicker, ink)
    return torch.where(_chosen(count, THINNER_PROB / (1 - THICKER_PROB), generator), thinner, ink)


def geometry(ink: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random rotation, scale and shift of every sample (bilinear, no ink enters from outside)."""
    import torch
    from torch.nn import functional

    count = len(ink)
    angle = torch.deg2rad(_uniform(count, (-ROTATION_DEG, ROTATION_DEG), generator))
    scale = _uniform(count, SCALE, generator)
    shift = _uniform(2 * count, (-SHIFT, SHIFT), generator).view(count, 2)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = functional.affine_grid(theta, list(ink.shape), align_corners=False)
    return functional.grid_sample(ink, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def blur(ink: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A Gaussian blur of random width for some samples (a per-sample kernel, one grouped convolution)."""
    import torch
    from torch.nn import functional

    count, _, height, width = ink.shape
    sigma = _uniform(count, BLUR_SIGMA, generator).view(-1, 1)
    offsets = torch.arange(-_BLUR_RADIUS, _BLUR_RADIUS + 1, dtype=ink.dtype).view(1, -1)
    line = torch.exp(-(offsets**2) / (2 * sigma**2))
    line = line / line.sum(dim=1, keepdim=True)
    kernels = (line.unsqueeze(2) * line.unsqueeze(1)).unsqueeze(1)  # (B, 1, k, k)
    blurred = functional.conv2d(ink.view(1, count, height, width), kernels, padding=_BLUR_RADIUS, groups=count)
    return torch.where(_chosen(count, BLUR_PROB, generator), blurred.view_as(ink), ink)


def contrast(ink: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fainter or bolder ink: ``level * ink ** gamma`` per sample."""
    count = len(ink)
    level = _uniform(count, INK_LEVEL, generator).view(-1, 1, 1, 1)
    gamma = _uniform(count, GAMMA, generator).view(-1, 1, 1, 1)
    return level * ink.clamp(0.0, 1.0) ** gamma


def augment_images(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Randomly altered copies of a batch of encoder inputs.

    Args:
        images: float (B, 1, S, S) on the encoder's scale (``-1`` ink, ``+1`` paper).
        generator: the seeded random generator (every draw comes from it).

    Returns:
        A new tensor of the same shape and scale.
    """
    import torch

    with torch.no_grad():
        ink = ((1.0 - images) / 2.0).clamp(0.0, 1.0)
        ink = contrast(blur(geometry(stroke_width(ink, generator), generator), generator), generator)
        return (1.0 - 2.0 * ink.clamp(0.0, 1.0)).contiguous()
