"""CPU target of the encoders and the fusion head: the same model.onnx in ONNX Runtime.

All requests of a dynamic batch are concatenated into one ``InferenceSession.run`` call. The fusion
head's config names its presence masks in ``require_any_of``: a sample whose masks are all zero (every
modality empty) is rejected with INVALID_ARGUMENT instead of being classified from nothing.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from trimodal.errors import PreprocessError
from trimodal.runtime.backends.base import BatchedModel

LOGGER = logging.getLogger(__name__)


class OnnxModel(BatchedModel):
    """Runs ``parameters.onnx_file`` with ONNX Runtime on CPU."""

    concatenate = True

    def setup(self) -> None:
        """Create the ONNX Runtime session."""
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = int(self.parameters.get("intra_op_threads", "1"))
        options.inter_op_num_threads = 1
        path = self.version_dir / self.parameters.get("onnx_file", "model.onnx")
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.session_outputs = [o.name for o in self.session.get_outputs()]
        self.require_any_of = json.loads(self.parameters.get("require_any_of", "[]"))
        LOGGER.info("%s: ONNX Runtime session on %s", self.model_name, path)

    def reject(self, batch: dict[str, np.ndarray]) -> Exception | None:
        """Reject a request in which some sample has every required mask at zero."""
        if not self.require_any_of:
            return None
        present = np.concatenate([batch[name].reshape(-1, 1) for name in self.require_any_of], axis=1).any(axis=1)
        if present.all():
            return None
        empty = [int(i) for i in np.flatnonzero(~present)]
        return PreprocessError(
            f"IMAGE, TEXT, AUDIO: sample(s) {empty} have every modality empty; expected at least one "
            "non-empty input (an empty element means that modality is absent)"
        )

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on the merged batch."""
        outputs = self.session.run(self.session_outputs, inputs)
        return dict(zip(self.session_outputs, outputs, strict=True))
