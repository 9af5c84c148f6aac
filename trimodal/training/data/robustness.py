"""The held-out robustness set: the test split's images as other people would send them.

Every variant transforms every test image (the same samples, so each variant is compared with the unmodified
test split sample by sample); texts, audio and labels stay those of the test split. Built deterministically
from the spec's seed; never used for training or model selection.

Variants (:data:`VARIANTS`):

* ``inverted``: light strokes on a dark background (MNIST style), 8-bit gray PNG;
* ``small``: 12 to 20 pixels square (thumbnails);
* ``large``: 96 to 192 pixels square;
* ``wide``: the image on a canvas 1.5 to 2.5 times as wide as high (another aspect ratio);
* ``rgb``: coloured ink on coloured paper, RGB PNG or JPEG;
* ``rgba``: dark ink on a transparent canvas (the colour under transparent pixels is black);
* ``rgba_light``: white ink on a transparent canvas;
* ``shifted``: the digit off-centre, in a corner region of a canvas twice as large;
* ``thick``: strokes about 2 pixels thicker (gray erosion at 4x resolution);
* ``thin``: strokes about 1 pixel thinner (gray dilation at 4x resolution).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence

import numpy as np
from PIL import Image

LOGGER = logging.getLogger(__name__)

CLEAN = "clean"
VARIANTS: tuple[str, ...] = (
    "inverted", "small", "large", "wide", "rgb", "rgba", "rgba_light", "shifted", "thick", "thin",
)  # fmt: skip
ROBUSTNESS_VERSION = 1
"""Part of the cache key of the preprocessed robustness set; bump when a variant changes."""
_UPSCALE = 4


def _decode(data: bytes) -> np.ndarray:
    """Gray float32 (H, W) in [0, 1] of a dataset image (opaque L or RGB PNG/JPEG)."""
    with Image.open(io.BytesIO(data)) as image:
        return np.asarray(image.convert("L"), dtype=np.float32) / 255.0


def _encode(pixels: np.ndarray, mode: str, fmt: str = "PNG") -> bytes:
    """PNG (or JPEG) bytes of float pixels in [0, 1] (``(H, W)`` for L, ``(H, W, C)`` for RGB/RGBA)."""
    array = np.clip(np.round(pixels * 255.0), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(array, mode=mode).save(buffer, format=fmt, **({"quality": 90} if fmt == "JPEG" else {}))
    return buffer.getvalue()


def _resize(gray: np.ndarray, width: int, height: int) -> np.ndarray:
    image = Image.fromarray(gray, mode="F").resize((width, height), Image.Resampling.BICUBIC)
    return np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0)


def _paper(gray: np.ndarray) -> float:
    """The background level: the median of the outermost pixel ring."""
    ring = np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])
    return float(np.median(ring))


def _ink(gray: np.ndarray) -> np.ndarray:
    """Ink amount in [0, 1] relative to the paper level (for the colour and transparency variants)."""
    paper = _paper(gray)
    return np.clip((paper - gray) / max(paper - float(gray.min()), 1e-3), 0.0, 1.0)


def inverted(gray: np.ndarray, rng: np.random.Generator) -> bytes:
    """Light strokes on a dark background."""
    return _encode(1.0 - gray, "L")


def small(gray: np.ndarray, rng: np.random.Generator) -> bytes:
    """A thumbnail of 12 to 20 pixels."""
    side = int(rng.integers(12, 21))
    return _encode(_resize(gray, side, side), "L")


def large(gray: np.ndarray, rng: np.random.Generator) -> bytes:
    """An upscaled image of 96 to 192 pixels."""
    side = int(rng.integers(96, 193))
    return _encode(_resize(gray, side, side), "L")


def wide(gray: np.ndarray, rng: np.random.Generator) -> bytes:
    """The image centred on a canvas 1.5 to 2.5 times as wide as high."""
    height, width = gray.shape
    canvas = np.full((height, round(width * rng.uniform(1.5, 2.5))), _paper(gray), dtype=np.float32)
    left = (canvas.shape[1] - width) // 2
    canvas[:, left : left + width] = gray
    return _encode(canvas, "L")


def rgb(gray: np.ndarray, rng: np.random.Generator) -> bytes:
    """Coloured ink (dark) on coloured paper (light), PNG or JPEG."""
    ink = _ink(gray)[..., None]
    paper, pen = rng.uniform(0.7, 1.0, size=3), rng.uniform(0.0, 0.35, size=3)
    pixels = paper * (1.0 - ink) + pen * ink
    return _encode(pixels, "RGB", "JPEG" if rng.random() < 0.5 else "PNG")


def _transparent(gray: np.ndarray, colour: float) -> bytes:
    alpha = _ink(gray)
    pixels = np.zeros((*gray.shape, 4), dtype=np.float32)
    pixels[..., :3] = colour * (alpha > 0)[..., None]
    pixels[..., 3] = alpha
    return _encode(pixels, "RGBA")


def rgba(gray: np.ndarray, rng: np.random.Generator) -> bytes:
    """Black ink on a transparent canvas (ink amount as alpha)."""
    return _transparent(gray, 0.0)


def rgba_light(gray: np.ndarray, rng: np.random.Generator) -> bytes:
    """White ink on a transparent canvas."""
    return _transparent(gray, 1.0)


def shifted(gray: np.ndarray, rng: np.random.Generator) -> bytes:
    """The digit pasted off-centre (near a random corner) on a canvas twice as large."""
    height, width = gray.shape
    canvas = np.full((2 * height, 2 * width), _paper(gray), dtype=np.float32)
    top = int(rng.integers(0, height // 4 + 1)) + (height if rng.random() < 0.5 else 0) * 3 // 4
    left = int(rng.integers(0, width // 4 + 1)) + (width if rng.random() < 0.5 else 0) * 3 // 4
    canvas[top : top + height, left : left + width] = gray
    return _encode(canvas, "L")


def _morphology(gray: np.ndarray, operation: Callable[..., np.ndarray], size: int) -> bytes:
    height, width = gray.shape
    upscaled = _resize(gray, width * _UPSCALE, height * _UPSCALE)
    return _encode(_resize(operation(upscaled, size=size), width, height), "L")


def thick(gray: np.ndarray, rng: np.random.Generator) -> bytes:
    """Strokes about 2 pixels thicker: gray erosion (dark ink grows) with a 9-pixel window at 4x."""
    from scipy.ndimage import grey_erosion

    return _morphology(gray, grey_erosion, 2 * _UPSCALE + 1)


def thin(gray: np.ndarray, rng: np.random.Generator) -> bytes:
    """Strokes about 1 pixel thinner: gray dilation (paper grows) with a 5-pixel window at 4x."""
    from scipy.ndimage import grey_dilation

    return _morphology(gray, grey_dilation, _UPSCALE + 1)


TRANSFORMS: dict[str, Callable[[np.ndarray, np.random.Generator], bytes]] = {
    "inverted": inverted, "small": small, "large": large, "wide": wide, "rgb": rgb, "rgba": rgba,
    "rgba_light": rgba_light, "shifted": shifted, "thick": thick, "thin": thin,
}  # fmt: skip


def make_variants(images: Sequence[bytes], seed: int, variants: Sequence[str] = VARIANTS) -> dict[str, list[bytes]]:
    """Every variant of every image, deterministic from ``seed``.

    Args:
        images: the test split's encoded images.
        seed: the random seed (the spec's).
        variants: which variants to build (names of :data:`VARIANTS`).

    Returns:
        ``{variant: [encoded image per sample]}``, aligned with ``images``.

    Raises:
        ValueError: for an unknown variant name.
    """
    grays = [_decode(data) for data in images]
    result: dict[str, list[bytes]] = {}
    for name in variants:
        rng = np.random.default_rng([seed, ROBUSTNESS_VERSION, VARIANTS.index(name)])
        result[name] = [TRANSFORMS[name](gray, rng) for gray in grays]
    return result
