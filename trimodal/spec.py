"""Typed view of ``pipeline.yaml``: the one source of truth for the whole pipeline.

Everything else (dataset, training, export, Triton configs, TensorRT profiles) reads a
:class:`PipelineSpec`. Loading an invalid file raises :class:`~trimodal.errors.SpecError` whose
message names the offending field, e.g. ``modalities.image.size: Input should be greater than 0``.
"""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trimodal.contract import ENCODERS, MODALITIES, MODEL_NAMES
from trimodal.errors import SpecError

LOGGER = logging.getLogger(__name__)

FUSION_STRATEGIES: tuple[str, ...] = ("concat", "weighted", "attention")
Strategy = Literal["concat", "weighted", "attention"]
Precision = Literal["fp32", "fp16", "int8", "int8-cpu"]
PRECISIONS: tuple[str, ...] = ("fp32", "fp16", "int8", "int8-cpu")
CPU_ONLY_PRECISIONS: tuple[str, ...] = ("int8-cpu",)
"""Graphs ONNX Runtime runs and TensorRT cannot build (uint8 activations with a zero point: TensorRT takes int8
with zero point 0 only)."""
TARGETS: tuple[str, ...] = ("cpu", "gpu")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetSpec(_Strict):
    """Sizes and degradation of the generated multimodal digits dataset."""

    train_per_class: int = Field(gt=0)
    val_per_class: int = Field(gt=0)
    test_per_class: int = Field(gt=0)
    corruption: dict[str, float]

    @field_validator("corruption")
    @classmethod
    def _check_corruption(cls, value: dict[str, float]) -> dict[str, float]:
        missing = set(MODALITIES) - set(value)
        unknown = set(value) - set(MODALITIES)
        if missing or unknown:
            raise ValueError(f"expected exactly the keys {list(MODALITIES)}, got {sorted(value)}")
        for name, prob in value.items():
            if not 0.0 <= prob < 1.0:
                raise ValueError(f"{name}: expected a probability in [0, 1), got {prob}")
        return value


class ImageSpec(_Strict):
    """Image modality: encoded PNG/JPEG bytes decoded to a square grayscale tensor."""

    input: str = "IMAGE"
    size: int = Field(gt=0, le=512)
    max_bytes: int = Field(default=8 * 1024 * 1024, gt=0)  # larger encoded files are refused unread
    feature_dim: int = Field(gt=0)


class TextSpec(_Strict):
    """Text modality: UTF-8 bytes tokenized to a fixed number of tokens."""

    input: str = "TEXT"
    max_tokens: int = Field(ge=4, le=512)
    max_bytes: int = Field(gt=0)
    feature_dim: int = Field(gt=0)


class AudioSpec(_Strict):
    """Audio modality: WAV bytes decoded, resampled, cropped/padded and turned into a log-mel."""

    input: str = "AUDIO"
    max_bytes: int = Field(default=4 * 1024 * 1024, gt=0)  # larger WAV files are refused unread
    sample_rate: int = Field(gt=0)
    clip_seconds: float = Field(gt=0)
    n_fft: int = Field(gt=0)
    hop_length: int = Field(gt=0)
    n_mels: int = Field(gt=0)
    feature_dim: int = Field(gt=0)

    @property
    def clip_samples(self) -> int:
        """Number of samples in one clip."""
        return round(self.sample_rate * self.clip_seconds)

    @property
    def n_frames(self) -> int:
        """Number of STFT frames of one clip (centered frames, like librosa/torch)."""
        return 1 + self.clip_samples // self.hop_length

    @model_validator(mode="after")
    def _check_fft(self) -> AudioSpec:
        if self.n_mels > self.n_fft // 2 + 1:
            raise ValueError(f"n_mels ({self.n_mels}) must be <= n_fft // 2 + 1 ({self.n_fft // 2 + 1})")
        return self


class ModalitiesSpec(_Strict):
    """The three modalities."""

    image: ImageSpec
    text: TextSpec
    audio: AudioSpec


class FusionSpec(_Strict):
    """Fusion-plus-classifier head."""

    strategy: Strategy
    train_strategies: list[Strategy]
    hidden_dim: int = Field(gt=0)
    modality_dropout: float = Field(ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _served_is_trained(self) -> FusionSpec:
        if self.strategy not in self.train_strategies:
            raise ValueError(f"strategy {self.strategy!r} must be listed in train_strategies {self.train_strategies}")
        return self


class MultitaskSpec(_Strict):
    """Per-modality classification heads trained with the fusion head, and the agreement signal they give.

    ``loss_weights`` weigh one cross-entropy per task: ``fusion`` (the fused prediction) and one per modality
    (its own head, on the samples where it is present). With ``auxiliary_losses`` false the modality heads are
    still trained (the ensemble reports them), but on detached features: their losses do not shape the layers
    they share with the fusion head (the single-task baseline).
    """

    auxiliary_losses: bool
    loss_weights: dict[str, float]
    conflict_threshold: float = Field(gt=0.0, le=1.0)

    @field_validator("loss_weights")
    @classmethod
    def _check_weights(cls, value: dict[str, float]) -> dict[str, float]:
        expected = ["fusion", *MODALITIES]
        if sorted(value) != sorted(expected):
            raise ValueError(f"expected exactly the keys {expected}, got {sorted(value)}")
        for name, weight in value.items():
            if not (math.isfinite(weight) and weight >= 0.0):
                raise ValueError(f"{name}: expected a finite weight >= 0, got {weight}")
        if value["fusion"] <= 0.0:
            raise ValueError(f"fusion: the fused prediction's weight must be > 0, got {value['fusion']}")
        return value


class TrainingSpec(_Strict):
    """Training hyper-parameters (CPU friendly)."""

    batch_size: int = Field(gt=0)
    encoder_epochs: int = Field(gt=0)
    fusion_epochs: int = Field(gt=0)
    learning_rate: float = Field(gt=0)


class ModelServing(_Strict):
    """Dynamic batching and instance settings of one Triton model (all optional, see defaults)."""

    max_batch_size: int | None = Field(default=None, gt=0)
    preferred_batch_sizes: list[int] | None = None
    max_queue_delay_us: int | None = Field(default=None, ge=0)
    cpu_instances: int | None = Field(default=None, gt=0)
    gpu_instances: int | None = Field(default=None, gt=0)
    ort_threads: int | None = Field(default=None, gt=0)
    max_queue_size: int | None = Field(default=None, ge=0)
    queue_timeout_us: int | None = Field(default=None, ge=0)


class ResolvedServing(_Strict):
    """Serving settings of one model after defaults were applied."""

    max_batch_size: int = Field(gt=0)
    preferred_batch_sizes: list[int]
    max_queue_delay_us: int = Field(ge=0)
    cpu_instances: int = Field(gt=0)
    gpu_instances: int = Field(gt=0)
    ort_threads: int = Field(default=1, gt=0)  # ONNX Runtime intra-op threads per CPU instance
    # Queue policy: beyond max_queue_size waiting requests, or after queue_timeout_us in the queue, a request
    # is rejected with UNAVAILABLE instead of waiting without bound (0 = no limit, Triton's default).
    max_queue_size: int = Field(default=0, ge=0)
    queue_timeout_us: int = Field(default=0, ge=0)

    @model_validator(mode="after")
    def _preferred_fit(self) -> ResolvedServing:
        bad = [size for size in self.preferred_batch_sizes if not 0 < size <= self.max_batch_size]
        if bad:
            raise ValueError(f"preferred_batch_sizes {bad} must lie in 1..max_batch_size ({self.max_batch_size})")
        return self


class EnginesSpec(_Strict):
    """TensorRT engine build settings (GPU target)."""

    workspace_mib: int = Field(gt=0)
    # One plan per GPU architecture (Triton's cc_model_filenames); empty = a single model.plan.
    compute_capabilities: list[str] = Field(default_factory=list)
    text_min_tokens: int = Field(ge=1)
    calibration_batches: int = Field(gt=0)

    @field_validator("compute_capabilities")
    @classmethod
    def _check_cc(cls, value: list[str]) -> list[str]:
        for cc in value:
            major, _, minor = cc.partition(".")
            if not (major.isdigit() and minor.isdigit()):
                raise ValueError(f"compute capability {cc!r}: expected MAJOR.MINOR such as '8.6'")
        return value


class ServingSpec(_Strict):
    """Per-model serving settings with defaults."""

    defaults: ResolvedServing
    models: dict[str, ModelServing] = Field(default_factory=dict)
    ensemble_max_batch_size: int = Field(gt=0)

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: dict[str, ModelServing]) -> dict[str, ModelServing]:
        unknown = sorted(set(value) - set(MODEL_NAMES))
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; expected some of {list(MODEL_NAMES)}")
        return value

    def resolved(self, model: str) -> ResolvedServing:
        """Serving settings of ``model`` with the defaults filled in.

        Args:
            model: one of :data:`MODEL_NAMES`.

        Returns:
            The merged settings.
        """
        override = self.models.get(model, ModelServing()).model_dump(exclude_none=True)
        return ResolvedServing(**{**self.defaults.model_dump(), **override})

    @model_validator(mode="after")
    def _ensemble_fits(self) -> ServingSpec:
        for model in MODEL_NAMES:
            try:
                settings = self.resolved(model)
            except ValidationError as exc:
                raise ValueError(f"models.{model}: {exc.errors()[0]['msg']}") from exc
            if self.ensemble_max_batch_size > settings.max_batch_size:
                raise ValueError(
                    f"ensemble_max_batch_size ({self.ensemble_max_batch_size}) must be <= "
                    f"max_batch_size of {model} ({settings.max_batch_size})"
                )
        return self


class TargetPrecision(_Strict):
    """The precision of each ONNX model on one target: a default and per-model overrides."""

    default: Precision
    models: dict[str, Precision] = Field(default_factory=dict)

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        return {"default": value} if isinstance(value, str) else value

    @field_validator("models")
    @classmethod
    def _known_models(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(ENCODERS))
        if unknown:
            raise ValueError(f"unknown model(s) {unknown}; only the ONNX models {list(ENCODERS)} have a precision")
        return value

    def of(self, model: str) -> str:
        """The precision of ``model`` (one of :data:`~trimodal.contract.ENCODERS`) on this target."""
        return self.models.get(model, self.default)


class PrecisionSpec(_Strict):
    """Which precision graph each ONNX model serves, per target.

    ``trimodal build`` writes every model at every precision (``model.onnx``, ``model.fp16.onnx``,
    ``model.int8.onnx``, ``model.int8-cpu.onnx``); the CPU configs name the chosen graph, the GPU build makes
    plans from it (``int8-cpu`` is refused there: TensorRT takes no uint8 activations). A plain
    string (the older form) sets the GPU precision and leaves the CPU target at fp32.
    """

    cpu: TargetPrecision
    gpu: TargetPrecision

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: object) -> object:
        return {"cpu": "fp32", "gpu": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _gpu_builds_its_precisions(self) -> PrecisionSpec:
        chosen = {self.gpu.default, *self.gpu.models.values()}
        refused = sorted(chosen & set(CPU_ONLY_PRECISIONS))
        if refused:
            raise ValueError(
                f"precision.gpu: {refused} is for ONNX Runtime on CPU only (uint8 activations, which "
                "TensorRT cannot build); use int8 (symmetric Q/DQ) on the GPU target"
            )
        return self

    def of(self, model: str, target: str) -> str:
        """The precision ``model`` is served at on ``target`` (``cpu`` or ``gpu``)."""
        if target not in TARGETS:
            raise ValueError(f"target {target!r}: expected one of {list(TARGETS)}")
        return getattr(self, target).of(model)


class LimitsSpec(_Strict):
    """Caps on what a client may send (enforced by the client, the load balancer and the preprocessors)."""

    max_request_bytes: int = Field(gt=0)


class PipelineSpec(_Strict):
    """The whole pipeline, as read from ``pipeline.yaml``."""

    name: str = Field(min_length=1)
    seed: int
    classes: list[str] = Field(min_length=2)
    dataset: DatasetSpec
    modalities: ModalitiesSpec
    fusion: FusionSpec
    multitask: MultitaskSpec
    training: TrainingSpec
    precision: PrecisionSpec
    engines: EnginesSpec
    serving: ServingSpec
    limits: LimitsSpec

    @field_validator("classes")
    @classmethod
    def _unique_classes(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("class names must be unique")
        return value

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.classes)


def _format_validation_error(exc: ValidationError, source: str) -> str:
    lines = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "<root>"
        lines.append(f"{field}: {error['msg']}")
    return f"invalid pipeline spec {source}:\n  " + "\n  ".join(lines)


def parse_spec(data: object, source: str = "<dict>") -> PipelineSpec:
    """Validate an already-parsed spec mapping.

    Args:
        data: the mapping read from YAML.
        source: where it came from, for error messages.

    Returns:
        The validated spec.

    Raises:
        SpecError: naming every invalid field.
    """
    if not isinstance(data, dict):
        raise SpecError(
            f"invalid pipeline spec {source}: expected a mapping at the top level, got {type(data).__name__}"
        )
    try:
        return PipelineSpec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format_validation_error(exc, source)) from None


def spec_path(path: str | os.PathLike[str] | None = None) -> Path:
    """Resolve the spec path: the argument, else ``TRIMODAL_SPEC``, else the project's pipeline.yaml."""
    from trimodal.layout import Layout

    return Layout.default(spec=Path(path) if path else None).spec


def load_spec(path: str | os.PathLike[str] | None = None) -> PipelineSpec:
    """Load and validate ``pipeline.yaml``.

    Args:
        path: the YAML file; defaults to :func:`spec_path`.

    Returns:
        The validated spec.

    Raises:
        SpecError: if the file is missing, is not YAML, or a field is invalid.
    """
    resolved = spec_path(path)
    try:
        text = resolved.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(f"cannot read pipeline spec {resolved}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"pipeline spec {resolved} is not valid YAML: {exc}") from None
    return parse_spec(data, str(resolved))
