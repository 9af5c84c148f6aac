"""Image side of the dataset: real 8x8 handwritten-digit scans (scikit-learn), jittered and encoded as PNG/JPEG.

Rendering: dark ink on light paper, upsampled with bicubic interpolation through a random affine transform
(rotation, scale, shear, shift), random paper/ink levels and Gaussian noise; about 15% RGB with a tint,
about 20% rendered at 1.5x the spec size (the preprocessor resizes), 30% JPEG (quality 60-95), 70% PNG.
A corrupted image is pure noise (white or smooth blobs): it carries no information about the digit.
"""

from __future__ import annotations

import io
import logging

import numpy as np
from PIL import Image

LOGGER = logging.getLogger(__name__)

JPEG_FRACTION = 0.3


def load_scans() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 scans of scikit-learn's ``load_digits``.

    Returns:
        ``(images, labels)``: float32 ``(N, 8, 8)`` ink intensity in [0, 1] and int64 ``(N,)``.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    return (digits.images / 16.0).astype(np.float32), digits.target.astype(np.int64)


def _render(scan: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """Ink map (0..1) of ``size x size`` through a random affine transform of the 8x8 scan."""
    angle = np.deg2rad(rng.uniform(-10.0, 10.0))
    shear = rng.uniform(-0.1, 0.1)
    zoom = rng.uniform(0.9, 1.1)
    shift = rng.uniform(-0.06, 0.06, size=2) * size
    per_pixel = 8.0 / (0.8 * size * zoom)  # input pixels per output pixel: the digit spans ~80% of the frame
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = per_pixel * np.array([[cos, -sin + shear], [sin, cos]])
    centre_out = np.array([size / 2.0, size / 2.0]) + shift
    offset = np.array([4.0, 4.0]) - matrix @ centre_out
    image = Image.fromarray(scan, mode="F").transform(
        (size, size),
        Image.Transform.AFFINE,
        (matrix[0, 0], matrix[0, 1], offset[0], matrix[1, 0], matrix[1, 1], offset[1]),
        resample=Image.Resampling.BICUBIC,
        fillcolor=0.0,
    )
    ink = np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)
    gamma = rng.uniform(0.75, 1.25)  # thinner / thicker looking strokes
    return ink**gamma


def _noise_image(size: int, rng: np.random.Generator) -> np.ndarray:
    """A uninformative noise picture in [0, 1]."""
    if rng.random() < 0.5:
        return np.clip(rng.normal(rng.uniform(0.3, 0.7), rng.uniform(0.15, 0.35), (size, size)), 0.0, 1.0)
    from scipy.ndimage import gaussian_filter

    field = gaussian_filter(rng.standard_normal((size, size)), sigma=rng.uniform(1.5, 4.0))
    field = (field - field.min()) / (np.ptp(field) + 1e-6)
    return np.clip(field + rng.normal(0.0, 0.05, (size, size)), 0.0, 1.0)


def make_image(scan: np.ndarray, size: int, rng: np.random.Generator, *, corrupted: bool) -> bytes:
    """Render one scan (or, corrupted, pure noise) and encode it as PNG or JPEG bytes.

    Args:
        scan: float ``(8, 8)`` ink intensity in [0, 1].
        size: the spec's image size; about 20% are rendered at 1.5x that.
        rng: the random generator.
        corrupted: replace the picture with noise.

    Returns:
        The encoded file.
    """
    out_size = size if rng.random() < 0.8 else round(size * 1.5)
    if corrupted:
        gray = _noise_image(out_size, rng)
    else:
        ink = _render(scan, out_size, rng)
        paper = rng.uniform(0.75, 1.0)
        ink_level = rng.uniform(0.0, 0.3)
        gray = paper + (ink_level - paper) * ink
        gray = gray + rng.normal(0.0, rng.uniform(0.01, 0.06), gray.shape)
    pixels = np.clip(np.round(gray * 255.0), 0, 255).astype(np.uint8)
    if rng.random() < 0.15:
        tint = rng.uniform(0.85, 1.0, size=3)
        image = Image.fromarray(np.clip(pixels[..., None] * tint, 0, 255).astype(np.uint8), mode="RGB")
    else:
        image = Image.fromarray(pixels, mode="L")
    buffer = io.BytesIO()
    if rng.random() < JPEG_FRACTION:
        image.save(buffer, format="JPEG", quality=int(rng.integers(60, 96)))
    else:
        image.save(buffer, format="PNG")
    return buffer.getvalue()
