"""The in-process bound: :class:`~trimodal.runtime.pipeline.LocalPipeline` using the whole machine.

No server, no serialization: preprocessing and the same ONNX graphs in ONNX Runtime, on batches of samples.
One setting cannot use every machine well (ORT's intra-op threads help one batch, parallel workers help many),
so three are measured and the report takes the best as the bound:

* ``threads <cores> x 1 worker``: one worker thread, ORT intra-op threads = cores, batches of ``min(c, max)``;
* ``threads 1 x <cores> workers``: ``cores`` worker threads sharing one pipeline (ORT releases the GIL),
  each with 1 intra-op thread, the ``c`` samples in flight split over them;
* ``<cores> processes x threads 1``: ``cores`` worker processes (spawned once), each with its own pipeline.

A level at concurrency ``c`` keeps ``c`` samples in flight: ``min(c, workers)`` workers, each running batches
of ``c // workers`` (at most the ensemble's max batch) back to back; each sample's latency is its batch's.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trimodal.bench.loadgen import BatchRun, LevelResult, merge_batches, run_batches
from trimodal.bench.workload import WorkItem, check_probabilities
from trimodal.spec import PipelineSpec

LOGGER = logging.getLogger(__name__)

BASELINE = "inprocess"


@dataclass(frozen=True)
class Setting:
    """How the in-process pipeline uses the machine: workers, ORT threads each, processes or threads."""

    workers: int
    threads: int
    processes: bool = False

    @property
    def name(self) -> str:
        """The ``tool`` name of its levels."""
        if self.processes:
            return f"{self.workers} processes x ORT threads {self.threads}"
        return f"ORT threads {self.threads} x {self.workers} worker{'s' if self.workers > 1 else ''}"


def settings_for(cores: int) -> list[Setting]:
    """The settings measured on a machine with ``cores`` cores (duplicates dropped on one core)."""
    chosen = [Setting(1, cores), Setting(cores, 1), Setting(cores, 1, processes=True)]
    return list(dict.fromkeys(chosen))


def split(concurrency: int, workers: int, max_batch: int) -> tuple[int, int]:
    """``(workers used, batch per worker)`` that keep ``concurrency`` samples in flight."""
    used = max(1, min(workers, concurrency))
    return used, max(1, min(max_batch, concurrency // used))


_WORKER: dict[str, Any] = {}  # the pipeline and workload of a worker process


def _classifier(pipeline: Any, classes: int) -> Any:
    def classify(chunk: Sequence[WorkItem]) -> None:
        check_probabilities(pipeline.classify([item.sample for item in chunk]), classes, batch=len(chunk))

    return classify


def _init_process(spec: PipelineSpec, repo_dir: Path, threads: int, items: list[WorkItem]) -> None:
    from trimodal.runtime.pipeline import LocalPipeline

    pipeline = LocalPipeline(spec, repo_dir, threads=threads)
    _WORKER["classify"] = _classifier(pipeline, len(spec.classes))
    _WORKER["items"] = items
    _WORKER["classify"](items[:2])  # create the sessions now, not inside a measured window


def _process_level(batch: int, duration_s: float, warmup_s: float, offset: int) -> BatchRun:
    return run_batches(_WORKER["classify"], _WORKER["items"], batch, duration_s, warmup_s, offset)


class InProcessRunner:
    """One :class:`Setting` of the in-process pipeline, ready to measure levels; :meth:`close` it.

    Args:
        spec: the pipeline spec.
        repo_dir: the model repository (graphs, tokenizer).
        items: the workload.
        setting: how to use the machine.
    """

    def __init__(self, spec: PipelineSpec, repo_dir: Path, items: Sequence[WorkItem], setting: Setting) -> None:
        self.setting = setting
        self.items = list(items)
        self.max_batch = spec.serving.ensemble_max_batch_size
        self.pool: Any = None
        self.classify: Any = None
        if setting.processes:
            context = multiprocessing.get_context("spawn")
            self.pool = context.Pool(setting.workers, _init_process, (spec, repo_dir, setting.threads, self.items))
        else:
            from trimodal.runtime.pipeline import LocalPipeline

            pipeline = LocalPipeline(spec, repo_dir, threads=setting.threads)
            self.classify = _classifier(pipeline, len(spec.classes))
            self.classify(self.items[:2])  # sessions created before any worker thread uses them

    def closed(self, concurrency: int, duration_s: float, warmup_s: float) -> LevelResult:
        """One level: ``concurrency`` samples in flight for ``warmup_s + duration_s``."""
        used, batch = split(concurrency, self.setting.workers, self.max_batch)
        offsets = [k * batch for k in range(used)]
        if self.pool is not None:
            args = [(batch, duration_s, warmup_s, offset) for offset in offsets]
            runs = self.pool.starmap(_process_level, args, chunksize=1)
        else:
            with ThreadPoolExecutor(used) as executor:
                futures = [executor.submit(run_batches, self.classify, self.items, batch, duration_s, warmup_s, o)
                           for o in offsets]  # fmt: skip
                runs = [future.result() for future in futures]
        result = merge_batches(runs, BASELINE, concurrency, duration_s)
        result.tool = self.setting.name
        return result

    def close(self) -> None:
        """Stop the worker processes (if any)."""
        if self.pool is not None:
            self.pool.terminate()
            self.pool.join()
            self.pool = None
