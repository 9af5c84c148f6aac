"""Shared plumbing of trimodal's Triton Python-backend models.

``triton_python_backend_utils`` only exists inside Triton's Python stub, so it is imported lazily;
everything else here is plain numpy and testable without a server.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from trimodal.errors import PreprocessError

LOGGER = logging.getLogger(__name__)


BLAS_THREADS_ENV = "TRIMODAL_STUB_BLAS_THREADS"


class InternalError(RuntimeError):
    """A request failed for a reason that is not its input's fault (answered with INTERNAL, not INVALID_ARGUMENT)."""


def limit_blas_threads() -> int | None:
    """Give numpy/scipy's BLAS one thread in this process (a Python stub), unless ``TRIMODAL_STUB_BLAS_THREADS`` says.

    A stub's numpy work is one request's small arrays (the log-mel filterbank product, image resizing): a
    multi-threaded OpenBLAS spends more CPU waking and spinning its threads than the product costs. Measured on
    2 cores (benchmarks/cpu/): the audio preprocessor took about 3.8 ms of CPU per request with OpenBLAS's default
    threads and about 1.1 ms with one. ``TRIMODAL_STUB_BLAS_THREADS=0`` keeps the library's default.

    Returns:
        The thread limit applied, or None when the default was kept.
    """
    from threadpoolctl import threadpool_limits

    threads = int(os.environ.get(BLAS_THREADS_ENV, "1"))
    if threads <= 0:
        return None
    threadpool_limits(limits=threads, user_api="blas")
    return threads


def _pb_utils() -> Any:
    import triton_python_backend_utils as pb_utils

    return pb_utils


class BatchedModel:
    """Base class: per-request decoding and error isolation, one compute call per request batch.

    Subclasses implement :meth:`setup` and :meth:`compute`. A :class:`PreprocessError` (or ``ValueError``, or a
    ``MemoryError``) raised for one request becomes that request's INVALID_ARGUMENT response, any other exception
    its INTERNAL response (logged with its traceback); the other requests of the batch are answered normally and
    the model stays up. When a merged batch fails, its requests are run one by one to find the one at fault.
    """

    input_names: tuple[str, ...] = ()
    output_names: tuple[str, ...] = ()
    # When True, all requests of a batch are concatenated for one compute() call (tensor models);
    # when False, compute() runs per request (decoders, where one bad element must fail one request).
    concatenate: bool = False

    def initialize(self, args: dict[str, str]) -> None:
        """Triton entry point: read the model config and set the model up.

        Args:
            args: Triton's initialize arguments (model_config JSON, repository, version, ...).
        """
        self.model_config = json.loads(args["model_config"])
        self.model_name = args["model_name"]
        self.version_dir = Path(args["model_repository"]) / args["model_version"]
        self.parameters = {k: v["string_value"] for k, v in self.model_config.get("parameters", {}).items()}
        self.input_names = tuple(t["name"] for t in self.model_config["input"])
        self.output_names = tuple(t["name"] for t in self.model_config["output"])
        self.output_dtypes = {
            t["name"]: _pb_utils().triton_string_to_numpy(t["data_type"]) for t in self.model_config["output"]
        }
        limit_blas_threads()
        self.setup()
        self.warm_up()

    def setup(self) -> None:
        """Load whatever the model needs (override)."""

    def warm_inputs(self) -> dict[str, np.ndarray] | None:
        """A valid batch that :meth:`warm_up` runs once at load (override; None: no warm-up)."""
        return None

    def warm_up(self) -> None:
        """Run :meth:`warm_inputs` through :meth:`compute` before Triton marks the model ready.

        The first execution of a stub pays for lazy imports, ONNX Runtime's first allocations and the decoders'
        first calls: measured on 2 cores, a server that had just reported ready shed 16-23 of its first 32
        concurrent requests with UNAVAILABLE (over a second in a queue), and lost requests in flight when SIGTERM
        came 2 s after start. Triton waits for ``initialize`` before the model is ready, so this cost is paid
        there instead. A batch the model cannot process fails the load.
        """
        batch = self.warm_inputs()
        if batch is None:
            return
        started = time.perf_counter()
        self.compute(batch)
        LOGGER.info("%s: warmed up in %.0f ms", self.model_name, 1000 * (time.perf_counter() - started))

    def compute(self, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Turn one batch of inputs into outputs (override).

        Args:
            inputs: input name -> array with the batch dimension first.

        Returns:
            output name -> array with the same batch size.
        """
        raise NotImplementedError

    def execute(self, requests: list[Any]) -> list[Any]:
        """Triton entry point: answer every request, each with outputs or its own error."""
        pb_utils = _pb_utils()
        batches = [self._read(request, pb_utils) for request in requests]
        if self.concatenate:
            results = self._compute_concatenated(batches)
        else:
            results = [self._safe_compute(batch) for batch in batches]
        return [self._respond(result, pb_utils) for result in results]

    def _read(self, request: Any, pb_utils: Any) -> dict[str, np.ndarray]:
        return {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names}

    def _safe_compute(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray] | Exception:
        """One request's compute; whatever it raises becomes that request's error, never the batch's."""
        try:
            return self.compute(batch)
        except (PreprocessError, ValueError) as exc:
            return exc
        except MemoryError:
            return PreprocessError(f"{self.model_name}: the request's inputs need more memory than this server has")
        except Exception as exc:  # a defect, not the input's fault: logged, answered as INTERNAL for this request
            LOGGER.exception("%s: compute failed for one request", self.model_name)
            return InternalError(f"{self.model_name}: {type(exc).__name__}: {exc}")

    def _compute_concatenated(self, batches: list[dict[str, np.ndarray]]) -> list[dict[str, np.ndarray] | Exception]:
        rejected = [self.reject(batch) for batch in batches]
        accepted = [batch for batch, error in zip(batches, rejected, strict=True) if error is None]
        results: list[dict[str, np.ndarray] | Exception] = list(rejected)  # type: ignore[arg-type]
        if not accepted:
            return results
        sizes = [len(next(iter(batch.values()))) for batch in accepted]
        merged = {name: np.concatenate([batch[name] for batch in accepted]) for name in self.input_names}
        try:
            outputs = self.compute(merged)
        except Exception:  # find the request at fault: each one alone, so the others are still answered
            LOGGER.warning("%s: a merged batch of %d requests failed; running them one by one", self.model_name,
                           len(accepted))  # fmt: skip
            alone = iter([self._safe_compute(batch) for batch in accepted])
            return [next(alone) if error is None else error for error in rejected]
        bounds = np.cumsum([0, *sizes])
        slots = iter(range(len(accepted)))
        for position, error in enumerate(rejected):
            if error is None:
                i = next(slots)
                results[position] = {name: value[bounds[i] : bounds[i + 1]] for name, value in outputs.items()}
        return results

    def reject(self, batch: dict[str, np.ndarray]) -> Exception | None:
        """Validate one request before it joins the merged batch (override); None means accepted."""
        return None

    def _respond(self, result: dict[str, np.ndarray] | Exception, pb_utils: Any) -> Any:
        if isinstance(result, Exception):
            kind = "INTERNAL" if isinstance(result, InternalError) else "INVALID_ARG"
            code = getattr(pb_utils.TritonError, kind, None)
            error = pb_utils.TritonError(str(result), code) if code is not None else pb_utils.TritonError(str(result))
            return pb_utils.InferenceResponse(output_tensors=[], error=error)
        tensors = [
            pb_utils.Tensor(name, np.ascontiguousarray(result[name], dtype=self.output_dtypes[name]))
            for name in self.output_names
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        """Triton entry point on unload."""
        LOGGER.info("%s unloaded", getattr(self, "model_name", "model"))
