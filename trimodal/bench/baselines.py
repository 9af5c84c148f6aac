"""The baselines, measured on the same workload by the same load generators (:mod:`trimodal.bench.loadgen`).

* ``inprocess``: :class:`trimodal.runtime.pipeline.LocalPipeline` (same preprocessing, same ONNX graphs in ONNX
  Runtime, no server) using the whole machine in three ways (:mod:`trimodal.bench.inprocess`); the best is
  the bound.
* ``naive``: :mod:`trimodal.bench.naive_server` (FastAPI with a sync endpoint, uvicorn, PyTorch eager with
  torch's default threads) over HTTP/JSON; ``naive_workers``: the same with ``uvicorn --workers <cores>``.
* ``triton_nobatch``: the real Triton server with a repository rendered from the spec with ``max_batch_size`` 1
  and queue delay 0 for every composing model (and the ensemble): dynamic batching off.
* ``triton_fp32pad``: the real Triton server with every graph fp32 and the text encoder's ``trim_padding`` off
  (text padded to the spec's max tokens): the uncompressed configuration of the compression issue.
* ``triton``: the real Triton server with the repository as configured.

Each server is a :class:`Driver` (one level at a time, closed or open loop); servers run on free loopback ports
and are always stopped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from trimodal import contract
from trimodal.bench import BenchError
from trimodal.bench.loadgen import LevelResult, closed_loop, open_loop
from trimodal.bench.stats import breakdown, snapshot
from trimodal.bench.workload import WorkItem, check_label, check_probabilities, parse_label_entry
from trimodal.layout import RepositoryLayout
from trimodal.spec import PRECISIONS, ModelServing, PipelineSpec
from trimodal.triton.processes import stop_group

LOGGER = logging.getLogger(__name__)

BASELINES: tuple[str, ...] = ("inprocess", "naive", "naive_workers", "triton_nobatch", "triton_fp32pad", "triton")
LABELS: dict[str, str] = {
    "inprocess": "in-process ONNX Runtime",
    "naive": "FastAPI (sync) + PyTorch eager",
    "naive_workers": "FastAPI (sync) + PyTorch eager, uvicorn --workers <cores>",
    "triton_nobatch": "Triton, dynamic batching off",
    "triton_fp32pad": "Triton, fp32 + text padded (uncompressed)",
    "triton": "Triton as configured",
}
TRITON_BASELINES: tuple[str, ...] = ("triton_nobatch", "triton_fp32pad", "triton")
TRIM_PARAMETER = "trim_padding"


# ---------------------------------------------------------------------------------------------------------
# Repository variants
# ---------------------------------------------------------------------------------------------------------


def serving_variant(spec: PipelineSpec, **defaults: Any) -> PipelineSpec:
    """A copy of ``spec`` whose serving defaults are updated and per-model overrides of those keys dropped.

    Args:
        spec: the pipeline spec.
        **defaults: ``serving.defaults`` fields to set (e.g. ``max_batch_size=1``), plus optionally
            ``ensemble_max_batch_size`` and ``models`` (a dict of per-model overrides to merge).

    Returns:
        The variant spec (validated by constructing the resolved settings of every model).
    """
    serving = spec.serving
    ensemble_max = defaults.pop("ensemble_max_batch_size", None)
    extra_models: dict[str, dict[str, Any]] = defaults.pop("models", {}) or {}
    new_defaults = serving.defaults.model_copy(update=defaults)
    models = {}
    for name in set(serving.models) | set(extra_models):
        current = serving.models.get(name)
        data = current.model_dump(exclude_none=True) if current is not None else {}
        for key in defaults:
            data.pop(key, None)
        data.update(extra_models.get(name, {}))
        models[name] = ModelServing.model_validate(data)
    update: dict[str, Any] = {"defaults": new_defaults, "models": models}
    if ensemble_max is not None:
        update["ensemble_max_batch_size"] = ensemble_max
    variant = spec.model_copy(update={"serving": serving.model_copy(update=update)})
    for name in contract.MODEL_NAMES:
        try:
            resolved = variant.serving.resolved(name)
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            raise BenchError(f"variant: invalid serving settings for {name}: {exc}") from None
        if variant.serving.ensemble_max_batch_size > resolved.max_batch_size:
            raise BenchError(
                f"variant: ensemble_max_batch_size {variant.serving.ensemble_max_batch_size} > max_batch_size "
                f"{resolved.max_batch_size} of {name}"
            )
    return variant


def no_batching_spec(spec: PipelineSpec) -> PipelineSpec:
    """The "dynamic batching off" variant: max batch 1, no preferred sizes, queue delay 0, ensemble max 1."""
    return serving_variant(
        spec, max_batch_size=1, preferred_batch_sizes=[], max_queue_delay_us=0, ensemble_max_batch_size=1
    )


def fp32_padded_spec(spec: PipelineSpec) -> PipelineSpec:
    """The uncompressed variant's spec: every ONNX graph at fp32 on both targets (render it with ``trim=False``)."""
    precision = spec.precision.model_copy(
        update={"cpu": spec.precision.cpu.model_copy(update={"default": "fp32", "models": {}}),
                "gpu": spec.precision.gpu.model_copy(update={"default": "fp32", "models": {}})}
    )  # fmt: skip
    return spec.model_copy(update={"precision": precision})


def set_trim_padding(repo: Path, enabled: bool) -> list[str]:
    """Set the ``trim_padding`` parameter of every CPU config that has one (the text encoder).

    The config is read and written as a protobuf object (:func:`trimodal.triton.validate.load_config`).

    Args:
        repo: a rendered model repository.
        enabled: the value to set.

    Returns:
        The models changed.
    """
    from google.protobuf import text_format

    from trimodal.triton.validate import load_config

    changed = []
    for model in contract.ENCODERS:
        path = repo / model / "configs" / "cpu.pbtxt"
        if not path.is_file():
            continue
        config = load_config(path)
        if TRIM_PARAMETER in config.parameters:
            config.parameters[TRIM_PARAMETER].string_value = "true" if enabled else "false"
            path.write_text(text_format.MessageToString(config), encoding="utf-8")
            changed.append(model)
    return changed


def render_variant(spec: PipelineSpec, source_repo: Path, target_repo: Path, trim: bool = True) -> Path:
    """Render ``spec`` into ``target_repo`` and link the artifacts (ONNX graphs, tokenizer) of ``source_repo``.

    Args:
        spec: the (variant) spec.
        source_repo: the built model repository.
        target_repo: a new folder.
        trim: the text encoder's ``trim_padding`` (False: every text padded to the spec's max tokens).

    Returns:
        ``target_repo``.

    Raises:
        BenchError: if an artifact is missing.
    """
    from trimodal.triton.install import missing_artifacts
    from trimodal.triton.repository import render

    missing = missing_artifacts(source_repo)
    if missing:
        raise BenchError(f"model repository not built ({missing[0]} missing): run `trimodal build`")
    if target_repo.exists():
        shutil.rmtree(target_repo)
    render(spec, target_repo)
    source, target = RepositoryLayout(source_repo), RepositoryLayout(target_repo)
    pairs = [(target.onnx_file(m, p), source.onnx_file(m, p)) for m in contract.ENCODERS for p in PRECISIONS]
    for link, original in [*pairs, (target.tokenizer, source.tokenizer)]:
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(original.resolve())
    if not trim:
        set_trim_padding(target_repo, enabled=False)
    return target_repo


def instance_counts(spec: PipelineSpec) -> dict[str, int]:
    """CPU instance count of every composing model (:data:`trimodal.contract.MODEL_NAMES`, postprocess included)."""
    return {m: spec.serving.resolved(m).cpu_instances for m in contract.MODEL_NAMES}


# ---------------------------------------------------------------------------------------------------------
# Drivers: one level at a time against a running server
# ---------------------------------------------------------------------------------------------------------


class Driver:
    """Measures one baseline one level at a time (closed loop at a concurrency, open loop at a Poisson rate).

    Subclasses implement :meth:`_call` (an async client call that validates the answer and returns whether its
    label is the item's class) inside :meth:`_session`; Triton drivers add the statistics-API breakdown.

    Args:
        baseline: the baseline's name (:data:`BASELINES`).
        spec: the pipeline spec (classes).
        items: the workload.
    """

    def __init__(self, baseline: str, spec: PipelineSpec, items: Sequence[WorkItem]) -> None:
        self.baseline = baseline
        self.classes = list(spec.classes)
        self.items = list(items)

    def _session(self, concurrency: int) -> contextlib.AbstractAsyncContextManager[Any]:
        """An async context yielding ``call(item, label=False)`` (subclasses implement it)."""
        raise NotImplementedError

    def _stats(self) -> Any:
        return None

    def _breakdown(self, before: Any, after: Any) -> dict[str, dict[str, float]]:
        return {}

    def closed(self, concurrency: int, duration_s: float, warmup_s: float) -> LevelResult:
        """One closed-loop level."""
        return asyncio.run(self._level(concurrency, None, duration_s, warmup_s, 0))

    def open(self, rate_rps: float, duration_s: float, warmup_s: float, seed: int = 0) -> LevelResult:
        """One open-loop (Poisson) level, latency from each request's scheduled send."""
        return asyncio.run(self._level(64, rate_rps, duration_s, warmup_s, seed))

    def warm(self, concurrency: int, seconds: float) -> None:
        """Send load for ``seconds`` without recording it (first executions of every instance are slow)."""
        asyncio.run(self._level(concurrency, None, seconds, 0.0, 0))

    async def _level(
        self, concurrency: int, rate: float | None, duration_s: float, warmup_s: float, seed: int
    ) -> LevelResult:
        async with self._session(concurrency) as call:
            loop = asyncio.get_running_loop()
            before = await loop.run_in_executor(None, self._stats)
            if rate is None:
                result = await closed_loop(call, self.items, concurrency, duration_s, warmup_s, self.baseline)
            else:
                result = await open_loop(call, self.items, rate, duration_s, warmup_s, self.baseline, seed)
            after = await loop.run_in_executor(None, self._stats)
        result.breakdown = self._breakdown(before, after)
        return result

    def labels(self, count: int, concurrency: int = 8) -> list[str | None]:
        """The label answered for each of the first ``count`` items, in order (None where the request failed)."""
        return asyncio.run(self._labels(min(count, len(self.items)), concurrency))

    async def _labels(self, count: int, concurrency: int) -> list[str | None]:
        answers: list[str | None] = [None] * count
        async with self._session(concurrency) as call:

            async def worker(offset: int) -> None:
                for index in range(offset, count, concurrency):
                    with contextlib.suppress(Exception):
                        answers[index] = await call(self.items[index], label=True)

            await asyncio.gather(*(worker(w) for w in range(concurrency)))
        return answers


def log_level(result: LevelResult) -> None:
    """One INFO line per level."""
    where = f"{result.rate:g}/s" if result.mode == "rate" else f"c={result.concurrency}"
    LOGGER.info(
        "%-15s %-26s %-9s r%s %7.1f/s  p50 %7.1f ms  p99 %7.1f ms  errors %d  outside %s cores%s",
        result.baseline, result.tool, where, result.repetition or "-", result.throughput, result.p50_ms,
        result.p99_ms, result.errors, result.outside_cores, f" ({result.first_error})" if result.first_error else "",
    )  # fmt: skip


class TritonDriver(Driver):
    """A running Triton server over gRPC (asyncio client), with the statistics-API breakdown per level."""

    def __init__(
        self, baseline: str, url: str, spec: PipelineSpec, items: Sequence[WorkItem], instances: dict[str, int],
        timeout_s: float = 30.0,
    ) -> None:  # fmt: skip
        import tritonclient.grpc.aio as aioclient

        from trimodal.client import build_inputs

        super().__init__(baseline, spec, items)
        self.url, self.instances, self.timeout_s = url, instances, timeout_s
        self.inputs = {id(item): build_inputs([item.sample], aioclient) for item in self.items}

    def _stats(self) -> Any:
        return snapshot(self.url)

    def _breakdown(self, before: Any, after: Any) -> dict[str, dict[str, float]]:
        return breakdown(before, after, self.instances)

    @contextlib.asynccontextmanager
    async def _session(self, concurrency: int) -> Any:
        import tritonclient.grpc.aio as aioclient

        from trimodal.client import build_outputs

        outputs = build_outputs(aioclient, 1)
        client = aioclient.InferenceServerClient(self.url)

        async def call(item: WorkItem, label: bool = False) -> bool | str:
            result = await client.infer(
                contract.ENSEMBLE, self.inputs[id(item)], outputs=outputs, client_timeout=self.timeout_s
            )
            check_probabilities(result.as_numpy(contract.PROBABILITIES), len(self.classes))
            answer = check_label(parse_label_entry(result.as_numpy(contract.LABEL).ravel()[0])[2], self.classes)
            return answer if label else answer == self.classes[item.label]

        try:
            yield call
        finally:
            await client.close()


class NaiveDriver(Driver):
    """The naive FastAPI server over HTTP/JSON (httpx asyncio client, one connection per request in flight)."""

    def __init__(self, baseline: str, url: str, spec: PipelineSpec, items: Sequence[WorkItem], timeout_s: float = 60.0):
        super().__init__(baseline, spec, items)
        self.url, self.timeout_s = url, timeout_s
        self.bodies = {id(item): naive_payload(item) for item in self.items}

    @contextlib.asynccontextmanager
    async def _session(self, concurrency: int) -> Any:
        import httpx

        logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=self.url, timeout=self.timeout_s, limits=limits) as client:

            async def call(item: WorkItem, label: bool = False) -> bool | str:
                response = await client.post(
                    "/classify", content=self.bodies[id(item)], headers={"content-type": "application/json"}
                )
                response.raise_for_status()
                answer = response.json()
                check_probabilities([answer["probabilities"]], len(self.classes))
                name = check_label(answer["label"], self.classes)
                return name if label else name == self.classes[item.label]

            yield call


# ---------------------------------------------------------------------------------------------------------
# Servers
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def triton_server(repo_dir: Path, work_dir: Path, timeout_s: float = 300.0) -> Iterator[Any]:
    """A real tritonserver serving ``repo_dir`` (CPU target) on free loopback ports; always stopped."""
    from trimodal.triton.server import ServerConfig, TritonServer, free_port

    config = ServerConfig(
        model_repository=repo_dir, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
        work_dir=work_dir, exit_timeout_s=15,
    )  # fmt: skip
    server = TritonServer(config)
    try:
        server.start(timeout_s=timeout_s)
        yield server
    finally:
        server.stop()


def _wait_healthy(process: subprocess.Popen[bytes], url: str, log_path: Path, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        if process.poll() is not None:
            tail = log_path.read_text(errors="replace").splitlines()[-20:]
            raise BenchError(f"naive server exited with code {process.returncode}:\n" + "\n".join(tail))
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise BenchError(f"naive server not ready after {timeout_s:.0f} s (log {log_path})")
        time.sleep(0.5)


@contextlib.contextmanager
def naive_server(
    build_dir: Path, repo_dir: Path, spec_path: Path | None, log_path: Path, workers: int = 1,
    timeout_s: float = 300.0,
) -> Iterator[str]:  # fmt: skip
    """Start :mod:`trimodal.bench.naive_server` (``workers`` uvicorn workers) on a free loopback port.

    Yields its base URL; the server (its whole process group) is always stopped.
    """
    from trimodal.triton.server import free_port

    port = free_port()
    command = [sys.executable, "-m", "trimodal.bench.naive_server", "--port", str(port), "--workers", str(workers),
               "--build-dir", str(build_dir), "--repository", str(repo_dir)]  # fmt: skip
    if spec_path is not None:
        command += ["--spec", str(spec_path)]
    url = f"http://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        _wait_healthy(process, url, log_path, timeout_s)
        yield url
    finally:
        stop_group(process)


def naive_payload(item: WorkItem) -> bytes:
    """The JSON body of one request to the naive server."""
    image, text, audio = item.sample.encoded()
    body = {
        "image": base64.b64encode(image).decode("ascii") if image else None,
        "text": text.decode("utf-8") if text else None,
        "audio": base64.b64encode(audio).decode("ascii") if audio else None,
    }
    return json.dumps(body).encode("utf-8")
