"""Triton Python-backend entry point, rendered by trimodal.triton.repository.

The code is in trimodal.runtime.backends.onnx_model.
"""

from trimodal.runtime.backends.onnx_model import OnnxModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
