"""The whole pipeline in process: the same preprocessing and the same ONNX graphs in ONNX Runtime.

This is the reference that Triton's answers are compared with (parity), and the "in-process" bound in
the benchmarks: no server, no serialization, batches exactly as given.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from trimodal import contract
from trimodal.client import Sample
from trimodal.errors import PreprocessError, RepositoryError
from trimodal.repository import DEFAULT_REPOSITORY
from trimodal.spec import PipelineSpec

LOGGER = logging.getLogger(__name__)


class LocalPipeline:
    """Preprocessing + the four ONNX graphs of a model repository, run in this process.

    Args:
        spec: the pipeline spec.
        repo_dir: model repository holding ``<model>/1/model.onnx`` and the tokenizer.
        threads: ONNX Runtime intra-op threads per session (None = ORT's default).
    """

    def __init__(self, spec: PipelineSpec, repo_dir: Path = DEFAULT_REPOSITORY, threads: int | None = None) -> None:
        import onnxruntime as ort

        from trimodal.data.preprocess import TextPreprocessor

        self.spec = spec
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        self.sessions = {}
        for model in contract.ENCODERS:
            path = repo_dir / model / "1" / "model.onnx"
            if not path.exists():
                raise RepositoryError(f"missing {path}: run `trimodal build` first")
            self.sessions[model] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.tokenize = TextPreprocessor(spec.modalities.text, repo_dir / "preprocess_text" / "1" / "tokenizer.json")

    def _run(self, model: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        session = self.sessions[model]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, feeds), strict=True))

    def classify(self, samples: Sequence[Sample]) -> np.ndarray:
        """Class probabilities for a batch of samples.

        Args:
            samples: the batch (any size; absent modalities as None).

        Returns:
            (batch, classes) float32 probabilities.

        Raises:
            PreprocessError: for undecodable input or a sample with every modality empty.
        """
        from trimodal.data.preprocess import preprocess_audio, preprocess_images

        images, texts, audio = (list(column) for column in zip(*(s.encoded() for s in samples), strict=True))
        image_tensor, image_mask = preprocess_images(images, self.spec.modalities.image)
        ids, attention, text_mask = self.tokenize(texts)
        audio_tensor, audio_mask = preprocess_audio(audio, self.spec.modalities.audio)
        empty = np.flatnonzero((image_mask + text_mask + audio_mask).reshape(-1) == 0)
        if empty.size:
            raise PreprocessError(f"IMAGE, TEXT, AUDIO: sample(s) {empty.tolist()} have every modality empty")
        feeds = {
            **self._run("image_encoder", {contract.IMAGE_TENSOR: image_tensor}),
            **self._run("text_encoder", {contract.INPUT_IDS: ids, contract.ATTENTION_MASK: attention}),
            **self._run("audio_encoder", {contract.AUDIO_TENSOR: audio_tensor}),
            contract.IMAGE_MASK: image_mask,
            contract.TEXT_MASK: text_mask,
            contract.AUDIO_MASK: audio_mask,
        }
        return self._run("fusion_classifier", feeds)[contract.PROBABILITIES]
