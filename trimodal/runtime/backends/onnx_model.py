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
from trimodal.layout import ONNX_FILE
from trimodal.runtime.backends.base import BatchedModel
from trimodal.runtime.pipeline import refuse_all_empty
from trimodal.runtime.sessions import ort_session, run_session

LOGGER = logging.getLogger(__name__)


class OnnxModel(BatchedModel):
    """Runs ``parameters.onnx_file`` with ONNX Runtime on CPU."""

    concatenate = True

    def setup(self) -> None:
        """Create the ONNX Runtime session."""
        path = self.version_dir / self.parameters.get("onnx_file", ONNX_FILE)
        self.session = ort_session(path, int(self.parameters.get("intra_op_threads", "1")))
        self.require_any_of = json.loads(self.parameters.get("require_any_of", "[]"))
        LOGGER.info("%s: ONNX Runtime session on %s", self.model_name, path)

    def reject(self, batch: dict[str, np.ndarray]) -> Exception | None:
        """Reject a request in which some sample has every required mask at zero."""
        if not self.require_any_of:
            return None
        try:
            refuse_all_empty(batch, self.require_any_of)
        except PreprocessError as exc:
            return exc
        return None

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on the merged batch."""
        return run_session(self.session, inputs)
