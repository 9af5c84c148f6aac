"""The four baselines, measured on the same workload by the same closed-loop load generator.

* ``inprocess``: :class:`trimodal.runtime.pipeline.LocalPipeline` (same preprocessing, same four ONNX graphs in ONNX
  Runtime, this process) on batches of ``min(concurrency, ensemble max batch)``: the bound a server cannot beat.
* ``naive``: :mod:`trimodal.bench.naive_server` (FastAPI/uvicorn + PyTorch eager, one request at a time),
  over HTTP/JSON.
* ``triton_nobatch``: the real Triton server with a repository rendered from the spec with ``max_batch_size`` 1
  and queue delay 0 for every composing model (and the ensemble): dynamic batching off.
* ``triton``: the real Triton server with the repository as configured.

Servers run on free loopback ports and are always stopped.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from trimodal import contract
from trimodal.bench import BenchError
from trimodal.bench.loadgen import LevelResult, batched_loop, closed_loop
from trimodal.bench.stats import breakdown, snapshot
from trimodal.bench.workload import WorkItem, check_label, check_probabilities, parse_label_entry
from trimodal.layout import RepositoryLayout
from trimodal.spec import PRECISIONS, ModelServing, PipelineSpec

LOGGER = logging.getLogger(__name__)

BASELINES: tuple[str, ...] = ("inprocess", "naive", "triton_nobatch", "triton")
LABELS: dict[str, str] = {
    "inprocess": "in-process ONNX Runtime",
    "naive": "FastAPI + PyTorch eager",
    "triton_nobatch": "Triton, dynamic batching off",
    "triton": "Triton as configured",
}


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
    for name in (*contract.PREPROCESSORS, *contract.ENCODERS):
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


def render_variant(spec: PipelineSpec, source_repo: Path, target_repo: Path) -> Path:
    """Render ``spec`` into ``target_repo`` and link the artifacts (ONNX graphs, tokenizer) of ``source_repo``.

    Args:
        spec: the (variant) spec.
        source_repo: the built model repository.
        target_repo: a new folder.

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
    return target_repo


def instance_counts(spec: PipelineSpec) -> dict[str, int]:
    """CPU instance count of every composing model."""
    return {m: spec.serving.resolved(m).cpu_instances for m in (*contract.PREPROCESSORS, *contract.ENCODERS)}


# ---------------------------------------------------------------------------------------------------------
# In-process ONNX Runtime
# ---------------------------------------------------------------------------------------------------------


def run_inprocess(
    spec: PipelineSpec, repo_dir: Path, items: Sequence[WorkItem], concurrencies: Sequence[int],
    duration_s: float, warmup_s: float, threads: Sequence[int | None] = (None, 1),
) -> list[LevelResult]:  # fmt: skip
    """Sweep the in-process pipeline (batches of ``min(c, ensemble max batch)``) once per ORT thread setting.

    ONNX Runtime's default (one intra-op thread per core) can lose badly on cores shared with other processes
    (spinning thread pools), 1 thread can lose on an idle machine: both are measured (``tool`` names the
    setting) and the report takes the better one as the bound.
    """
    from trimodal.runtime.pipeline import LocalPipeline

    classes = len(spec.classes)
    max_batch = spec.serving.ensemble_max_batch_size
    results = []
    for setting in threads:
        pipeline = LocalPipeline(spec, repo_dir, threads=setting)

        def classify(chunk: Sequence[WorkItem], pipeline: LocalPipeline = pipeline) -> None:
            check_probabilities(pipeline.classify([item.sample for item in chunk]), classes, batch=len(chunk))

        for concurrency in concurrencies:
            result = batched_loop(classify, items, min(concurrency, max_batch), duration_s, warmup_s, "inprocess")
            result.concurrency = concurrency
            result.tool = f"ORT threads {setting or 'default'}"
            _log(result)
            results.append(result)
    return results


def _log(result: LevelResult) -> None:
    LOGGER.info(
        "%-15s c=%-3d %7.1f/s  p50 %7.1f ms  p99 %7.1f ms  errors %d%s",
        result.baseline + ("/1t" if result.tool == "ORT threads 1" else ""), result.concurrency,
        result.throughput, result.p50_ms, result.p99_ms, result.errors,
        f" ({result.first_error})" if result.first_error else "",
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Triton
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


def _triton_inputs(items: Sequence[WorkItem], module: Any) -> dict[int, list[Any]]:
    from trimodal.client import build_inputs

    return {id(item): build_inputs([item.sample], module) for item in items}


def run_triton(
    url: str, baseline: str, spec: PipelineSpec, items: Sequence[WorkItem], concurrencies: Sequence[int],
    duration_s: float, warmup_s: float, instances: dict[str, int], timeout_s: float = 30.0,
) -> list[LevelResult]:  # fmt: skip
    """Sweep a running Triton server over gRPC (asyncio client), with the statistics-API breakdown per level."""
    return asyncio.run(
        _run_triton(url, baseline, spec, items, concurrencies, duration_s, warmup_s, instances, timeout_s)
    )


async def _run_triton(
    url: str, baseline: str, spec: PipelineSpec, items: Sequence[WorkItem], concurrencies: Sequence[int],
    duration_s: float, warmup_s: float, instances: dict[str, int], timeout_s: float,
) -> list[LevelResult]:  # fmt: skip
    import tritonclient.grpc.aio as aioclient

    from trimodal.client import build_outputs

    classes = list(spec.classes)
    inputs = _triton_inputs(items, aioclient)
    outputs = build_outputs(aioclient, 1)
    client = aioclient.InferenceServerClient(url)

    async def call(item: WorkItem) -> None:
        result = await client.infer(contract.ENSEMBLE, inputs[id(item)], outputs=outputs, client_timeout=timeout_s)
        check_probabilities(result.as_numpy(contract.PROBABILITIES), len(classes))
        check_label(parse_label_entry(result.as_numpy(contract.LABEL).ravel()[0])[2], classes)

    results = []
    try:
        # Warm every model instance (first executions of the Python-backend stubs and ORT sessions are slow).
        await closed_loop(call, items, max(concurrencies), max(2.0, warmup_s), 0.0, "warm-up")
        for concurrency in concurrencies:
            loop = asyncio.get_running_loop()
            before = await loop.run_in_executor(None, snapshot, url)
            result = await closed_loop(call, items, concurrency, duration_s, warmup_s, baseline)
            after = await loop.run_in_executor(None, snapshot, url)
            result.breakdown = breakdown(before, after, instances)
            _log(result)
            results.append(result)
    finally:
        await client.close()
    return results


# ---------------------------------------------------------------------------------------------------------
# Naive FastAPI + PyTorch eager
# ---------------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def naive_server(
    build_dir: Path, repo_dir: Path, spec_path: Path | None, log_path: Path, timeout_s: float = 300.0
) -> Iterator[str]:
    """Start :mod:`trimodal.bench.naive_server` on a free loopback port; yields its base URL; always stopped."""
    from trimodal.triton.server import free_port

    port = free_port()
    command = [sys.executable, "-m", "trimodal.bench.naive_server", "--port", str(port),
               "--build-dir", str(build_dir), "--repository", str(repo_dir)]  # fmt: skip
    if spec_path is not None:
        command += ["--spec", str(spec_path)]
    url = f"http://127.0.0.1:{port}"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if process.poll() is not None:
                tail = log_path.read_text(errors="replace").splitlines()[-20:]
                raise BenchError(f"naive server exited with code {process.returncode}:\n" + "\n".join(tail))
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise BenchError(f"naive server not ready after {timeout_s:.0f} s (log {log_path})")
            time.sleep(0.5)
        yield url
    finally:
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def naive_payload(item: WorkItem) -> bytes:
    """The JSON body of one request to the naive server."""
    image, text, audio = item.sample.encoded()
    body = {
        "image": base64.b64encode(image).decode("ascii") if image else None,
        "text": text.decode("utf-8") if text else None,
        "audio": base64.b64encode(audio).decode("ascii") if audio else None,
    }
    return json.dumps(body).encode("utf-8")


def run_naive(
    url: str, spec: PipelineSpec, items: Sequence[WorkItem], concurrencies: Sequence[int], duration_s: float,
    warmup_s: float, timeout_s: float = 60.0,
) -> list[LevelResult]:  # fmt: skip
    """Sweep the naive server over HTTP/JSON (httpx asyncio client, one connection per worker)."""
    return asyncio.run(_run_naive(url, spec, items, concurrencies, duration_s, warmup_s, timeout_s))


async def _run_naive(
    url: str, spec: PipelineSpec, items: Sequence[WorkItem], concurrencies: Sequence[int], duration_s: float,
    warmup_s: float, timeout_s: float,
) -> list[LevelResult]:  # fmt: skip
    import httpx

    logging.getLogger("httpx").setLevel(logging.WARNING)  # one INFO line per request otherwise
    classes = list(spec.classes)
    bodies = {id(item): naive_payload(item) for item in items}
    results = []
    for concurrency in concurrencies:
        limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
        async with httpx.AsyncClient(base_url=url, timeout=timeout_s, limits=limits) as client:

            async def call(item: WorkItem, client: Any = client) -> None:
                response = await client.post(
                    "/classify", content=bodies[id(item)], headers={"content-type": "application/json"}
                )
                response.raise_for_status()
                answer = response.json()
                check_probabilities([answer["probabilities"]], len(classes))
                check_label(answer["label"], classes)

            result = await closed_loop(call, items, concurrency, duration_s, warmup_s, "naive")
        _log(result)
        results.append(result)
    return results
