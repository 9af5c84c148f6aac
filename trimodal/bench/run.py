"""One ``trimodal bench`` run: settings, then one stage per baseline on one workload, then the report.

Stages run in the order of :data:`trimodal.bench.baselines.BASELINES` and save ``results.json`` after each,
so an interrupted run keeps what it measured. The configured Triton server also gets the perf_analyzer
sweeps and, with ``tune``, the serving variants of :data:`TUNING`.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import platform
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trimodal.bench.loadgen import LevelResult
from trimodal.bench.results import BenchMeta, BenchResults, TuningResult
from trimodal.errors import BenchError, TrimodalError
from trimodal.layout import BuildLayout

if TYPE_CHECKING:
    from trimodal.bench.workload import WorkItem
    from trimodal.spec import PipelineSpec

LOGGER = logging.getLogger(__name__)

PERF_DIR = "perf"
PERF_INPUT = "_perf_input.json"

# Serving variants compared with the configured one (rendered into temporary repositories).
TUNING: dict[str, dict[str, Any]] = {
    "queue delay 0": {"max_queue_delay_us": 0},
    "queue delay 10 ms": {"max_queue_delay_us": 10000},
    "text_encoder ORT threads 2": {"models": {"text_encoder": {"ort_threads": 2}}},
    "text_encoder x2 instances": {"models": {"text_encoder": {"cpu_instances": 2}}},
}


@dataclass(frozen=True)
class Preset:
    """Defaults of a sweep (``--quick`` or full); flags override them."""

    concurrency: str
    duration_s: float
    warmup_s: float
    samples: int
    rates: str
    pa_concurrency: str
    pa_window_ms: int


QUICK = Preset("1,4,16,32", 4.0, 1.0, 256, "0.7", "1,16", 2000)
FULL = Preset("1,2,4,8,16,32,64", 10.0, 2.0, 512, "0.3,0.5,0.7,0.9", "1,4,16,32,64", 5000)


@dataclass(frozen=True)
class BenchSettings:
    """Everything one run needs to know (see ``trimodal bench --help``)."""

    out: Path
    build_dir: Path
    repo_dir: Path
    baselines: tuple[str, ...]
    concurrencies: tuple[int, ...]
    duration_s: float
    warmup_s: float
    samples: int
    mix: str
    rates: tuple[float, ...]
    pa_concurrencies: tuple[int, ...]
    pa_window_ms: int
    spec_path: Path | None = None  # None: the default pipeline.yaml
    quick: bool = False
    perf: bool = True
    tune: bool = True


def parse_ints(text: str, what: str) -> tuple[int, ...]:
    """Comma-separated integers >= 1.

    Raises:
        BenchError: naming ``what`` for anything else.
    """
    try:
        values = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise BenchError(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise BenchError(f"{what}: expected integers >= 1, got {text!r}")
    return values


def parse_fractions(text: str, what: str) -> tuple[float, ...]:
    """Comma-separated fractions of saturation in (0, 1.5].

    Raises:
        BenchError: naming ``what`` for anything else.
    """
    try:
        values = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise BenchError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if any(not 0 < v <= 1.5 for v in values):
        raise BenchError(f"{what}: expected fractions of saturation in (0, 1.5], got {text!r}")
    return values


def parse_baselines(text: str) -> tuple[str, ...]:
    """Comma-separated baseline names.

    Raises:
        BenchError: for an unknown name or none at all.
    """
    from trimodal.bench.baselines import BASELINES

    chosen = tuple(b.strip() for b in text.split(",") if b.strip())
    unknown = sorted(set(chosen) - set(BASELINES))
    if unknown or not chosen:
        raise BenchError(f"--baselines: unknown {unknown}; expected some of {list(BASELINES)}")
    return chosen


def machine() -> str:
    """One line about this machine: cores, CPU model, OS and Python."""
    cpu = "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{os.cpu_count()} CPU cores ({cpu}), no GPU used, {platform.system()} {platform.release()}, " \
        f"Python {platform.python_version()}"  # fmt: skip


def summary(levels: Sequence[LevelResult]) -> str:
    """``c=16: 110.2/s p99 221 ms; ...`` of a few levels."""
    return "; ".join(f"c={x.concurrency}: {x.throughput:.1f}/s p99 {x.p99_ms:.0f} ms" for x in levels)


@dataclass
class BenchRun:
    """A run in progress: its settings, spec, workload, scratch folder and the results so far."""

    settings: BenchSettings
    spec: PipelineSpec
    items: list[WorkItem]
    work: Path
    results: BenchResults
    started: float = field(default_factory=time.monotonic)

    def save(self) -> None:
        """Write ``results.json`` as it stands (with the seconds spent so far)."""
        self.results.meta.seconds = round(time.monotonic() - self.started, 1)
        self.results.save(self.settings.out)

    def instances(self, spec: PipelineSpec | None = None) -> dict[str, int]:
        """Instance counts of ``spec`` (default: the run's)."""
        from trimodal.bench.baselines import instance_counts

        return instance_counts(spec or self.spec)

    def sweep(self, url: str, baseline: str, spec: PipelineSpec, concurrencies: Sequence[int]) -> list[LevelResult]:
        """The closed-loop sweep of a running Triton server serving ``spec``."""
        from trimodal.bench.baselines import run_triton

        settings = self.settings
        return run_triton(url, baseline, spec, self.items, concurrencies, settings.duration_s, settings.warmup_s,
                          self.instances(spec))  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Stages
# ---------------------------------------------------------------------------------------------------------


def run_inprocess_stage(run: BenchRun) -> None:
    """In-process ONNX Runtime: the bound a server cannot beat."""
    from trimodal.bench.baselines import run_inprocess

    LOGGER.info("baseline: in-process ONNX Runtime")
    s = run.settings
    run.results.levels += run_inprocess(run.spec, s.repo_dir, run.items, s.concurrencies, s.duration_s, s.warmup_s)
    run.save()


def run_naive_stage(run: BenchRun) -> None:
    """FastAPI + PyTorch eager, its server started for the stage."""
    from trimodal.bench.baselines import naive_server, run_naive

    LOGGER.info("baseline: FastAPI + PyTorch eager (starting the server)")
    s = run.settings
    with naive_server(s.build_dir, s.repo_dir, s.spec_path, run.work / "naive.log") as url:
        run.results.levels += run_naive(url, run.spec, run.items, s.concurrencies, s.duration_s, s.warmup_s)
    run.save()


def run_nobatch_stage(run: BenchRun) -> None:
    """Triton with dynamic batching off, on a variant repository."""
    from trimodal.bench.baselines import no_batching_spec, render_variant, triton_server

    LOGGER.info("baseline: Triton with dynamic batching off (rendering the variant repository)")
    variant = no_batching_spec(run.spec)
    repo = render_variant(variant, run.settings.repo_dir, run.work / "repo_nobatch")
    with triton_server(repo, run.work / "triton_nobatch") as server:
        run.results.levels += run.sweep(server.config.grpc_url, "triton_nobatch", variant, run.settings.concurrencies)
    run.save()


def run_triton_stage(run: BenchRun) -> None:
    """Triton as configured, then its perf_analyzer sweeps and (with ``tune``) the serving variants."""
    from trimodal.bench.baselines import triton_server

    LOGGER.info("baseline: Triton as configured")
    with triton_server(run.settings.repo_dir, run.work / "triton") as server:
        levels = run.sweep(server.config.grpc_url, "triton", run.spec, run.settings.concurrencies)
        run.results.levels += levels
        run.save()
        if run.settings.perf:
            run.results.perf += perf_sweeps(run, server, levels)
            run.save()
    if run.settings.tune:
        tune(run, levels)


STAGES: dict[str, Callable[[BenchRun], None]] = {
    "inprocess": run_inprocess_stage,
    "naive": run_naive_stage,
    "triton_nobatch": run_nobatch_stage,
    "triton": run_triton_stage,
}

# Seconds to start a server (Triton or the FastAPI baseline) and warm it, seen on 2 cores; only for the ETA.
SERVER_START_S = 20.0
TUNING_PROBE_LEVELS = 2  # concurrency levels each tuning variant is measured at (about)


def stage_estimates(settings: BenchSettings) -> dict[str, float]:
    """Planned seconds of each requested stage, from the settings (what the progress line's ETA starts from)."""
    level = settings.warmup_s + settings.duration_s
    sweep = len(settings.concurrencies) * level
    planned = {"inprocess": sweep, "naive": sweep + SERVER_START_S, "triton_nobatch": sweep + SERVER_START_S,
               "triton": sweep + SERVER_START_S}  # fmt: skip
    if settings.perf:  # perf_analyzer: about three measurement windows per level
        levels = len(settings.pa_concurrencies) + len(settings.rates)
        planned["triton"] += levels * 3 * settings.pa_window_ms / 1000
    if settings.tune:
        planned["triton"] += len(TUNING) * (SERVER_START_S + TUNING_PROBE_LEVELS * level)
    return {name: planned[name] for name in STAGES if name in settings.baselines}


def eta_s(planned: dict[str, float], done: Sequence[str], elapsed_s: float) -> float:
    """Seconds left: the planned seconds of the stages not done, scaled by how far off the plan the done ones ran."""
    planned_done = sum(planned[name] for name in done)
    left = sum(seconds for name, seconds in planned.items() if name not in done)
    pace = elapsed_s / planned_done if planned_done > 0 and elapsed_s > 0 else 1.0
    return left * pace


def log_progress(planned: dict[str, float], done: Sequence[str], elapsed_s: float) -> str:
    """Log (and return) the progress line: stages done, elapsed, ETA."""
    line = (f"bench: {len(done)}/{len(planned)} stages done ({', '.join(done) or 'none yet'}), {elapsed_s:.0f} s "
            f"elapsed, about {eta_s(planned, done, elapsed_s):.0f} s left")  # fmt: skip
    LOGGER.info("%s", line)
    return line


# ---------------------------------------------------------------------------------------------------------
# perf_analyzer and the serving variants
# ---------------------------------------------------------------------------------------------------------


def _perf_tool(run: BenchRun) -> tuple[Path, dict[str, str]] | None:
    """perf_analyzer and its environment, or None (the reason recorded in the meta) when it cannot run."""
    from trimodal.bench.perf import find_perf_analyzer, perf_env

    try:
        return find_perf_analyzer(), perf_env(BuildLayout(run.settings.build_dir).tools_lib)
    except BenchError as exc:
        LOGGER.warning("skipping perf_analyzer: %s", exc)
        run.results.meta.perf_analyzer = f"skipped: {exc}"
        return None


def perf_sweeps(run: BenchRun, server: Any, levels: Sequence[LevelResult]) -> list[LevelResult]:
    """perf_analyzer's concurrency sweep, then Poisson rates at fractions of the saturation measured so far.

    Args:
        run: the run (its meta gets the saturation used for the rates).
        server: the running Triton server (as configured).
        levels: the closed-loop levels of that server.

    Returns:
        The perf_analyzer levels.
    """
    from trimodal.bench.perf import PerfRunner, write_input_data
    from trimodal.bench.report import saturation

    tool = _perf_tool(run)
    if tool is None:
        return []
    s, meta = run.settings, run.results.meta
    input_json = write_input_data(run.items, s.out / PERF_INPUT)
    binary, env = tool
    runner = PerfRunner(
        url=server.config.grpc_url, input_json=input_json, out_dir=s.out / PERF_DIR, measurement_ms=s.pa_window_ms,
        instances=run.instances(), env=env, binary=binary,
    )  # fmt: skip
    try:
        found = [runner.level("concurrency", concurrency) for concurrency in s.pa_concurrencies]
        best = saturation([*found, *levels])
        if best is None:
            return found
        meta.saturation_rps = best.throughput
        meta.saturation_source = f"{best.tool} c={best.concurrency}"
        return found + [runner.level("rate", max(1.0, round(f * best.throughput, 1))) for f in s.rates]
    finally:
        input_json.unlink(missing_ok=True)


def _tune_variant(run: BenchRun, name: str, update: dict[str, Any], probe: Sequence[int]) -> TuningResult:
    """One variant of :data:`TUNING` on its own server, at the ``probe`` concurrencies."""
    from trimodal.bench.baselines import render_variant, serving_variant, triton_server

    settings = json.dumps(update)
    try:
        variant = serving_variant(run.spec, **copy.deepcopy(update))
        repo = render_variant(variant, run.settings.repo_dir, run.work / "repo_variant")
        with triton_server(repo, run.work / "triton_variant") as server:
            tuned = run.sweep(server.config.grpc_url, f"variant: {name}", variant, probe)
    except TrimodalError as exc:
        return TuningResult(name, settings, f"failed: {exc}"[:300])
    return TuningResult(name, settings, summary(tuned), tuned)


def tune(run: BenchRun, levels: Sequence[LevelResult]) -> None:
    """Compare the serving variants of :data:`TUNING` with the configured server at c=16 and at saturation."""
    from trimodal.bench.report import saturation

    sat = saturation(levels)
    probe = sorted({16, sat.concurrency if sat else max(run.settings.concurrencies)})
    configured = [x for x in levels if x.concurrency in probe]
    run.results.tuning.append(TuningResult("as configured", "pipeline.yaml serving", summary(configured)))
    for name, update in TUNING.items():
        LOGGER.info("tuning variant: %s", name)
        run.results.tuning.append(_tune_variant(run, name, update, probe))
        run.save()


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------


def _meta(settings: BenchSettings, spec: PipelineSpec, items: Sequence[WorkItem]) -> BenchMeta:
    from trimodal.bench.baselines import instance_counts
    from trimodal.bench.workload import format_mix, parse_mix

    return BenchMeta(
        timestamp=settings.out.name, machine=machine(), quick=settings.quick, duration_s=settings.duration_s,
        warmup_s=settings.warmup_s, concurrencies=list(settings.concurrencies), mix=format_mix(parse_mix(settings.mix)),
        workload_size=len(items), serving=spec.serving.model_dump(), instances=instance_counts(spec),
        load_before=os.getloadavg()[0],
    )  # fmt: skip


def _prepare(settings: BenchSettings) -> tuple[PipelineSpec, list[WorkItem]]:
    """The spec and the workload, after checking that the repository is built."""
    from trimodal.bench.workload import load_workload, parse_mix
    from trimodal.spec import load_spec
    from trimodal.triton.install import missing_artifacts

    spec = load_spec(settings.spec_path)
    missing = missing_artifacts(settings.repo_dir)
    if missing:
        raise BenchError(f"model repository not built ({missing[0]} missing): run `trimodal build` first")
    return spec, load_workload(settings.build_dir, parse_mix(settings.mix), settings.samples)


def run_bench(settings: BenchSettings) -> Path:
    """Run every requested baseline in one run on one workload; write results.json, levels.csv, report, plots.

    Args:
        settings: what to run.

    Returns:
        The report path.

    Raises:
        BenchError: if the repository or the dataset is not built, or a setting is invalid.
    """
    from trimodal.bench.baselines import BASELINES
    from trimodal.bench.report import write_report

    spec, items = _prepare(settings)
    settings.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trimodal-bench-") as tmp:
        run = BenchRun(settings, spec, items, Path(tmp), BenchResults(meta=_meta(settings, spec, items)))
        planned = stage_estimates(settings)
        done: list[str] = []
        log_progress(planned, done, 0.0)
        for name in BASELINES:
            if name in settings.baselines:
                LOGGER.info("bench: stage %d/%d: %s", len(done) + 1, len(planned), name)
                STAGES[name](run)
                done.append(name)
                log_progress(planned, done, time.monotonic() - run.started)
    run.results.meta.load_after = os.getloadavg()[0]
    run.save()
    report = write_report(settings.out, BenchResults.load(settings.out))
    LOGGER.info("report: %s (%.0f s)", report, time.monotonic() - run.started)
    return report
