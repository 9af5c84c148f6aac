"""The model that stands in for the ensemble while a server drains: every new request gets UNAVAILABLE.

:func:`trimodal.triton.drain.drain_ensemble` loads it under the ensemble's name (Triton's model-repository
API, explicit model control). Triton keeps the old ensemble until its in-flight requests have completed, and
sends every request that arrives after the swap here, so a client is told to retry (another replica)
instead of getting NOT_FOUND for an unloaded model.
"""

from __future__ import annotations

from typing import Any

DRAIN_MESSAGE = "the server is shutting down and accepts no new requests; retry (on another replica)"


class DrainModel:
    """Python-backend model answering every request with UNAVAILABLE."""

    def initialize(self, args: dict[str, str]) -> None:
        """Triton entry point (nothing to load)."""

    def execute(self, requests: list[Any]) -> list[Any]:
        """Refuse every request with UNAVAILABLE."""
        import triton_python_backend_utils as pb_utils

        code = getattr(pb_utils.TritonError, "UNAVAILABLE", None)
        error = pb_utils.TritonError(DRAIN_MESSAGE, code) if code is not None else pb_utils.TritonError(DRAIN_MESSAGE)
        return [pb_utils.InferenceResponse(output_tensors=[], error=error) for _ in requests]
