"""The package's exception hierarchy: one base, one subclass per area."""

from __future__ import annotations


class TrimodalError(Exception):
    """Base of every error raised by trimodal on purpose."""


class SpecError(TrimodalError):
    """pipeline.yaml is missing or invalid; the message names the field."""


class DataError(TrimodalError):
    """The dataset could not be generated or read."""


class PreprocessError(TrimodalError, ValueError):
    """A raw input could not be decoded; the message names the input and what was expected."""


class ExportError(TrimodalError):
    """ONNX export or its parity check failed."""


class RepositoryError(TrimodalError):
    """The Triton model repository is inconsistent or could not be rendered."""


class ServerError(TrimodalError):
    """tritonserver could not be started, became unhealthy or did not stop."""


class ClientError(TrimodalError):
    """A request to the server failed; carries the gRPC status name when there is one."""

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status


class EngineError(TrimodalError):
    """A TensorRT engine could not be built or does not match its config/GPU."""


class BenchError(TrimodalError):
    """A benchmark could not run (missing tool, server that does not start, invalid setting or result)."""


class AutoscaleError(TrimodalError):
    """The autoscaling simulation got an invalid policy, load curve or benchmark file."""


class EvidenceError(TrimodalError):
    """A documented figure has no artifact, or a document's evidence region is unknown or malformed."""


class TuneError(TrimodalError):
    """Model Analyzer could not run (not installed, unknown model, repository not built) or measured nothing."""
