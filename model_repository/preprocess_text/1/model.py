"""Triton Python-backend entry point (rendered by trimodal.repository); the code is in trimodal.backends.preprocess."""

from trimodal.backends.preprocess import PreprocessText as TritonPythonModel

__all__ = ["TritonPythonModel"]
