"""Triton Python-backend entry point, rendered by trimodal.triton.repository.

The code is in trimodal.runtime.backends.preprocess.
"""

from trimodal.runtime.backends.preprocess import PreprocessImage as TritonPythonModel

__all__ = ["TritonPythonModel"]
