"""gRPC client of the ``multimodal`` ensemble: raw bytes in, typed results out, a deadline on every call.

Example:
    >>> from trimodal.client import TrimodalClient, Sample
    >>> with TrimodalClient("127.0.0.1:8001") as client:
    ...     result = client.classify(Sample(image=png_bytes, text="sieben", audio=wav_bytes))
    ...     print(result.label, result.probability)
    ...     print(result.explain())  # e.g. "image says three (0.98), audio says seven (0.97): conflict (score 0.97)"

Only ``tritonclient[grpc]`` and numpy are needed (``pip install trimodal`` installs no torch).
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from trimodal import contract
from trimodal.errors import ClientError

LOGGER = logging.getLogger(__name__)

DEFAULT_URL = "127.0.0.1:8001"
DEFAULT_TIMEOUT_S = 10.0
DEFAULT_MAX_REQUEST_BYTES = 16 * 1024 * 1024
SERVER_TIMEOUT_FRACTION = 0.8
"""Share of a call's deadline sent to the server as the request's own timeout: Triton then drops work that
waited too long itself (UNAVAILABLE, "Request timeout expired") before the client's deadline cancels it; a
flood of client-cancelled requests can wedge Triton 2.51 (benchmarks/RELIABILITY.md)."""


MIN_SERVER_TIMEOUT_S = 0.05
"""Below this deadline no server-side timeout is sent: no answer fits in it anyway, the client's deadline
governs, and Triton 2.51 handles requests that expire while still being received badly."""


def server_timeout_us(deadline_s: float) -> int | None:
    """The server-side timeout (microseconds, Triton's request ``timeout``) for a call with this deadline.

    Returns:
        ``SERVER_TIMEOUT_FRACTION`` of the deadline, or None (no server-side timeout) below 50 ms.
    """
    if deadline_s < MIN_SERVER_TIMEOUT_S:
        return None
    return int(deadline_s * SERVER_TIMEOUT_FRACTION * 1e6)


@dataclass(frozen=True)
class RetryPolicy:
    """Retries for UNAVAILABLE only (overload shed, server starting/stopping); never for other errors.

    Attempt ``n`` (from 1) sleeps ``min(max_backoff_s, initial_backoff_s * 2**(n-1))`` scaled by a random
    factor in ``[1 - jitter, 1 + jitter]`` before retrying; at most ``attempts`` calls in total, each with
    the client's deadline.
    """

    attempts: int = 3
    initial_backoff_s: float = 0.05
    max_backoff_s: float = 1.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts: expected >= 1, got {self.attempts}")
        if not 0.0 <= self.jitter <= 1.0:
            raise ValueError(f"RetryPolicy.jitter: expected a fraction in [0, 1], got {self.jitter}")

    def backoff(self, attempt: int, rng: random.Random | None = None) -> float:
        """Seconds to sleep after failed attempt number ``attempt`` (1-based)."""
        base = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (attempt - 1))
        return base * (1.0 + self.jitter * (2.0 * (rng or random).random() - 1.0))


NO_RETRY = RetryPolicy(attempts=1)


@dataclass(frozen=True)
class Sample:
    """One multimodal sample; any modality may be None (sent as an empty element = absent)."""

    image: bytes | None = None
    text: str | bytes | None = None
    audio: bytes | None = None

    @classmethod
    def from_files(
        cls, image: str | os.PathLike[str] | None = None, text: str | None = None,
        audio: str | os.PathLike[str] | None = None,
    ) -> Sample:  # fmt: skip
        """Build a sample from an image file, a text and a WAV file (each optional).

        Raises:
            ClientError: if a file cannot be read.
        """
        return cls(image=_read(image, "image"), text=text, audio=_read(audio, "audio"))

    def encoded(self) -> tuple[bytes, bytes, bytes]:
        """The three ensemble elements (empty bytes for an absent modality)."""
        text = self.text.encode("utf-8") if isinstance(self.text, str) else self.text
        return self.image or b"", text or b"", self.audio or b""


def _read(path: str | os.PathLike[str] | None, what: str) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ClientError(f"cannot read the {what} file {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class ModalityVote:
    """What one present modality says on its own (its classification head in the served model)."""

    modality: str
    label: str
    index: int
    probability: float
    probabilities: np.ndarray = field(repr=False)


@dataclass(frozen=True)
class Classification:
    """Result for one sample: the fused answer and what each present modality says.

    Attributes:
        label: the top class of the fused probabilities.
        index: its index.
        probability: its fused probability.
        top_k: the top-k ``(label, probability)`` (Triton's classification extension).
        probabilities: every class's fused probability.
        modalities: per present modality (``image``, ``text``, ``audio``) its own head's vote; absent ones are
            left out (the server marks them with NaN rows, never a guess).
        agreement: the present modalities' top classes are all the same.
        conflict_score: how strongly two present modalities disagree (0 = not at all, up to 1).
        conflict: the server flagged the disagreement (score at or above the served threshold).
    """

    label: str
    index: int
    probability: float
    top_k: list[tuple[str, float]]
    probabilities: np.ndarray = field(repr=False)
    modalities: dict[str, ModalityVote] = field(default_factory=dict)
    agreement: bool = True
    conflict_score: float = 0.0
    conflict: bool = False

    def explain(self) -> str:
        """One line on what the modalities say, e.g. ``image says three (0.98), audio says seven (0.97): conflict``.

        Returns:
            The votes of the present modalities, then ``conflict`` (with its score), ``agree`` or ``no conflict``.
        """
        votes = ", ".join(f"{v.modality} says {v.label} ({v.probability:.2f})" for v in self.modalities.values())
        if len(self.modalities) < 2:
            return votes
        if self.conflict:
            return f"{votes}: conflict (score {self.conflict_score:.2f})"
        return f"{votes}: {'agree' if self.agreement else f'no conflict (score {self.conflict_score:.2f})'}"


def build_inputs(samples: Sequence[Sample], module: Any) -> list[Any]:
    """Tensors for a batch of samples (IMAGE, TEXT, AUDIO as BYTES with shape [batch, 1]).

    Args:
        samples: the batch.
        module: ``tritonclient.grpc`` or ``tritonclient.grpc.aio`` (both have InferInput).

    Returns:
        The InferInput list.
    """
    if not samples:
        raise ClientError("no samples to classify: expected at least one")
    columns = list(zip(*(sample.encoded() for sample in samples), strict=True))
    inputs = []
    for name, column in zip((contract.IMAGE, contract.TEXT, contract.AUDIO), columns, strict=True):
        array = np.empty((len(samples), 1), dtype=np.object_)
        array[:, 0] = column
        tensor = module.InferInput(name, list(array.shape), "BYTES")
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


AGREEMENT_OUTPUTS: tuple[str, ...] = (
    contract.MODALITY_PROBABILITIES, contract.MODALITY_LABELS, contract.AGREEMENT, contract.CONFLICT_SCORE,
    contract.CONFLICT,
)  # fmt: skip


def build_outputs(module: Any, top_k: int) -> list[Any]:
    """Requested outputs: raw probabilities, the top-k labels (classification extension), the agreement outputs."""
    return [
        module.InferRequestedOutput(contract.PROBABILITIES),
        module.InferRequestedOutput(contract.LABEL, class_count=top_k),
        *(module.InferRequestedOutput(name) for name in AGREEMENT_OUTPUTS),
    ]


def _top_k(entries: Any) -> list[tuple[str, float, int]]:
    """``(label, score, index)`` of the classification extension's ``"<score>:<index>:<label>"`` strings."""
    top = []
    for entry in np.atleast_1d(entries):
        text = entry.decode("utf-8") if isinstance(entry, bytes) else str(entry)
        score, index, *name = text.split(":", 2)
        top.append((name[0] if name else index, float(score), int(index)))
    return top


def _votes(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, ModalityVote]:
    """Each present modality's vote from its MODALITY_PROBABILITIES row (NaN = absent) and MODALITY_LABELS."""
    votes = {}
    for modality, row, label in zip(contract.MODALITIES, probabilities, labels, strict=True):
        if np.isnan(row).any():
            continue
        index = int(np.argmax(row))
        name = label.decode("utf-8") if isinstance(label, bytes) else str(label)
        votes[modality] = ModalityVote(modality, name, index, float(row[index]), row)
    return votes


def parse_result(result: Any) -> list[Classification]:
    """Turn an InferResult into one :class:`Classification` per sample (agreement fields when answered)."""
    probabilities = result.as_numpy(contract.PROBABILITIES)
    labels = result.as_numpy(contract.LABEL)
    extra = {name: result.as_numpy(name) for name in AGREEMENT_OUTPUTS}
    parsed = []
    for i, (row, entries) in enumerate(zip(probabilities, labels, strict=True)):
        top = _top_k(entries)
        best = top[0]
        fields: dict[str, Any] = {}
        if all(value is not None for value in extra.values()):
            fields = {
                "modalities": _votes(extra[contract.MODALITY_PROBABILITIES][i], extra[contract.MODALITY_LABELS][i]),
                "agreement": bool(extra[contract.AGREEMENT][i, 0]),
                "conflict_score": float(extra[contract.CONFLICT_SCORE][i, 0]),
                "conflict": bool(extra[contract.CONFLICT][i, 0]),
            }
        parsed.append(
            Classification(
                label=best[0],
                index=best[2],
                probability=float(row[best[2]]),
                top_k=[(name, score) for name, score, _ in top],
                probabilities=row,
                **fields,
            )
        )
    return parsed


def _status_name(exc: Exception) -> str | None:
    status = exc.status() if hasattr(exc, "status") else None
    return str(status).rsplit(".", 1)[-1] if status else None


def _wrap(exc: Exception, what: str) -> ClientError:
    status = _status_name(exc)
    message = exc.message() if hasattr(exc, "message") else str(exc)
    return ClientError(f"{what} failed ({status or 'error'}): {message}", status=status)


class TrimodalClient:
    """Synchronous gRPC client with a deadline on every call.

    Args:
        url: ``host:port`` of Triton's gRPC endpoint (``TRIMODAL_URL`` overrides the default).
        timeout_s: deadline of every call in seconds.
        model: the ensemble's name.
        ssl: use TLS (see tritonclient's ``root_certificates``/``private_key``/``certificate_chain``).
        retry: retry policy for UNAVAILABLE (default: no retry).
        max_request_bytes: requests larger than this are refused by the client's gRPC channel.
        **grpc_options: passed to ``tritonclient.grpc.InferenceServerClient``.
    """

    def __init__(
        self, url: str | None = None, timeout_s: float = DEFAULT_TIMEOUT_S, model: str = contract.ENSEMBLE,
        ssl: bool = False, retry: RetryPolicy = NO_RETRY, max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        **grpc_options: Any,
    ) -> None:  # fmt: skip
        import tritonclient.grpc as grpcclient

        if timeout_s <= 0:
            raise ValueError(f"timeout_s: expected a positive deadline in seconds, got {timeout_s}")
        self._module = grpcclient
        self.url = url or os.environ.get("TRIMODAL_URL", DEFAULT_URL)
        self.timeout_s = timeout_s
        self.model = model
        self.retry = retry
        self.max_request_bytes = max_request_bytes
        channel_args = [
            ("grpc.max_send_message_length", max_request_bytes),
            ("grpc.max_receive_message_length", 64 * 1024 * 1024),
            *grpc_options.pop("channel_args", []),
        ]
        self._client = grpcclient.InferenceServerClient(self.url, ssl=ssl, channel_args=channel_args, **grpc_options)

    def is_ready(self) -> bool:
        """True when the server and the ensemble are ready (False when unreachable)."""
        from tritonclient.utils import InferenceServerException

        try:
            return bool(self._client.is_model_ready(self.model, client_timeout=self.timeout_s))
        except InferenceServerException:
            return False

    def classify(self, sample: Sample, top_k: int = 3) -> Classification:
        """Classify one sample.

        Args:
            sample: the inputs; absent modalities are sent as empty elements.
            top_k: how many labels to return in ``top_k``.

        Returns:
            The classification.

        Raises:
            ClientError: with ``status`` (e.g. ``INVALID_ARGUMENT``, ``UNAVAILABLE``, ``DEADLINE_EXCEEDED``).
        """
        return self.classify_batch([sample], top_k=top_k)[0]

    def classify_batch(self, samples: Sequence[Sample], top_k: int = 3) -> list[Classification]:
        """Classify several samples in ONE request (at most the ensemble's max_batch_size).

        UNAVAILABLE answers are retried according to :attr:`retry`; every attempt has the deadline.
        """
        from tritonclient.utils import InferenceServerException

        inputs = build_inputs(samples, self._module)
        size = sum(len(s.encoded()[0]) + len(s.encoded()[1]) + len(s.encoded()[2]) for s in samples)
        if size > self.max_request_bytes:
            raise ClientError(
                f"request of {size} bytes exceeds max_request_bytes ({self.max_request_bytes}); "
                "send fewer or smaller samples", status="INVALID_ARGUMENT",
            )  # fmt: skip
        for attempt in range(1, self.retry.attempts + 1):
            try:
                result = self._client.infer(
                    self.model,
                    inputs,
                    outputs=build_outputs(self._module, top_k),
                    client_timeout=self.timeout_s,
                    timeout=server_timeout_us(self.timeout_s),
                )
                return parse_result(result)
            except InferenceServerException as exc:
                error = _wrap(exc, f"classify ({len(samples)} sample(s))")
                if error.status != "UNAVAILABLE" or attempt == self.retry.attempts:
                    raise error from None
                pause = self.retry.backoff(attempt)
                LOGGER.info("attempt %d got UNAVAILABLE; retrying in %.3f s", attempt, pause)
                time.sleep(pause)
        raise AssertionError("unreachable")

    def close(self) -> None:
        """Close the channel."""
        self._client.close()

    def __enter__(self) -> TrimodalClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


async def classify_many_async(
    samples: Sequence[Sample], url: str | None = None, *, concurrency: int = 16, top_k: int = 3,
    timeout_s: float = DEFAULT_TIMEOUT_S, model: str = contract.ENSEMBLE, return_exceptions: bool = False,
) -> list[Classification | ClientError]:  # fmt: skip
    """Classify many samples with one request each, ``concurrency`` in flight (Triton batches them).

    Args:
        samples: the samples.
        url: gRPC ``host:port``.
        concurrency: maximum requests in flight.
        top_k: labels per result.
        timeout_s: deadline of each request.
        model: ensemble name.
        return_exceptions: put a :class:`ClientError` in place of a failed sample instead of raising.

    Returns:
        One result per sample, in order.
    """
    import tritonclient.grpc.aio as aioclient
    from tritonclient.utils import InferenceServerException

    client = aioclient.InferenceServerClient(url or os.environ.get("TRIMODAL_URL", DEFAULT_URL))
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, sample: Sample) -> Classification | ClientError:
        async with gate:
            try:
                result = await client.infer(
                    model, build_inputs([sample], aioclient), outputs=build_outputs(aioclient, top_k),
                    client_timeout=timeout_s, timeout=server_timeout_us(timeout_s),
                )  # fmt: skip
            except InferenceServerException as exc:
                error = _wrap(exc, f"classify sample {index}")
                if return_exceptions:
                    return error
                raise error from None
            return parse_result(result)[0]

    try:
        return list(await asyncio.gather(*(one(i, s) for i, s in enumerate(samples))))
    finally:
        await client.close()


def classify_many(samples: Sequence[Sample], url: str | None = None, **kwargs: Any) -> list[Any]:
    """Synchronous wrapper of :func:`classify_many_async` (same arguments)."""
    return asyncio.run(classify_many_async(samples, url, **kwargs))
