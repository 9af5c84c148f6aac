"""Preprocessing of raw client inputs, shared by training, the Triton Python-backend preprocessors and clients.

Torch-free on purpose: this exact code runs inside Triton's Python backend, so it only needs numpy, Pillow,
soundfile, scipy and tokenizers. Every function is batch-friendly; the batched result always equals the
per-item results stacked (no per-batch or per-utterance statistics anywhere).

An empty element (``b""``) means "modality absent": its tensor is all zeros and its mask is 0.

Normalisations (fixed, documented, relied on by the trained encoders):

* Image: decoded PNG/JPEG, then :mod:`trimodal.runtime.normalize`: alpha flattened over the background,
  grayscale (ITU-R 601-2 luma), polarity from the border (light-on-dark is inverted), contrast stretched,
  the content cropped and centred in a square (aspect ratio kept) and resized to ``size x size``; gray in
  [0, 1] (0 = black ink, 1 = white background) mapped to [-1, 1] with ``(x - IMAGE_MEAN) / IMAGE_STD``
  (0.5, 0.5).
* Text: ``tokenizers`` with the all-MiniLM-L6-v2 ``tokenizer.json``; truncation and padding to exactly
  ``max_tokens`` (pad id 0), identical to Hugging Face ``AutoTokenizer(..., padding="max_length",
  truncation=True, max_length=max_tokens)``.
* Audio: WAV only, downmixed (mean over channels), resampled to ``sample_rate`` with
  ``scipy.signal.resample_poly``, centre-cropped or centre-zero-padded to ``clip_samples``; then a centred STFT
  (periodic Hann window, reflect padding of ``n_fft // 2``), power spectrum, HTK mel filterbank (0 Hz to
  Nyquist, no area normalisation, like ``torchaudio.transforms.MelSpectrogram(mel_scale="htk", norm=None)``),
  ``log(mel + 1e-6)`` and finally ``(x - LOG_MEL_MEAN) / LOG_MEL_STD``.
"""

from __future__ import annotations

import functools
import io
import logging
import os
import re
import struct
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from trimodal.errors import PreprocessError
from trimodal.runtime import normalize
from trimodal.spec import AudioSpec, ImageSpec, TextSpec

LOGGER = logging.getLogger(__name__)

# --- image -----------------------------------------------------------------------------------------------
IMAGE_MEAN = 0.5
IMAGE_STD = 0.5
MAX_IMAGE_PIXELS = 4096 * 4096
"""Decompression-bomb guard: images whose declared width*height exceeds this are refused before decoding."""
IMAGE_FORMATS = ("PNG", "JPEG")

# Pillow's own guard (warns above MAX_IMAGE_PIXELS, refuses above twice that); ours is checked explicitly.
if Image.MAX_IMAGE_PIXELS is None or Image.MAX_IMAGE_PIXELS > MAX_IMAGE_PIXELS:
    Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS

# --- audio -----------------------------------------------------------------------------------------------
MAX_AUDIO_SECONDS = 30.0
"""Clips longer than this (before cropping) are refused before decoding, from libsndfile's own frame count (a
compressed or mislabelled WAV holds more frames than its data chunk's size says)."""
MAX_AUDIO_PEAK = 1e9
"""Samples of larger magnitude are refused: float WAVs hold samples within +-1, and from about 1e16 on the power
spectrum overflows float32 (the clip would be classified from NaN features)."""
MAX_AUDIO_CHANNELS = 16
MIN_AUDIO_RATE = 1000
MAX_AUDIO_RATE = 384000
LOG_MEL_EPS = 1e-6
LOG_MEL_MEAN = -4.0
LOG_MEL_STD = 4.0
"""Fixed affine normalisation of ``log(mel + 1e-6)`` (about zero mean, unit std on the generated dataset)."""


def _name(input_name: str, index: int | None) -> str:
    return input_name if index is None else f"{input_name}[{index}]"


def _as_bytes(item: Any, what: str) -> bytes:
    """Coerce one batch element (bytes, numpy bytes/object scalar, 1-element array) to ``bytes``."""
    if isinstance(item, np.ndarray):
        if item.size != 1:
            raise PreprocessError(f"{what}: expected one BYTES element per sample, got an array of shape {item.shape}")
        item = item.reshape(-1)[0]
    if isinstance(item, bytes):
        return bytes(item)
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    raise PreprocessError(f"{what}: expected bytes, got {type(item).__name__}")


# ========================================================================================================
# Image
# ========================================================================================================


def _without_addresses(exc: Exception) -> str:
    """A decoder's message without the ``<_io.BytesIO object at 0x7f...>`` reprs that Pillow and soundfile put in."""
    return re.sub(r"\s*<[^<>]* at 0x[0-9a-fA-F]+>", "", str(exc))


def _to_gray(image: Image.Image, size: int) -> np.ndarray:
    """Grayscale float32 array in [0, 1] of a loaded PIL image, alpha flattened over the background.

    High-bit-depth modes are scaled to [0, 1]; palette, CMYK and other colour modes go through RGB(A); very
    large images are box-reduced first (:func:`trimodal.runtime.normalize.reduce_large`).
    """
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        reduced = normalize.reduce_large(image.convert("I") if mode.startswith("I;16") else image, size)
        array = np.asarray(reduced, dtype=np.float32)
        return np.clip(array / (255.0 if mode == "F" else 65535.0), 0.0, 1.0)
    if mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    elif mode in ("LA", "PA", "RGBa", "La"):
        image = image.convert("RGBA")
    elif mode not in ("L", "RGB", "RGBA"):
        image = image.convert("RGB")
    image = normalize.reduce_large(image, size)
    if image.mode == "RGBA":
        return normalize.flatten_alpha(np.asarray(image, dtype=np.float32) / 255.0)
    if image.mode == "RGB":
        return (np.asarray(image, dtype=np.float32) / 255.0) @ normalize.LUMA
    return np.asarray(image, dtype=np.float32) / 255.0


def decode_image(data: bytes, spec: ImageSpec, *, index: int | None = None) -> np.ndarray:
    """Decode one PNG or JPEG file to the normalised grayscale tensor the image encoder expects.

    Args:
        data: the encoded file (must be non-empty; empty means "absent" and is handled by
            :func:`preprocess_images`).
        spec: the image modality spec (``size``, ``input`` name for messages).
        index: position in the batch, used in error messages.

    Returns:
        float32 array of shape ``(1, size, size)``, values ``(gray - 0.5) / 0.5`` in [-1, 1].

    Raises:
        PreprocessError: naming the input, e.g. ``IMAGE[3]: cannot decode image bytes ...``, for non-PNG/JPEG
            data, truncated files, or declared dimensions above :data:`MAX_IMAGE_PIXELS`.
    """
    what = _name(spec.input, index)
    data = _as_bytes(data, what)
    if not data:
        raise PreprocessError(f"{what}: empty image (send an empty element only to mark the image absent)")
    if len(data) > spec.max_bytes:
        raise PreprocessError(f"{what}: image file of {len(data)} bytes exceeds the limit of {spec.max_bytes} bytes")
    size = spec.size
    try:
        with warnings.catch_warnings():
            # Pillow warns between MAX_IMAGE_PIXELS and twice that; we refuse those ourselves below.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise PreprocessError(
            f"{what}: image too large (limit {MAX_IMAGE_PIXELS} pixels): {_without_addresses(exc)}"
        ) from None
    except Exception as exc:
        raise PreprocessError(
            f"{what}: cannot decode image bytes (expected a PNG or JPEG file): {_without_addresses(exc)}"
        ) from None
    with image:
        width, height = image.size
        if width <= 0 or height <= 0:
            raise PreprocessError(f"{what}: image has no pixels ({width}x{height})")
        if width * height > MAX_IMAGE_PIXELS:
            raise PreprocessError(
                f"{what}: image too large: {width}x{height} = {width * height} pixels exceeds the limit of "
                f"{MAX_IMAGE_PIXELS} (decompression-bomb guard)"
            )
        try:
            analysis = normalize.ANALYSIS_SIDE_FACTOR * size
            if image.format == "JPEG" and min(width, height) > analysis:
                image.draft("L", (analysis // 2, analysis // 2))  # fast DCT-domain downscale of large JPEGs
            image.load()
            gray = _to_gray(image, size)
        except Exception as exc:
            raise PreprocessError(
                f"{what}: cannot decode image bytes (expected a PNG or JPEG file; truncated or corrupt?): "
                f"{_without_addresses(exc)}"
            ) from None
    try:
        gray = normalize.normalize_image(gray, size)
    except MemoryError:
        raise PreprocessError(f"{what}: a {width}x{height} image needs more memory than this server has") from None
    out = (gray - IMAGE_MEAN) / IMAGE_STD
    return out.astype(np.float32, copy=False)[None, :, :]


def preprocess_images(items: Sequence[bytes], spec: ImageSpec) -> tuple[np.ndarray, np.ndarray]:
    """Decode a batch of images; empty elements mark the image absent.

    Args:
        items: one encoded PNG/JPEG per sample, ``b""`` when absent.
        spec: the image modality spec.

    Returns:
        ``(tensor, mask)``: float32 ``(B, 1, size, size)`` (zeros where absent) and float32 ``(B, 1)``
        (1 present, 0 absent).

    Raises:
        PreprocessError: for the first element that cannot be decoded, naming its index.
    """
    count = len(items)
    tensor = np.zeros((count, 1, spec.size, spec.size), dtype=np.float32)
    mask = np.zeros((count, 1), dtype=np.float32)
    for i, item in enumerate(items):
        data = _as_bytes(item, _name(spec.input, i))
        if data:
            tensor[i] = decode_image(data, spec, index=i)
            mask[i, 0] = 1.0
    return tensor, mask


# ========================================================================================================
# Text
# ========================================================================================================


class TextPreprocessor:
    """Tokenize UTF-8 text to fixed-length ``input_ids`` / ``attention_mask`` with the ``tokenizers`` library."""

    def __init__(self, spec: TextSpec, tokenizer_file: str | os.PathLike[str]) -> None:
        """Load the tokenizer and fix truncation/padding to ``spec.max_tokens``.

        Args:
            spec: the text modality spec (``max_tokens``, ``max_bytes``, ``input`` name).
            tokenizer_file: a ``tokenizer.json`` (see :func:`trimodal.layout.tokenizer_source`).

        Raises:
            PreprocessError: if the tokenizer file cannot be loaded.
        """
        from tokenizers import Tokenizer

        self.spec = spec
        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_file))
        except Exception as exc:
            raise PreprocessError(f"{spec.input}: cannot load tokenizer {tokenizer_file}: {exc}") from None
        pad_id = self.tokenizer.token_to_id("[PAD]")
        self.tokenizer.enable_truncation(max_length=spec.max_tokens)
        self.tokenizer.enable_padding(
            length=spec.max_tokens, pad_id=0 if pad_id is None else pad_id, pad_token="[PAD]", pad_type_id=0
        )
        # the tokens of an absent text (the special ones): a text with no more than these is absent too
        self.absent_tokens = int(sum(self.tokenizer.encode("").attention_mask))

    def _decode(self, item: Any, index: int) -> str:
        what = _name(self.spec.input, index)
        if isinstance(item, str):
            if len(item) > self.spec.max_bytes or len(item.encode("utf-8", "surrogatepass")) > self.spec.max_bytes:
                raise PreprocessError(f"{what}: text longer than the limit of {self.spec.max_bytes} bytes")
            return item
        data = _as_bytes(item, what)
        if len(data) > self.spec.max_bytes:
            raise PreprocessError(f"{what}: text of {len(data)} bytes exceeds the limit of {self.spec.max_bytes} bytes")
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PreprocessError(f"{what}: not valid UTF-8 ({exc.reason} at byte {exc.start})") from None

    def __call__(self, items: Sequence[bytes | str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Tokenize a batch; empty elements (and those of only whitespace or control characters) mark the text absent.

        Args:
            items: UTF-8 bytes (or ``str``) per sample, ``b""`` when absent.

        Returns:
            ``(input_ids, attention_mask, mask)``: int64 ``(B, max_tokens)``, int64 ``(B, max_tokens)`` and
            float32 ``(B, 1)``. An absent text is tokenized as ``""`` (``[CLS] [SEP]`` + padding) with mask 0.

        Raises:
            PreprocessError: ``TEXT[i]: not valid UTF-8 ...`` or ``TEXT[i]: ... exceeds the limit ...``.
        """
        texts = [self._decode(item, i) for i, item in enumerate(items)]
        length = self.spec.max_tokens
        if not texts:
            empty = np.zeros((0, length), dtype=np.int64)
            return empty, empty.copy(), np.zeros((0, 1), dtype=np.float32)
        encodings = self.tokenizer.encode_batch(texts)
        input_ids = np.array([enc.ids for enc in encodings], dtype=np.int64).reshape(len(texts), length)
        attention = np.array([enc.attention_mask for enc in encodings], dtype=np.int64).reshape(len(texts), length)
        # present = some token besides the special ones: whitespace or control characters alone are no text
        mask = (attention.sum(axis=1, keepdims=True) > self.absent_tokens).astype(np.float32)
        return input_ids, attention, mask


# ========================================================================================================
# Audio
# ========================================================================================================


def _parse_wav_header(data: bytes, what: str) -> tuple[int, int, int]:
    """Walk the RIFF chunks: check it is a complete WAV file; return (channels, rate, frames)."""
    if len(data) < 12 or data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise PreprocessError(f"{what}: not a WAV file (expected a RIFF/WAVE header)")
    offset = 12
    channels = rate = block_align = 0
    fmt_seen = False
    while offset + 8 <= len(data):
        chunk_id = data[offset : offset + 4]
        (chunk_size,) = struct.unpack("<I", data[offset + 4 : offset + 8])
        body = offset + 8
        if chunk_id == b"fmt ":
            if chunk_size < 16 or body + 16 > len(data):
                raise PreprocessError(f"{what}: truncated WAV file (incomplete fmt chunk)")
            _, channels, rate, _, block_align = struct.unpack("<HHIIH", data[body : body + 14])
            fmt_seen = True
            if not block_align:
                raise PreprocessError(f"{what}: invalid WAV file (block_align 0 in the fmt chunk)")
        elif chunk_id == b"data":
            if not fmt_seen:
                raise PreprocessError(f"{what}: invalid WAV file (data chunk before fmt chunk)")
            if body + chunk_size > len(data):
                raise PreprocessError(
                    f"{what}: truncated WAV file (data chunk declares {chunk_size} bytes, {len(data) - body} present)"
                )
            if not 1 <= channels <= MAX_AUDIO_CHANNELS:
                raise PreprocessError(f"{what}: unsupported channel count {channels} (1..{MAX_AUDIO_CHANNELS})")
            if not MIN_AUDIO_RATE <= rate <= MAX_AUDIO_RATE:
                raise PreprocessError(f"{what}: unsupported sample rate {rate} Hz ({MIN_AUDIO_RATE}..{MAX_AUDIO_RATE})")
            return channels, rate, chunk_size // block_align
        offset = body + chunk_size + (chunk_size & 1)
    raise PreprocessError(f"{what}: truncated WAV file (no complete fmt and data chunks)")


def _check_duration(frames: int, rate: int, what: str) -> None:
    if frames > MAX_AUDIO_SECONDS * rate:
        raise PreprocessError(
            f"{what}: audio clip of {frames / rate:.1f} s exceeds the limit of {MAX_AUDIO_SECONDS:g} s"
        )


def _resample(wave: np.ndarray, rate: int, target: int) -> np.ndarray:
    if rate == target:
        return wave
    from scipy.signal import resample_poly

    divisor = np.gcd(rate, target)
    return resample_poly(wave, target // divisor, rate // divisor).astype(np.float32, copy=False)


def fit_clip(wave: np.ndarray, length: int) -> np.ndarray:
    """Centre-crop or centre-zero-pad a 1-D waveform to exactly ``length`` samples.

    Args:
        wave: 1-D float array.
        length: the target number of samples.

    Returns:
        float32 array of shape ``(length,)``.
    """
    count = wave.shape[0]
    if count == length:
        return wave.astype(np.float32, copy=False)
    if count > length:
        start = (count - length) // 2
        return wave[start : start + length].astype(np.float32, copy=False)
    out = np.zeros(length, dtype=np.float32)
    start = (length - count) // 2
    out[start : start + count] = wave
    return out


def decode_audio(data: bytes, spec: AudioSpec, *, index: int | None = None) -> np.ndarray:
    """Decode one WAV file to a mono clip of exactly ``spec.clip_samples`` at ``spec.sample_rate``.

    Args:
        data: a complete RIFF/WAVE file (any PCM/float format libsndfile reads, any rate, any channel count
            up to :data:`MAX_AUDIO_CHANNELS`).
        spec: the audio modality spec.
        index: position in the batch, used in error messages.

    Returns:
        float32 array of shape ``(clip_samples,)``: downmixed by the channel mean, resampled with
        ``resample_poly``, centre-cropped or centre-zero-padded.

    Raises:
        PreprocessError: ``AUDIO[i]: ...`` for non-WAV or truncated data, empty clips, clips longer than
            :data:`MAX_AUDIO_SECONDS`, or NaN/Inf samples.
    """
    import soundfile

    what = _name(spec.input, index)
    data = _as_bytes(data, what)
    if len(data) > spec.max_bytes:
        raise PreprocessError(f"{what}: WAV file of {len(data)} bytes exceeds the limit of {spec.max_bytes} bytes")
    _, rate, frames = _parse_wav_header(data, what)
    if frames <= 0:
        raise PreprocessError(f"{what}: empty audio clip (0 samples)")
    try:
        with soundfile.SoundFile(io.BytesIO(data)) as clip:
            rate = clip.samplerate
            # libsndfile's own frame count, not the data chunk's size / block_align: ADPCM, GSM, a false header
            _check_duration(clip.frames, rate, what)
            wave = clip.read(frames=int(MAX_AUDIO_SECONDS * rate) + 1, dtype="float32", always_2d=True)
    except PreprocessError:
        raise
    except Exception as exc:
        raise PreprocessError(f"{what}: cannot decode WAV file: {_without_addresses(exc)}") from None
    _check_duration(wave.shape[0], rate, what)  # the read stops one frame past the limit, whatever the count said
    if wave.shape[0] == 0:
        raise PreprocessError(f"{what}: empty audio clip (0 samples)")
    if not np.isfinite(wave).all():
        raise PreprocessError(f"{what}: audio contains NaN or Inf samples")
    peak = float(np.abs(wave).max())
    if peak > MAX_AUDIO_PEAK:
        raise PreprocessError(
            f"{what}: sample values up to {peak:.3g} are out of range (expected magnitudes up to {MAX_AUDIO_PEAK:g}; "
            "float WAV samples lie within +-1)"
        )
    mono = wave.mean(axis=1, dtype=np.float32) if wave.shape[1] > 1 else wave[:, 0]
    mono = _resample(mono, rate, spec.sample_rate)
    return fit_clip(mono, spec.clip_samples)


def hz_to_mel(freq: np.ndarray | float) -> np.ndarray:
    """HTK mel scale: ``2595 * log10(1 + f / 700)``."""
    return 2595.0 * np.log10(1.0 + np.asarray(freq, dtype=np.float64) / 700.0)


def mel_to_hz(mel: np.ndarray | float) -> np.ndarray:
    """Inverse of :func:`hz_to_mel`."""
    return 700.0 * (10.0 ** (np.asarray(mel, dtype=np.float64) / 2595.0) - 1.0)


@functools.lru_cache(maxsize=16)
def _mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    n_freqs = n_fft // 2 + 1
    freqs = np.linspace(0.0, sample_rate / 2.0, n_freqs)
    mel_points = np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0), n_mels + 2)
    hz_points = mel_to_hz(mel_points)
    lower, center, upper = hz_points[:-2], hz_points[1:-1], hz_points[2:]
    rising = (freqs[:, None] - lower[None, :]) / (center - lower)[None, :]
    falling = (upper[None, :] - freqs[:, None]) / (upper - center)[None, :]
    bank = np.maximum(0.0, np.minimum(rising, falling)).astype(np.float32)
    bank.setflags(write=False)
    return bank  # (n_freqs, n_mels)


def mel_filterbank(spec: AudioSpec) -> np.ndarray:
    """HTK triangular mel filterbank (0 Hz to Nyquist, no normalisation), cached per spec.

    Args:
        spec: the audio modality spec.

    Returns:
        Read-only float32 array ``(n_fft // 2 + 1, n_mels)``.
    """
    return _mel_filterbank(spec.sample_rate, spec.n_fft, spec.n_mels)


@functools.lru_cache(maxsize=16)
def _hann(n_fft: int) -> np.ndarray:
    window = (0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(n_fft) / n_fft)).astype(np.float32)
    window.setflags(write=False)
    return window


def log_mel(wave: np.ndarray, spec: AudioSpec) -> np.ndarray:
    """Normalised log-mel spectrogram of one clip or a batch of clips (vectorised).

    Args:
        wave: float array ``(clip_samples,)`` or ``(B, clip_samples)`` (as from :func:`decode_audio`).
        spec: the audio modality spec.

    Returns:
        float32 ``(1, n_mels, n_frames)`` for one clip, ``(B, 1, n_mels, n_frames)`` for a batch; values
        ``(log(mel_power + 1e-6) - LOG_MEL_MEAN) / LOG_MEL_STD``.
    """
    wave = np.asarray(wave, dtype=np.float32)
    single = wave.ndim == 1
    batch = wave[None, :] if single else wave
    if batch.ndim != 2:
        raise PreprocessError(f"{spec.input}: expected a waveform (T,) or (B, T), got shape {wave.shape}")
    n_fft, hop = spec.n_fft, spec.hop_length
    pad = n_fft // 2
    if batch.shape[1] <= pad:
        raise PreprocessError(f"{spec.input}: waveform of {batch.shape[1]} samples is too short for n_fft={n_fft}")
    padded = np.pad(batch, ((0, 0), (pad, pad)), mode="reflect")
    n_frames = 1 + (padded.shape[1] - n_fft) // hop
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft, axis=1)[:, ::hop][:, :n_frames]
    from scipy import fft as sp_fft

    spectrum = sp_fft.rfft(frames * _hann(n_fft), axis=-1)  # complex64 for float32 input
    power = (spectrum.real**2 + spectrum.imag**2).astype(np.float32, copy=False)
    mel = power @ mel_filterbank(spec)  # (B, frames, n_mels)
    out = (np.log(mel + LOG_MEL_EPS) - LOG_MEL_MEAN) / LOG_MEL_STD
    out = np.ascontiguousarray(out.transpose(0, 2, 1), dtype=np.float32)[:, None]
    return out[0] if single else out


def preprocess_audio(items: Sequence[bytes], spec: AudioSpec) -> tuple[np.ndarray, np.ndarray]:
    """Decode a batch of WAV files to log-mel tensors; empty elements mark the audio absent.

    Args:
        items: one WAV file per sample, ``b""`` when absent.
        spec: the audio modality spec.

    Returns:
        ``(tensor, mask)``: float32 ``(B, 1, n_mels, n_frames)`` (zeros where absent) and float32 ``(B, 1)``.

    Raises:
        PreprocessError: for the first element that cannot be decoded, naming its index.
    """
    count = len(items)
    tensor = np.zeros((count, 1, spec.n_mels, spec.n_frames), dtype=np.float32)
    mask = np.zeros((count, 1), dtype=np.float32)
    present: list[int] = []
    waves: list[np.ndarray] = []
    for i, item in enumerate(items):
        data = _as_bytes(item, _name(spec.input, i))
        if data:
            waves.append(decode_audio(data, spec, index=i))
            present.append(i)
    if present:
        tensor[present] = log_mel(np.stack(waves), spec)
        mask[present, 0] = 1.0
    return tensor, mask
