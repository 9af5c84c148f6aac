"""Audio side of the dataset: spoken digits synthesized with espeak-ng, placed in 1 s clips with noise.

The utterance bank (every digit word x voice x speed x pitch) is synthesized once with a small thread pool,
trimmed of leading/trailing silence, resampled to the spec's rate and cached in ``<root>/data/speech``.
espeak-ng output is deterministic, so the bank is too.

Per sample: random time shift inside the clip, random gain, background noise (white/pink/brown) at a random
SNR of 8-30 dB; stored as 16-bit PCM WAV at the spec rate, except about 5% at 22050 or 8000 Hz and about 3%
stereo (exercising resampling and downmix). A corrupted clip holds no speech: noise only, or near silence.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import subprocess
import tempfile
import wave
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from trimodal.errors import DataError

LOGGER = logging.getLogger(__name__)

WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
VOICES: tuple[str, ...] = (
    "en",
    "en-us",
    "en-gb-x-rp",
    "en-gb-scotland",
    "en-029",
    "en+m3",
    "en+f2",
    "en+f4",
    "en-us+m7",
    "en-us+f3",
    "en+klatt",
    "en-gb-x-rp+m5",
)
SPEEDS: tuple[int, ...] = (135, 165, 195)
PITCHES: tuple[int, ...] = (30, 50, 75)
BANK_VERSION = 1
SILENCE_THRESHOLD = 0.02  # relative to the peak, for trimming
MARGIN_SECONDS = 0.02


def _espeak_binary() -> str:
    binary = shutil.which("espeak-ng")
    if binary is None:
        raise DataError("espeak-ng is not installed (needed to synthesize spoken digits): apt-get install espeak-ng")
    return binary


def _synthesize(binary: str, word: str, voice: str, speed: int, pitch: int, folder: Path) -> tuple[np.ndarray, int]:
    import soundfile

    path = folder / f"{word}_{voice}_{speed}_{pitch}.wav".replace("+", "_")
    command = [binary, "-w", str(path), "-v", voice, "-s", str(speed), "-p", str(pitch), word]
    result = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    if result.returncode != 0 or not path.is_file():
        raise DataError(f"espeak-ng failed for {word!r} voice {voice}: {result.stderr.strip() or result.returncode}")
    samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    path.unlink()
    return samples.mean(axis=1), int(rate)


def _trim(samples: np.ndarray, rate: int) -> np.ndarray:
    peak = float(np.abs(samples).max()) if samples.size else 0.0
    if peak <= 0.0:
        raise DataError("espeak-ng produced a silent utterance")
    loud = np.flatnonzero(np.abs(samples) > SILENCE_THRESHOLD * peak)
    margin = int(MARGIN_SECONDS * rate)
    start, stop = max(0, loud[0] - margin), min(samples.size, loud[-1] + margin + 1)
    return samples[start:stop] / peak


def bank_config(sample_rate: int) -> dict[str, object]:
    """Everything the utterance bank depends on (hashed into its cache name).

    Args:
        sample_rate: the target sample rate.

    Returns:
        A JSON-able mapping.
    """
    return {
        "version": BANK_VERSION,
        "words": list(WORDS),
        "voices": list(VOICES),
        "speeds": list(SPEEDS),
        "pitches": list(PITCHES),
        "sample_rate": sample_rate,
    }


class SpeechBank:
    """Trimmed, peak-normalised utterances at the target rate, with their digit and synthesis settings."""

    def __init__(self, data: np.ndarray, offsets: np.ndarray, digits: np.ndarray, sample_rate: int) -> None:
        """Wrap the concatenated waveforms.

        Args:
            data: float32 concatenation of all utterances.
            offsets: int64 ``(N + 1,)`` start offsets.
            digits: int64 ``(N,)`` digit of each utterance.
            sample_rate: their rate.
        """
        self.data = data
        self.offsets = offsets
        self.digits = digits
        self.sample_rate = sample_rate

    def __len__(self) -> int:
        return len(self.digits)

    def utterance(self, index: int) -> np.ndarray:
        """The waveform of utterance ``index``."""
        return self.data[self.offsets[index] : self.offsets[index + 1]]


def load_or_build_bank(folder: Path, sample_rate: int, *, force: bool = False, workers: int = 2) -> SpeechBank:
    """Synthesize every digit word with every voice/speed/pitch, or load the cached bank.

    Args:
        folder: the cache folder (``<root>/data/speech``).
        sample_rate: the target rate.
        force: re-synthesize even when a cached bank exists.
        workers: espeak-ng subprocesses run in parallel.

    Returns:
        The bank.

    Raises:
        DataError: if espeak-ng is missing or fails.
    """
    config = bank_config(sample_rate)
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    path = folder / f"bank-{digest}.npz"
    if path.is_file() and not force:
        with np.load(path, allow_pickle=False) as npz:
            return SpeechBank(npz["data"], npz["offsets"], npz["digits"], int(npz["sample_rate"]))
    from scipy.signal import resample_poly

    binary = _espeak_binary()
    jobs = [(d, v, s, p) for d in range(len(WORDS)) for v in VOICES for s in SPEEDS for p in PITCHES]
    LOGGER.info("synthesizing %d utterances with espeak-ng (%d voices)", len(jobs), len(VOICES))
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp, ThreadPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(lambda job: _synthesize(binary, WORDS[job[0]], *job[1:], Path(tmp)), jobs))
    waves = []
    for samples, rate in results:
        trimmed = _trim(samples, rate)
        if rate != sample_rate:
            divisor = np.gcd(rate, sample_rate)
            trimmed = resample_poly(trimmed, sample_rate // divisor, rate // divisor)
        waves.append(trimmed.astype(np.float32))
    offsets = np.concatenate([[0], np.cumsum([w.size for w in waves])]).astype(np.int64)
    digits = np.array([job[0] for job in jobs], dtype=np.int64)
    data = np.concatenate(waves)
    tmp_path = path.with_suffix(".tmp.npz")
    np.savez(tmp_path, data=data, offsets=offsets, digits=digits, sample_rate=np.int64(sample_rate))
    tmp_path.replace(path)
    (folder / f"bank-{digest}.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return SpeechBank(data, offsets, digits, sample_rate)


def _noise(kind: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS white (0), pink (1) or brown (2) noise."""
    white = rng.standard_normal(count)
    if kind == 0:
        noise = white
    else:
        spectrum = np.fft.rfft(white)
        freqs = np.arange(spectrum.size, dtype=np.float64)
        freqs[0] = 1.0
        spectrum /= np.sqrt(freqs) if kind == 1 else freqs
        noise = np.fft.irfft(spectrum, n=count)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def encode_wav(samples: np.ndarray, rate: int) -> bytes:
    """16-bit PCM WAV bytes of ``samples`` (``(T,)`` mono or ``(T, C)``), clipped to [-1, 1].

    Args:
        samples: float waveform.
        rate: its sample rate.

    Returns:
        The WAV file.
    """
    frames = samples if samples.ndim == 2 else samples[:, None]
    pcm = np.clip(np.round(frames * 32767.0), -32768, 32767).astype("<i2")
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(frames.shape[1])
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(pcm.tobytes())
    return buffer.getvalue()


def make_audio(
    utterance: np.ndarray, clip_samples: int, sample_rate: int, rng: np.random.Generator, *, corrupted: bool
) -> bytes:
    """Place one utterance in a clip with gain and noise (or, corrupted, noise/silence only); encode as WAV.

    Args:
        utterance: the trimmed, peak-normalised waveform at ``sample_rate``.
        clip_samples: clip length.
        sample_rate: the spec's rate.
        rng: the random generator.
        corrupted: no speech at all, only noise or near silence.

    Returns:
        WAV bytes (usually mono 16-bit at ``sample_rate``).
    """
    clip = np.zeros(clip_samples, dtype=np.float64)
    kind = int(rng.integers(3))
    if corrupted:
        if rng.random() < 0.7:
            clip += rng.uniform(0.01, 0.3) * _noise(kind, clip_samples, rng)
        else:
            clip += 1e-4 * _noise(0, clip_samples, rng)
    else:
        if utterance.size > clip_samples:
            start = (utterance.size - clip_samples) // 2
            utterance = utterance[start : start + clip_samples]
        offset = int(rng.integers(0, clip_samples - utterance.size + 1))
        gain = rng.uniform(0.15, 0.9)
        clip[offset : offset + utterance.size] = gain * utterance
        speech_rms = np.sqrt(np.mean((gain * utterance) ** 2))
        snr_db = rng.uniform(8.0, 30.0)
        clip += speech_rms / (10.0 ** (snr_db / 20.0)) * _noise(kind, clip_samples, rng)
    rate = sample_rate
    draw = rng.random()
    if draw < 0.05:
        from scipy.signal import resample_poly

        rate = 22050 if draw < 0.025 else 8000
        divisor = np.gcd(sample_rate, rate)
        clip = resample_poly(clip, rate // divisor, sample_rate // divisor)
    peak = np.abs(clip).max()
    if peak > 0.99:
        clip *= 0.99 / peak
    if rng.random() < 0.03:
        balance = rng.uniform(0.8, 1.0)
        clip = np.stack([clip, balance * clip], axis=1)
    return encode_wav(clip, rate)
