"""The ``postprocess`` Python-backend model: the ensemble's last step, on CPU on both targets.

It receives the presence masks, the fusion head's fused probabilities and the per-modality heads'
probabilities, refuses every request that holds a sample with all modalities empty (INVALID_ARGUMENT, whatever
runs the fusion head: ONNX Runtime on CPU or a TensorRT engine on a GPU), and computes the answer with
:func:`trimodal.runtime.agreement.postprocess`, the function the in-process pipeline runs too. The class names
and the conflict threshold come from the model parameters rendered from pipeline.yaml.
"""

from __future__ import annotations

import json
import logging

import numpy as np

from trimodal import contract
from trimodal.errors import PreprocessError
from trimodal.runtime.agreement import postprocess, refuse_all_empty
from trimodal.runtime.backends.base import BatchedModel

LOGGER = logging.getLogger(__name__)


class Postprocess(BatchedModel):
    """Masks + FUSED_PROBABILITIES + HEAD_PROBABILITIES -> PROBABILITIES, LABEL and the agreement outputs."""

    concatenate = True

    def setup(self) -> None:
        """Read the class names and the conflict threshold from the model parameters."""
        self.classes = json.loads(self.parameters["classes"])
        self.threshold = float(self.parameters["conflict_threshold"])
        LOGGER.info("%s: %d classes, conflict threshold %g", self.model_name, len(self.classes), self.threshold)

    def warm_inputs(self) -> dict[str, np.ndarray]:
        """Every modality present, uniform probabilities."""
        classes, modalities = len(self.classes), len(contract.MASKS)
        ones = np.ones((1, 1), dtype=np.float32)
        heads = np.full((1, modalities, classes), 1.0 / classes, dtype=np.float32)
        return {**{mask: ones for mask in contract.MASKS}, contract.FUSED_PROBABILITIES: heads[:, 0],
                contract.HEAD_PROBABILITIES: heads}  # fmt: skip

    def reject(self, batch: dict[str, np.ndarray]) -> Exception | None:
        """Reject a request in which some sample has every modality empty."""
        try:
            refuse_all_empty(batch)
        except PreprocessError as exc:
            return exc
        return None

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The answer for the merged batch (every sample has a modality: the others were rejected)."""
        return postprocess(inputs, self.classes, self.threshold)
