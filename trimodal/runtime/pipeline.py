"""The whole pipeline in process, written once: preprocess -> refuse all-empty -> encoders -> fusion -> postprocess.

The postprocess step is :mod:`trimodal.runtime.agreement` (the answer and its agreement signal). Every tensor
is keyed by its contract name (:mod:`trimodal.contract`), and the four ONNX models are run through an
``infer(model, feeds) -> outputs`` function, so the same flow serves:

* :class:`LocalPipeline`: the repository's ONNX graphs in ONNX Runtime (the parity reference for Triton's
  answers and the benchmarks' in-process bound);
* the naive FastAPI baseline (its torch models behind an ``infer``);
* the TensorRT checks (engines vs ONNX Runtime) and INT8 calibration.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from trimodal import contract
from trimodal.errors import PreprocessError, RepositoryError
from trimodal.layout import RepositoryLayout
from trimodal.runtime.agreement import postprocess, refuse_all_empty
from trimodal.spec import PipelineSpec

LOGGER = logging.getLogger(__name__)

Feeds = dict[str, np.ndarray]
InferFn = Callable[[str, Feeds], Feeds]
"""``infer(model, feeds) -> outputs`` for one batch, every tensor keyed by its contract name."""


class Preprocessor:
    """Raw bytes of the three modalities -> the preprocessors' outputs, keyed by contract tensor name.

    The same functions the Triton preprocessors run (:mod:`trimodal.runtime.preprocess`).

    Args:
        spec: the pipeline spec.
        tokenizer_file: the ``tokenizer.json`` to tokenize with.
    """

    def __init__(self, spec: PipelineSpec, tokenizer_file: Path) -> None:
        from trimodal.runtime.preprocess import TextPreprocessor

        self.spec = spec
        self.tokenize = TextPreprocessor(spec.modalities.text, tokenizer_file)

    def __call__(self, images: Sequence[bytes], texts: Sequence[bytes | str], audio: Sequence[bytes]) -> Feeds:
        """Preprocess one batch (empty elements = absent modalities).

        Returns:
            IMAGE_TENSOR, IMAGE_MASK, INPUT_IDS, ATTENTION_MASK, TEXT_MASK, AUDIO_TENSOR, AUDIO_MASK.

        Raises:
            PreprocessError: for undecodable input, naming the input and the sample.
        """
        from trimodal.runtime.preprocess import preprocess_audio, preprocess_images

        image, image_mask = preprocess_images(list(images), self.spec.modalities.image)
        ids, attention, text_mask = self.tokenize(list(texts))
        audio_tensor, audio_mask = preprocess_audio(list(audio), self.spec.modalities.audio)
        return contract.cast_to_contract(
            self.spec,
            {
                contract.IMAGE_TENSOR: image,
                contract.IMAGE_MASK: image_mask,
                contract.INPUT_IDS: ids,
                contract.ATTENTION_MASK: attention,
                contract.TEXT_MASK: text_mask,
                contract.AUDIO_TENSOR: audio_tensor,
                contract.AUDIO_MASK: audio_mask,
            },
        )


def run_models(
    spec: PipelineSpec, tensors: Mapping[str, np.ndarray], infer: InferFn, batch_size: int | None = None
) -> dict[str, Feeds]:
    """Run the encoders and the fusion head on preprocessed tensors, in batches, with any backend.

    Args:
        spec: the pipeline spec.
        tensors: preprocessor outputs by tensor name (see :class:`Preprocessor`).
        infer: ``infer(model, feeds) -> outputs`` for one batch (ONNX Runtime, TensorRT, torch, a fake).
        batch_size: the largest batch sent to ``infer`` (None = everything at once).

    Returns:
        ``{model: {output name: array over all samples}}`` for the three encoders and the fusion head.

    Raises:
        PreprocessError: if a model's input is not available.
    """
    ios = contract.model_io(spec)
    available = dict(tensors)
    results: dict[str, Feeds] = {}
    total = len(next(iter(tensors.values())))
    step = batch_size or max(total, 1)
    for model in contract.ENCODERS:  # encoders first, fusion last: its inputs are the encoders' outputs + masks
        names = [tensor.name for tensor in ios[model].inputs]
        missing = [name for name in names if name not in available]
        if missing:
            raise PreprocessError(f"{model}: no data for inputs {missing}")
        chunks: dict[str, list[np.ndarray]] = {}
        for start in range(0, total, step):
            feeds = {name: available[name][start : start + step] for name in names}
            for name, value in infer(model, feeds).items():
                chunks.setdefault(name, []).append(np.asarray(value))
        results[model] = {name: np.concatenate(parts) for name, parts in chunks.items()}
        available.update(results[model])
    return results


def run_pipeline(
    spec: PipelineSpec, tensors: Mapping[str, np.ndarray], infer: InferFn, batch_size: int | None = None
) -> dict[str, Feeds]:
    """What the ensemble does after preprocessing: refuse all-empty samples, run the models, postprocess.

    Args:
        spec: the pipeline spec (classes and ``multitask.conflict_threshold`` for the postprocess step).
        tensors: preprocessor outputs by tensor name (see :class:`Preprocessor`).
        infer: ``infer(model, feeds) -> outputs`` for the four ONNX models (ONNX Runtime, TensorRT, torch).
        batch_size: the largest batch sent to ``infer`` (None = everything at once).

    Returns:
        ``{model: {output name: array}}`` for the encoders, the fusion head and ``postprocess`` (whose outputs
        are the ensemble's).

    Raises:
        PreprocessError: if a sample has every modality empty, or a model's input is not available.
    """
    refuse_all_empty(tensors)
    results = run_models(spec, tensors, infer, batch_size)
    answer = {**tensors, **results[contract.FUSION]}
    results[contract.POSTPROCESS] = postprocess(answer, spec.classes, spec.multitask.conflict_threshold)
    return results


def ort_infer(graph: Callable[[str], Path], threads: int | None = None, fused: bool = True) -> InferFn:
    """An ``infer`` over ONNX Runtime sessions, created on first use (one per model).

    Args:
        graph: model name -> its ``.onnx`` file.
        threads: intra-op threads per session (None = ONNX Runtime's default).
        fused: graph optimizations on (see :func:`trimodal.runtime.sessions.ort_session`).

    Returns:
        The infer function.
    """
    from trimodal.runtime.sessions import ort_session, run_session

    sessions: dict[str, Any] = {}

    def infer(model: str, feeds: Feeds) -> Feeds:
        if model not in sessions:
            sessions[model] = ort_session(graph(model), threads, fused)
        return run_session(sessions[model], feeds)

    return infer


def columns(samples: Sequence[Any]) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """``(images, texts, audio)`` byte columns of client samples (anything with ``encoded()``)."""
    encoded = [sample.encoded() for sample in samples]
    return [e[0] for e in encoded], [e[1] for e in encoded], [e[2] for e in encoded]


class LocalPipeline:
    """Preprocessing + the four ONNX graphs of a model repository, run in this process.

    This is the reference that Triton's answers are compared with (parity, every output), and the "in-process"
    bound in the benchmarks: no server, no serialization, batches exactly as given. It runs the graphs of the
    precisions pipeline.yaml serves on ``target`` (the CPU target's by default: what the CPU configs load).

    Args:
        spec: the pipeline spec.
        repo_dir: model repository holding ``<model>/1/model[.<precision>].onnx`` and the tokenizer.
        threads: ONNX Runtime intra-op threads per session (None = ORT's default).
        target: whose precisions to run, ``cpu`` or ``gpu``.
    """

    def __init__(self, spec: PipelineSpec, repo_dir: Path, threads: int | None = None, target: str = "cpu") -> None:
        repository = RepositoryLayout(Path(repo_dir))
        graphs = {m: repository.onnx_file(m, spec.precision.of(m, target)) for m in contract.ENCODERS}
        missing = [str(path) for path in graphs.values() if not path.is_file()]
        if missing:
            raise RepositoryError(f"missing {', '.join(missing)}: run `trimodal build` first")
        self.spec = spec
        self.graphs = graphs
        self.preprocess = Preprocessor(spec, repository.tokenizer)
        self.infer = ort_infer(graphs.__getitem__, threads)

    def answer(self, samples: Sequence[Any]) -> Feeds:
        """Everything the ensemble answers for a batch of samples, keyed by output name.

        Args:
            samples: the batch (any size; absent modalities as None).

        Returns:
            The ensemble's outputs (``PROBABILITIES``, ``LABEL``, ``MODALITY_PROBABILITIES``, ...).

        Raises:
            PreprocessError: for undecodable input or a sample with every modality empty.
        """
        tensors = self.preprocess(*columns(samples))
        return run_pipeline(self.spec, tensors, self.infer)[contract.POSTPROCESS]

    def classify(self, samples: Sequence[Any]) -> np.ndarray:
        """Class probabilities for a batch of samples.

        Args:
            samples: the batch (any size; absent modalities as None).

        Returns:
            (batch, classes) float32 probabilities.

        Raises:
            PreprocessError: for undecodable input or a sample with every modality empty.
        """
        return self.answer(samples)[contract.PROBABILITIES]
