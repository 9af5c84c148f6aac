"""The one place that creates ONNX Runtime sessions (CPU), for the backends, the in-process pipeline and checks."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from trimodal.errors import RepositoryError

LOGGER = logging.getLogger(__name__)


def ort_session(path: Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for one graph.

    Args:
        path: the ``.onnx`` file.
        threads: intra-op threads (None or 0 = ONNX Runtime's default, one per core); inter-op is 1 when set.

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
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_session(session: Any, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run every output of ``session`` on ``feeds``; outputs keyed by tensor name."""
    names = [output.name for output in session.get_outputs()]
    return dict(zip(names, session.run(names, feeds), strict=True))
