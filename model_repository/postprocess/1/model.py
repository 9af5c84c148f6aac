"""Triton Python-backend entry point, rendered by trimodal.triton.repository.

The code is in trimodal.runtime.backends.postprocess.
"""

from trimodal.runtime.backends.postprocess import Postprocess as TritonPythonModel

__all__ = ["TritonPythonModel"]
