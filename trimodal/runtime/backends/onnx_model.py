"""CPU target of the encoders and the fusion head: the same ONNX graphs in ONNX Runtime.

All requests of a dynamic batch are concatenated into one ``InferenceSession.run`` call. Like a TensorRT
engine, the fusion head answers whatever it is given; samples with every modality empty are refused by the
``postprocess`` model that follows it in the ensemble.
"""

from __future__ import annotations

import logging

import numpy as np

from trimodal import contract
from trimodal.layout import ONNX_FILE
from trimodal.runtime.backends.base import BatchedModel
from trimodal.runtime.sessions import ort_session, run_session

LOGGER = logging.getLogger(__name__)

WARM_TOKENS = 32  # a variable token axis is warmed at this length (pipeline.yaml's text.max_tokens as shipped)
NUMPY_TYPES = {"TYPE_FP32": np.float32, "TYPE_FP16": np.float16, "TYPE_INT64": np.int64, "TYPE_INT32": np.int32}
"""The input types the ONNX graphs take, as Triton's model config names them."""


class OnnxModel(BatchedModel):
    """Runs ``parameters.onnx_file`` (the served precision's graph) with ONNX Runtime on CPU.

    With ``parameters.trim_padding == "true"`` (the text encoder) the token columns that are padding in every
    sample of the merged batch are cut before the run (:func:`trimodal.runtime.sessions.trim_padding`, exact).
    """

    concatenate = True

    def setup(self) -> None:
        """Create the ONNX Runtime session."""
        path = self.version_dir / self.parameters.get("onnx_file", ONNX_FILE)
        self.session = ort_session(path, int(self.parameters.get("intra_op_threads", "1")))
        self.trim = self.parameters.get("trim_padding", "false") == "true"
        LOGGER.info("%s: ONNX Runtime session on %s", self.model_name, path)

    def warm_inputs(self) -> dict[str, np.ndarray]:
        """A full batch of zeros (a token mask of ones: every column runs), so the largest buffers exist at load."""
        batch = max(1, int(self.model_config.get("max_batch_size", 1)))
        feeds = {}
        for tensor in self.model_config["input"]:
            dims = [WARM_TOKENS if int(dim) == -1 else int(dim) for dim in tensor["dims"]]
            dtype = NUMPY_TYPES[tensor["data_type"]]
            fill = 1 if tensor["name"] == contract.ATTENTION_MASK else 0
            feeds[tensor["name"]] = np.full([batch, *dims], fill, dtype=dtype)
        return feeds

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Run the graph on the merged batch."""
        return run_session(self.session, inputs, trim=self.trim)
