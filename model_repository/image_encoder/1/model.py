"""Triton Python-backend entry point; the code lives in trimodal.backends.onnx_model (rendered by trimodal.repository)."""

from trimodal.backends.onnx_model import OnnxModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
