"""Python-backend preprocessors: raw client bytes -> encoder tensors + presence masks.

They call exactly the functions the training used (:mod:`trimodal.runtime.preprocess`), configured by the
``modality_spec`` parameter that :mod:`trimodal.triton.repository` renders from pipeline.yaml.
"""

from __future__ import annotations

import numpy as np

from trimodal import contract
from trimodal.runtime.backends.base import BatchedModel
from trimodal.spec import AudioSpec, ImageSpec, TextSpec


def _flatten(column: np.ndarray) -> list[bytes]:
    """(B, 1) object array of bytes -> list of B bytes."""
    return [bytes(item) for item in column.reshape(-1)]


class PreprocessImage(BatchedModel):
    """IMAGE (PNG/JPEG bytes) -> IMAGE_TENSOR, IMAGE_MASK."""

    def setup(self) -> None:
        """Read the image spec from the model parameters."""
        self.spec = ImageSpec.model_validate_json(self.parameters["modality_spec"])

    def warm_inputs(self) -> dict[str, np.ndarray]:
        """A PNG and a JPEG of a gray square, decoded once at load."""
        import io

        from PIL import Image

        files = []
        for fmt in ("PNG", "JPEG"):
            buffer = io.BytesIO()
            Image.new("L", (2 * self.spec.size, 2 * self.spec.size), color=128).save(buffer, format=fmt)
            files.append(buffer.getvalue())
        return {contract.IMAGE: np.array(files, dtype=np.object_).reshape(-1, 1)}

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Decode one request's images."""
        from trimodal.runtime.preprocess import preprocess_images

        tensor, mask = preprocess_images(_flatten(inputs[contract.IMAGE]), self.spec)
        return {contract.IMAGE_TENSOR: tensor, contract.IMAGE_MASK: mask}


class PreprocessText(BatchedModel):
    """TEXT (UTF-8 bytes) -> INPUT_IDS, ATTENTION_MASK, TEXT_MASK (tokenized with `tokenizers`)."""

    def setup(self) -> None:
        """Load the tokenizer shipped in the version folder."""
        from trimodal.runtime.preprocess import TextPreprocessor

        self.spec = TextSpec.model_validate_json(self.parameters["modality_spec"])
        self.tokenize = TextPreprocessor(self.spec, self.version_dir / "tokenizer.json")

    def warm_inputs(self) -> dict[str, np.ndarray]:
        """Two texts, tokenized once at load."""
        return {contract.TEXT: np.array([b"seven", b"a warm-up text"], dtype=np.object_).reshape(-1, 1)}

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Tokenize one request's texts."""
        ids, attention, mask = self.tokenize(_flatten(inputs[contract.TEXT]))
        return {contract.INPUT_IDS: ids, contract.ATTENTION_MASK: attention, contract.TEXT_MASK: mask}


class PreprocessAudio(BatchedModel):
    """AUDIO (WAV bytes) -> AUDIO_TENSOR (log-mel), AUDIO_MASK."""

    def setup(self) -> None:
        """Read the audio spec from the model parameters."""
        self.spec = AudioSpec.model_validate_json(self.parameters["modality_spec"])

    def warm_inputs(self) -> dict[str, np.ndarray]:
        """Two quiet tones, one at the model's rate and one that needs resampling, featurized once at load."""
        import io

        import soundfile

        files = []
        for rate in (self.spec.sample_rate, 44100):
            t = np.arange(int(rate * self.spec.clip_seconds)) / rate
            buffer = io.BytesIO()
            soundfile.write(buffer, 0.1 * np.sin(2 * np.pi * 440.0 * t), rate, format="WAV", subtype="PCM_16")
            files.append(buffer.getvalue())
        return {contract.AUDIO: np.array(files, dtype=np.object_).reshape(-1, 1)}

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Decode and featurize one request's clips."""
        from trimodal.runtime.preprocess import preprocess_audio

        tensor, mask = preprocess_audio(_flatten(inputs[contract.AUDIO]), self.spec)
        return {contract.AUDIO_TENSOR: tensor, contract.AUDIO_MASK: mask}
