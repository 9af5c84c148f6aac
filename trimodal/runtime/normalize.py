"""Deterministic image normalisation: what a user's picture of a digit is turned into before the encoder sees it.

Torch-free and shared: :func:`trimodal.runtime.preprocess.decode_image` calls it, so the training features, the
Triton preprocessor and the in-process pipeline run exactly this code. Steps, each undoing one way in which
people's images differ from one another:

1. **Alpha flattened** (:func:`flatten_alpha`): transparent pixels become the background. The background is the
   colour that contrasts with the visible (mostly opaque) content: dark ink on a transparent canvas is put on
   white, light ink on black.
2. **Grayscale** with the ITU-R 601-2 luma weights (what Pillow's ``convert("L")`` uses), in [0, 1].
3. **Polarity from the border** (:func:`ink_map`): the median of a ring of border pixels is the background level;
   a dark border means light strokes on a dark background, which is inverted.
4. **Contrast**: background level -> no ink, the 1st percentile of the darkest pixels -> full ink, clipped. An
   image without contrast (blank) has no ink at all.
5. **Crop and centre, aspect kept** (:func:`content_box`, :func:`fit_content`): the box holding the central 98%
   of the ink mass (soft-thresholded, so sensor noise and stray specks do not stretch it) is centred in a
   square whose side is the box's longer side / :data:`CONTENT_FILL`, and that square is resized
   (antialiased bilinear) to ``size x size``.

The result is an ink map in [0, 1] (0 = background); :func:`normalize_image` returns it as gray
``1 - ink`` (white background, black ink). Very large images are first box-reduced to at most
:data:`ANALYSIS_SIDE_FACTOR` times the output size, which bounds the cost and does not change the result at
the output resolution.
"""

from __future__ import annotations

import logging

import numpy as np
from PIL import Image

LOGGER = logging.getLogger(__name__)

LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)
"""ITU-R 601-2 luma weights (R, G, B)."""
OPAQUE = 0.5
"""Pixels with at least this alpha are "visible content" when choosing the background of transparent ones."""
BORDER_FRACTION = 0.08
"""Width of the border ring that gives the background level, as a share of the shorter side (at least 1 px)."""
INK_PERCENTILE = 1.0
"""The darkest ``INK_PERCENTILE`` percent of the pixels define full ink (contrast normalisation)."""
MIN_CONTRAST = 0.05
"""Below this background-to-ink contrast the image is blank (no ink)."""
INK_SOFT_RANGE = (0.3, 0.7)
"""Ink below the first value does not count for the content box; above the second it counts fully."""
MASS_TRIM = 0.01
"""Share of the ink mass ignored on each side when finding the content box (robust to specks)."""
CONTENT_FILL = 0.8
"""The content's longer side fills this share of the output side (the training renders fill about 80%)."""
MIN_CROP_FRACTION = 0.2
"""The crop square is never smaller than this share of the image's shorter side (tiny specks stay small)."""
ANALYSIS_SIDE_FACTOR = 8
"""Images whose shorter side exceeds this many output sizes are box-reduced first (cost bound)."""
LONG_SIDE_FACTOR = 4
"""... and so are images whose longer side exceeds this many times that (thin strips; memory bound)."""


def flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """Grayscale of an RGBA image whose transparent pixels become the background.

    Args:
        rgba: float32 ``(H, W, 4)`` in [0, 1].

    Returns:
        float32 ``(H, W)`` in [0, 1]: ``luma * alpha + background * (1 - alpha)``, where the background is white
        when the visible content (alpha >= :data:`OPAQUE`) is dark on average and black when it is light.
    """
    luma = rgba[..., :3] @ LUMA
    alpha = rgba[..., 3]
    if float(alpha.min()) >= 1.0:
        return luma.astype(np.float32, copy=False)
    visible = alpha >= OPAQUE
    content = float(luma[visible].mean()) if visible.any() else 0.0
    background = 1.0 if content < 0.5 else 0.0
    return (luma * alpha + background * (1.0 - alpha)).astype(np.float32)


def _border(gray: np.ndarray) -> np.ndarray:
    """The pixels of a ring along the image's edges (all pixels of a tiny image)."""
    height, width = gray.shape
    ring = max(1, round(BORDER_FRACTION * min(height, width)))
    if 2 * ring >= min(height, width):
        return gray.reshape(-1)
    return np.concatenate(
        [gray[:ring].reshape(-1), gray[-ring:].reshape(-1), gray[ring:-ring, :ring].reshape(-1),
         gray[ring:-ring, -ring:].reshape(-1)]
    )  # fmt: skip


def ink_map(gray: np.ndarray) -> np.ndarray:
    """Ink intensity of a grayscale image: polarity from the border, contrast stretched.

    Args:
        gray: float32 ``(H, W)`` in [0, 1].

    Returns:
        float32 ``(H, W)`` in [0, 1]: 0 at the background level (the border's median), 1 at the darkest
        :data:`INK_PERCENTILE` percent (after inverting a dark-background image); all zeros for a blank image.
    """
    gray = np.asarray(gray, dtype=np.float32)
    background = float(np.median(_border(gray)))
    if background < 0.5:
        gray, background = 1.0 - gray, 1.0 - background
    darkest = float(np.percentile(gray, INK_PERCENTILE))
    contrast = background - darkest
    if contrast < MIN_CONTRAST:
        return np.zeros_like(gray)
    return np.clip((background - gray) / contrast, 0.0, 1.0).astype(np.float32, copy=False)


def _mass_span(profile: np.ndarray) -> tuple[float, float]:
    """``[start, stop)`` (in pixels) holding the central ``1 - 2 * MASS_TRIM`` of a mass profile."""
    cumulative = np.cumsum(profile, dtype=np.float64)
    total = cumulative[-1]
    start = int(np.searchsorted(cumulative, MASS_TRIM * total, side="right"))
    stop = int(np.searchsorted(cumulative, (1.0 - MASS_TRIM) * total, side="left")) + 1
    return float(start), float(max(stop, start + 1))


def content_box(ink: np.ndarray) -> tuple[float, float, float, float] | None:
    """The box around the ink: ``(left, top, right, bottom)`` in pixels, or None without ink.

    Ink below ``INK_SOFT_RANGE[0]`` does not count (noise), ink above ``INK_SOFT_RANGE[1]`` counts fully; the
    box holds the central ``1 - 2 * MASS_TRIM`` of the counted mass along each axis.

    Args:
        ink: float32 ``(H, W)`` ink map in [0, 1].

    Returns:
        The box, or None when nothing counts as ink.
    """
    low, high = INK_SOFT_RANGE
    weight = np.clip((ink - low) / (high - low), 0.0, 1.0)
    if not weight.any():
        return None
    top, bottom = _mass_span(weight.sum(axis=1))
    left, right = _mass_span(weight.sum(axis=0))
    return left, top, right, bottom


def fit_content(ink: np.ndarray, size: int) -> np.ndarray:
    """Crop the ink's content box into a centred square (aspect kept) and resize it to ``size x size``.

    Args:
        ink: float32 ``(H, W)`` ink map in [0, 1].
        size: the output side.

    Returns:
        float32 ``(size, size)`` ink map; all zeros when the image has no ink.
    """
    box = content_box(ink)
    if box is None:
        return np.zeros((size, size), dtype=np.float32)
    left, top, right, bottom = box
    height, width = ink.shape
    side = max(max(right - left, bottom - top) / CONTENT_FILL, MIN_CROP_FRACTION * min(height, width), 2.0)
    x0, y0 = (left + right - side) / 2.0, (top + bottom - side) / 2.0
    window, (wx, wy) = _crop_window(ink, x0, y0, side, margin=int(np.ceil(side / size)) + 2)
    image = Image.fromarray(window, mode="F")
    resized = image.resize(
        (size, size), Image.Resampling.BILINEAR, box=(x0 - wx, y0 - wy, x0 - wx + side, y0 - wy + side)
    )
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _crop_window(ink: np.ndarray, x0: float, y0: float, side: float, margin: int) -> tuple[np.ndarray, tuple[int, int]]:
    """The square ``(x0, y0, side)`` plus ``margin`` pixels around it, zeros outside the image; and its origin.

    Only this window is materialised (not the whole image padded by ``side``, whose size grows with the square
    of a thin image's length); the margin covers the resampling filter's support, so resizing the window gives
    the same pixels as resizing the padded image.
    """
    height, width = ink.shape
    wx, wy = int(np.floor(x0)) - margin, int(np.floor(y0)) - margin
    extent = int(np.ceil(side)) + 2 * margin + 1
    window = np.zeros((extent, extent), dtype=np.float32)
    sx0, sy0 = max(wx, 0), max(wy, 0)
    sx1, sy1 = min(wx + extent, width), min(wy + extent, height)
    if sx1 > sx0 and sy1 > sy0:
        window[sy0 - wy : sy1 - wy, sx0 - wx : sx1 - wx] = ink[sy0:sy1, sx0:sx1]
    return window, (wx, wy)


def reduce_large(image: Image.Image, size: int) -> Image.Image:
    """Box-reduce (one integer factor for both axes) an image that is large for the analysis.

    Two bounds: a shorter side above ``ANALYSIS_SIDE_FACTOR * size`` is reduced to no less than half that (a
    photo), and a longer side above ``LONG_SIDE_FACTOR * ANALYSIS_SIDE_FACTOR * size`` to at most that (a thin
    strip, e.g. 16000 x 1 pixels: its cost grows with its length, which the shorter side does not see).

    Args:
        image: a loaded image in mode ``L``, ``RGB``, ``RGBA``, ``I`` or ``F``.
        size: the output side.

    Returns:
        The image itself, or a reduced copy.
    """
    analysis = ANALYSIS_SIDE_FACTOR * size
    shorter, longer = min(image.size), max(image.size)
    factor = shorter // (analysis // 2) if shorter > analysis else 1
    factor = max(factor, -(-longer // (LONG_SIDE_FACTOR * analysis)))
    return image.reduce(int(factor)) if factor >= 2 else image


def normalize_image(gray: np.ndarray, size: int) -> np.ndarray:
    """The whole normalisation of a grayscale image (alpha already flattened).

    Args:
        gray: float32 ``(H, W)`` in [0, 1].
        size: the output side.

    Returns:
        float32 ``(size, size)`` gray in [0, 1]: white background, black ink, content centred.
    """
    return (1.0 - fit_content(ink_map(gray), size)).astype(np.float32, copy=False)
