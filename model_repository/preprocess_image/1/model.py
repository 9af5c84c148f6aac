"""Triton Python-backend entry point (rendered by trimodal.repository); the code is in trimodal.backends.preprocess."""

from trimodal.backends.preprocess import PreprocessImage as TritonPythonModel

__all__ = ["TritonPythonModel"]
