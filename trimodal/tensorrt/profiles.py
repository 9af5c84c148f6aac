"""TensorRT optimization profiles, derived from pipeline.yaml (no TensorRT needed)."""

from __future__ import annotations

import logging

from trimodal import contract
from trimodal.contract import ENCODERS
from trimodal.errors import EngineError
from trimodal.spec import PipelineSpec

LOGGER = logging.getLogger(__name__)

Shape = tuple[int, ...]
ShapeRange = tuple[Shape, Shape, Shape]
"""``(min shape, opt shape, max shape)`` of one input, batch dimension first."""


def profile_shapes(spec: PipelineSpec, model: str) -> dict[str, ShapeRange]:
    """The TensorRT optimization profile of one model, derived from the spec.

    Batch: min 1, opt = the largest preferred batch size (else ``max_batch_size``), max = ``max_batch_size``
    of the model's dynamic batching. Variable dims (-1, the text sequence): min
    ``engines.text_min_tokens``, opt = max = ``modalities.text.max_tokens`` (the preprocessor pads to it).

    Args:
        spec: the pipeline spec.
        model: one of :data:`trimodal.contract.ENCODERS`.

    Returns:
        ``{input tensor: (min shape, opt shape, max shape)}`` with the batch dimension first.

    Raises:
        EngineError: for a model that is not built as an engine or an inconsistent spec.
    """
    if model not in ENCODERS:
        raise EngineError(f"{model!r} is not built as a TensorRT engine; expected one of {list(ENCODERS)}")
    serving = spec.serving.resolved(model)
    max_batch = serving.max_batch_size
    opt_batch = max(serving.preferred_batch_sizes, default=max_batch)
    text = spec.modalities.text
    min_tokens = spec.engines.text_min_tokens
    if min_tokens > text.max_tokens:
        raise EngineError(
            f"engines.text_min_tokens ({min_tokens}) must be <= modalities.text.max_tokens ({text.max_tokens})"
        )
    shapes: dict[str, ShapeRange] = {}
    for tensor in contract.model_io(spec)[model].inputs:
        low, opt, high = [1], [opt_batch], [max_batch]
        for dim in tensor.dims:
            if dim == -1:
                low.append(min_tokens)
                opt.append(text.max_tokens)
                high.append(text.max_tokens)
            else:
                low.append(dim)
                opt.append(dim)
                high.append(dim)
        shapes[tensor.name] = (tuple(low), tuple(opt), tuple(high))
    return shapes


def opt_batch_size(spec: PipelineSpec, model: str) -> int:
    """The batch size TensorRT optimizes for (and calibrates with): the profile's opt batch."""
    return next(iter(profile_shapes(spec, model).values()))[1][0]
