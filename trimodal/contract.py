"""Tensor names, dtypes and shapes shared by export, the Triton configs, the backends and the clients.

Names are chosen here (never exporter-generated). Shapes exclude the batch dimension; ``-1`` is a
variable dimension. The functions below derive the concrete shapes from a :class:`PipelineSpec`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from trimodal.spec import PipelineSpec

# Ensemble inputs (BYTES, one element per sample; an empty element means the modality is absent).
IMAGE = "IMAGE"
TEXT = "TEXT"
AUDIO = "AUDIO"

# Preprocessor outputs / encoder inputs.
IMAGE_TENSOR = "IMAGE_TENSOR"
INPUT_IDS = "INPUT_IDS"
ATTENTION_MASK = "ATTENTION_MASK"
AUDIO_TENSOR = "AUDIO_TENSOR"
IMAGE_MASK = "IMAGE_MASK"
TEXT_MASK = "TEXT_MASK"
AUDIO_MASK = "AUDIO_MASK"

# Encoder outputs / fusion inputs.
IMAGE_FEATURES = "IMAGE_FEATURES"
TEXT_FEATURES = "TEXT_FEATURES"
AUDIO_FEATURES = "AUDIO_FEATURES"

# Fusion head outputs / postprocess inputs: the fused class probabilities and, per modality (rows image, text,
# audio), its own head's class probabilities (computed for every row, meaningful only where it is present).
FUSED_PROBABILITIES = "FUSED_PROBABILITIES"
HEAD_PROBABILITIES = "HEAD_PROBABILITIES"

# Postprocess / ensemble outputs. PROBABILITIES are the fused probabilities of the samples that have at least
# one modality. LABEL carries the same values; it exists so that a client can ask Triton's classification
# extension for the top-k labels (class_count) and still get the raw probabilities in the same response.
# MODALITY_PROBABILITIES: per modality its head's probabilities, a NaN row where absent; MODALITY_LABELS its
# top class name ("" where absent); AGREEMENT: the present modalities' top classes are all the same;
# CONFLICT_SCORE: the largest, over pairs of present modalities whose top classes differ, of the smaller of
# their two top probabilities (0 without such a pair); CONFLICT: CONFLICT_SCORE >= the spec's threshold.
PROBABILITIES = "PROBABILITIES"
LABEL = "LABEL"
MODALITY_PROBABILITIES = "MODALITY_PROBABILITIES"
MODALITY_LABELS = "MODALITY_LABELS"
AGREEMENT = "AGREEMENT"
CONFLICT_SCORE = "CONFLICT_SCORE"
CONFLICT = "CONFLICT"

ENSEMBLE = "multimodal"
LABELS_FILE = "labels.txt"

# Model names: the only list of them. ENCODERS are the four ONNX graphs (three encoders + the fusion head),
# in the order the pipeline runs them; POSTPROCESS (Python backend, CPU on both targets) runs after them.
PREPROCESSORS: tuple[str, ...] = ("preprocess_image", "preprocess_text", "preprocess_audio")
FUSION = "fusion_classifier"
ENCODERS: tuple[str, ...] = ("image_encoder", "text_encoder", "audio_encoder", FUSION)
POSTPROCESS = "postprocess"
PYTHON_MODELS: tuple[str, ...] = (*PREPROCESSORS, POSTPROCESS)
"""The models whose one config serves both targets (Python backend on CPU)."""
MODEL_NAMES: tuple[str, ...] = (*PREPROCESSORS, *ENCODERS, POSTPROCESS)
MASKS: tuple[str, ...] = (IMAGE_MASK, TEXT_MASK, AUDIO_MASK)
MODALITIES: tuple[str, ...] = ("image", "text", "audio")
"""The modalities, in the order of MASKS and of the rows of HEAD_PROBABILITIES, MODALITY_PROBABILITIES and
MODALITY_LABELS."""
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Triton/KServe dtype names -> numpy (the data fed to ONNX Runtime, TensorRT and Triton).
NUMPY_DTYPES: dict[str, type[np.generic]] = {
    "FP32": np.float32,
    "FP16": np.float16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}


@dataclass(frozen=True)
class TensorSpec:
    """One named tensor of a model: Triton dtype string (``TYPE_`` suffix) and dims without batch."""

    name: str
    dtype: str
    dims: tuple[int, ...]
    label_file: bool = False


@dataclass(frozen=True)
class ModelIO:
    """Inputs and outputs of one Triton model."""

    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]


def model_io(spec: PipelineSpec) -> dict[str, ModelIO]:
    """Inputs/outputs of every model of the pipeline, derived from the spec.

    Args:
        spec: the pipeline spec.

    Returns:
        A mapping from model name (including the ensemble) to its tensors.
    """
    size = spec.modalities.image.size
    audio = spec.modalities.audio
    classes = spec.num_classes
    mask = lambda name: TensorSpec(name, "FP32", (1,))  # noqa: E731
    image_tensor = TensorSpec(IMAGE_TENSOR, "FP32", (1, size, size))
    input_ids = TensorSpec(INPUT_IDS, "INT64", (-1,))
    attention = TensorSpec(ATTENTION_MASK, "INT64", (-1,))
    audio_tensor = TensorSpec(AUDIO_TENSOR, "FP32", (1, audio.n_mels, audio.n_frames))
    image_features = TensorSpec(IMAGE_FEATURES, "FP32", (spec.modalities.image.feature_dim,))
    text_features = TensorSpec(TEXT_FEATURES, "FP32", (spec.modalities.text.feature_dim,))
    audio_features = TensorSpec(AUDIO_FEATURES, "FP32", (audio.feature_dim,))
    fused = TensorSpec(FUSED_PROBABILITIES, "FP32", (classes,))
    heads = TensorSpec(HEAD_PROBABILITIES, "FP32", (len(MASKS), classes))
    masks = (mask(IMAGE_MASK), mask(TEXT_MASK), mask(AUDIO_MASK))
    raw = lambda name: TensorSpec(name, "BYTES", (1,))  # noqa: E731
    answer = (
        TensorSpec(PROBABILITIES, "FP32", (classes,)),
        TensorSpec(LABEL, "FP32", (classes,), label_file=True),
        TensorSpec(MODALITY_PROBABILITIES, "FP32", (len(MASKS), classes)),
        TensorSpec(MODALITY_LABELS, "BYTES", (len(MASKS),)),
        TensorSpec(AGREEMENT, "BOOL", (1,)),
        TensorSpec(CONFLICT_SCORE, "FP32", (1,)),
        TensorSpec(CONFLICT, "BOOL", (1,)),
    )
    return {
        "preprocess_image": ModelIO((raw(IMAGE),), (image_tensor, masks[0])),
        "preprocess_text": ModelIO((raw(TEXT),), (input_ids, attention, masks[1])),
        "preprocess_audio": ModelIO((raw(AUDIO),), (audio_tensor, masks[2])),
        "image_encoder": ModelIO((image_tensor,), (image_features,)),
        "text_encoder": ModelIO((input_ids, attention), (text_features,)),
        "audio_encoder": ModelIO((audio_tensor,), (audio_features,)),
        FUSION: ModelIO((image_features, text_features, audio_features, *masks), (fused, heads)),
        POSTPROCESS: ModelIO((*masks, fused, heads), answer),
        ENSEMBLE: ModelIO((raw(IMAGE), raw(TEXT), raw(AUDIO)), answer),
    }


def cast_to_contract(spec: PipelineSpec, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cast every known tensor to its contract dtype (contiguous); unknown names pass unchanged.

    Args:
        spec: the pipeline spec.
        tensors: arrays by tensor name.

    Returns:
        The cast arrays by tensor name.
    """
    dtypes = {t.name: t.dtype for io in model_io(spec).values() for t in (*io.inputs, *io.outputs)}
    return {
        name: np.ascontiguousarray(value, dtype=NUMPY_DTYPES[dtypes[name]])
        if dtypes.get(name) in NUMPY_DTYPES
        else value
        for name, value in tensors.items()
    }
