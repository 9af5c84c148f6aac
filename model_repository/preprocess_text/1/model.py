"""Triton Python-backend entry point; the code lives in trimodal.backends.preprocess (rendered by trimodal.repository)."""

from trimodal.backends.preprocess import PreprocessText as TritonPythonModel

__all__ = ["TritonPythonModel"]
