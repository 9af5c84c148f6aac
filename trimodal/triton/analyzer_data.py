"""perf_analyzer input data for tuning single models: real test-split samples, not random tensors.

Random data is wrong for these models: the text encoder's token ids must index its vocabulary and its attention
mask decides how much padding is trimmed, and the fusion head's masks must be 0 or 1. So each model gets the
tensors it really receives in the ensemble: the test split's samples through the same preprocessing and the same
ONNX graphs (:class:`~trimodal.runtime.pipeline.LocalPipeline`), one perf_analyzer ``--input-data`` entry per
sample (``content`` + ``shape``, so variable dims such as the token axis need no ``--shape``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from trimodal import contract
from trimodal.errors import DataError, TuneError
from trimodal.runtime.pipeline import LocalPipeline, run_models
from trimodal.spec import PipelineSpec


def _test_columns(build_root: Path, samples: int) -> tuple[list[bytes], list[bytes], list[bytes]]:
    """The first ``samples`` test-split samples as (images, texts, audio) byte columns, every modality present."""
    from trimodal.training.data.dataset import load_split

    try:
        split = load_split(build_root, "test")
    except (DataError, OSError) as exc:
        raise TuneError(f"cannot read the test split in {build_root}/data ({exc}): run `trimodal build`") from exc
    count = min(samples, len(split))
    texts = [text.encode("utf-8") for text in split.texts[:count]]
    return list(split.images[:count]), texts, list(split.audio[:count])


def model_tensors(spec: PipelineSpec, repository: Path, build_root: Path, samples: int = 32) -> dict[str, np.ndarray]:
    """Every tensor of the pipeline for ``samples`` test samples: preprocessor, encoder and fusion in/outputs.

    Args:
        spec: the pipeline spec.
        repository: the model repository (its ONNX graphs and tokenizer).
        build_root: the build folder holding the dataset.
        samples: how many test samples.

    Returns:
        Arrays keyed by contract tensor name, the batch axis first.
    """
    columns = _test_columns(build_root, samples)
    pipeline = LocalPipeline(spec, repository)
    tensors = dict(pipeline.preprocess(*columns))
    for outputs in run_models(spec, tensors, pipeline.infer).values():
        tensors.update(outputs)
    return tensors


def _entry(tensor: np.ndarray) -> dict[str, object]:
    return {"content": tensor.ravel().tolist(), "shape": list(tensor.shape)}


def write_model_input_data(spec: PipelineSpec, model: str, tensors: dict[str, np.ndarray], path: Path) -> Path:
    """perf_analyzer ``--input-data`` JSON for one model: one entry per sample of ``tensors``.

    Args:
        spec: the pipeline spec (the model's input names).
        model: one of :data:`~trimodal.contract.ENCODERS`.
        tensors: from :func:`model_tensors`.
        path: the JSON file to write.

    Returns:
        ``path``.

    Raises:
        TuneError: if a tensor the model needs is missing.
    """
    names = [tensor.name for tensor in contract.model_io(spec)[model].inputs]
    missing = [name for name in names if name not in tensors]
    if missing:
        raise TuneError(f"{model}: no data for inputs {missing}")
    count = len(tensors[names[0]])
    data = [{name: _entry(np.asarray(tensors[name][index])) for name in names} for index in range(count)]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": data}), encoding="utf-8")
    return path
