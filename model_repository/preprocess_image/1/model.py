"""Triton Python-backend entry point; the code lives in trimodal.backends.preprocess (rendered by trimodal.repository)."""

from trimodal.backends.preprocess import PreprocessImage as TritonPythonModel

__all__ = ["TritonPythonModel"]
