"""Triton Python-backend entry point (rendered by trimodal.repository); the code is in trimodal.backends.onnx_model."""

from trimodal.backends.onnx_model import OnnxModel as TritonPythonModel

__all__ = ["TritonPythonModel"]
