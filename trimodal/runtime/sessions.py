"""The one place that creates ONNX Runtime sessions (CPU), for the backends, the in-process pipeline and checks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from trimodal.contract import ATTENTION_MASK, INPUT_IDS
from trimodal.errors import RepositoryError

LOGGER = logging.getLogger(__name__)


def ort_session(path: Path, threads: int | None = None, fused: bool = True) -> Any:
    """An ONNX Runtime CPU session for one graph.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (None or 0 = ONNX Runtime's default, one per core); inter-op is 1 when set.
        fused: ONNX Runtime's graph optimizations on (the default, how the CPU target serves). Off, a Q/DQ graph
            runs as written: DequantizeLinear, the float op, QuantizeLinear, which is ONNX's definition of the
            quantized graph (what TensorRT computes, accumulating in int32) whatever integer kernels the CPU has;
            fused, ONNX Runtime runs u8 x s8 integer kernels whose pairwise sums saturate in 16 bits on x86 CPUs
            without VNNI.

    Returns:
        The ``onnxruntime.InferenceSession``.

    Raises:
        RepositoryError: if the file does not exist.
    """
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise RepositoryError(f"missing {path}: run `trimodal build` first")
    options = ort.SessionOptions()
    if not fused:
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def fused_vs_defined(path: Path, feeds: dict[str, np.ndarray]) -> float:
    """How far ONNX Runtime's fused kernels land from what a graph defines, on this CPU.

    Runs ``feeds`` through ``path`` twice with one thread, graph optimizations on (as served) and off (each Q/DQ
    pair as ONNX defines it, see :func:`ort_session`).

    Args:
        path: the ``.onnx`` file.
        feeds: one batch, keyed by input name.

    Returns:
        The largest relative L2 difference over the outputs (0.0: identical).
    """
    fused = run_session(ort_session(path, 1), feeds)
    defined = run_session(ort_session(path, 1, fused=False), feeds)
    return max(float(np.linalg.norm(fused[k] - v) / np.linalg.norm(v)) for k, v in defined.items())


def trim_padding(feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Cut the token columns that are padding in every sample of the batch (exact for the text encoder).

    The text encoder masks padded keys out of attention and out of the mean pooling, so the columns after the
    longest real sequence of the batch change nothing but the work done; they are dropped from ``INPUT_IDS``
    and ``ATTENTION_MASK`` (at least one column is kept, so a batch of absent texts still runs). Feeds without
    an ``ATTENTION_MASK`` are returned as they are.

    Args:
        feeds: one batch, keyed by tensor name.

    Returns:
        The feeds with the trailing all-padding columns removed.
    """
    mask = feeds.get(ATTENTION_MASK)
    if mask is None or mask.ndim != 2:
        return feeds
    used = np.flatnonzero(np.asarray(mask).any(axis=0))
    length = int(used[-1]) + 1 if used.size else 1
    if length >= mask.shape[1]:
        return feeds
    return {name: value[:, :length] if name in (INPUT_IDS, ATTENTION_MASK) else value for name, value in feeds.items()}


def run_session(session: Any, feeds: dict[str, np.ndarray], trim: bool = True) -> dict[str, np.ndarray]:
    """Run every output of ``session`` on ``feeds``; outputs keyed by tensor name.

    Args:
        session: an ONNX Runtime session (:func:`ort_session`).
        feeds: one batch, keyed by tensor name.
        trim: drop the all-padding token columns first (:func:`trim_padding`; exact).

    Returns:
        Every output of the graph, keyed by tensor name.
    """
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, trim_padding(feeds) if trim else feeds), strict=True))
