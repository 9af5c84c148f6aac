"""One ``trimodal bench`` run: every server up at once, levels repeated and interleaved, then the report.

Method (what a skeptic needs, see benchmarks/README.md):

* **All servers up at once** (Triton as configured, the fp32 + padded-text variant, Triton without batching,
  the naive FastAPI server with one and with ``<cores>`` uvicorn workers; idle servers cost nothing) and the
  in-process runners ready (:mod:`trimodal.bench.inprocess`).
* **Repetition and interleaving**: for repetition ``r`` in 1..R, for each level, for each baseline (the
  baselines' order rotated by one per repetition): one measurement (:func:`schedule`). The report shows the
  median with [min-max] over the repetitions.
* **Open loop for capacity and latency targets**: after a closed-loop saturation probe of Triton as configured,
  Poisson levels at fractions of it, timed from each request's scheduled send
  (:func:`trimodal.bench.loadgen.open_loop`), with the achieved rate and the client's lag recorded.
* **Machine load per level**: the 1-minute load average before it and the cores used by processes outside the
  run during it (:mod:`trimodal.bench.cpuload`).

``results.json`` is saved after every level, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from trimodal.bench import cpuload
from trimodal.bench.loadgen import LevelResult, settle_heap
from trimodal.bench.results import BenchMeta, BenchResults
from trimodal.errors import BenchError
from trimodal.layout import BuildLayout
from trimodal.machine import cpu_model

if TYPE_CHECKING:
    from trimodal.bench.workload import WorkItem
    from trimodal.spec import PipelineSpec

LOGGER = logging.getLogger(__name__)

PERF_DIR = "perf"
PERF_INPUT = "_perf_input.json"
OPEN_LOOP_BASELINES: tuple[str, ...] = ("triton",)  # capacity and latency targets: the shipped configuration
PROBE_CONCURRENCY = 32  # closed-loop saturation probe that the Poisson rates are fractions of
ACCURACY_SAMPLES = 256  # requests sent once to each Triton variant to compare their answers


@dataclass(frozen=True)
class Preset:
    """Defaults of a run (``--quick`` or full); flags override them."""

    concurrency: str
    duration_s: float
    warmup_s: float
    samples: int
    rates: str  # fractions of the closed-loop saturation probe (open loop, Triton as configured)
    rate_duration_s: float
    repetitions: int
    pa_concurrency: str
    pa_window_ms: int


# Full: about 14 minutes on 2 cores (13.2-14.0 in the committed runs; 5 server starts, 3 repetitions of 5 closed-loop
# levels x 8 runners and 6 Poisson levels); quick: about 2 minutes.
FULL = Preset("1,2,4,16,32", 4.0, 1.0, 512, "0.3,0.5,0.6,0.7,0.8,0.9", 6.0, 3, "1,16", 3000)
QUICK = Preset("1,16", 1.5, 0.5, 128, "0.3,0.7", 2.5, 2, "1", 1000)


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
    repetitions: int = 3
    rate_duration_s: float = 6.0


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
    return f"{os.cpu_count()} CPU cores ({cpu_model()}), no GPU used, {platform.system()} {platform.release()}, " \
        f"Python {platform.python_version()}"  # fmt: skip


# Seconds seen on 2 cores, only for the ETA: start and warm one server; per-level overhead (clients, snapshots).
SERVER_START_S = 9.0
LEVEL_OVERHEAD_S = 0.4
STAGES: tuple[str, ...] = ("servers", "schedule", "perf")


def stage_estimates(settings: BenchSettings) -> dict[str, float]:
    """Planned seconds of each stage of a run (servers, the interleaved schedule, perf_analyzer), for the ETA."""
    from trimodal.bench.inprocess import settings_for

    servers = [b for b in settings.baselines if b != "inprocess"]
    runners = len(servers) + (len(settings_for(cores())) if "inprocess" in settings.baselines else 0)
    level = settings.warmup_s + settings.duration_s + LEVEL_OVERHEAD_S
    rate_level = settings.warmup_s + settings.rate_duration_s + 2 * LEVEL_OVERHEAD_S  # + draining the backlog
    rates = len(settings.rates) if "triton" in settings.baselines else 0
    per_repetition = len(settings.concurrencies) * runners * level + rates * rate_level
    perf = 3 * len(settings.pa_concurrencies) * settings.pa_window_ms / 1000 if settings.perf and rates else 0.0
    return {"servers": SERVER_START_S * len(servers) + 10.0, "schedule": settings.repetitions * per_repetition,
            "perf": perf}  # fmt: skip


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


def cores() -> int:
    """CPU cores of this machine (at least 1)."""
    return os.cpu_count() or 1


def git_commit() -> str:
    """``<commit>[+dirty]`` of the checkout, or ``?`` outside git."""
    from trimodal.layout import project_root

    root = project_root()
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True, text=True,
                                check=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, check=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "?"
    return commit + ("+dirty" if dirty else "")


# ---------------------------------------------------------------------------------------------------------
# The schedule: repetitions x levels x runners, interleaved
# ---------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One measurement: a runner (baseline, and setting for the in-process ones) at one level."""

    repetition: int
    mode: str  # "concurrency" or "rate"
    level: float  # concurrency, or fraction of the saturation probe for "rate"
    runner: str


def schedule(
    runners: Sequence[str], open_runners: Sequence[str], concurrencies: Sequence[int], rates: Sequence[float],
    repetitions: int,
) -> list[Step]:  # fmt: skip
    """The order of every measurement: for each repetition, for each level, for each runner.

    The runners' order is rotated by one per repetition, so no runner always follows the same neighbour (or
    always goes first after a pause). Closed-loop levels come first in a repetition, then the Poisson levels.

    Args:
        runners: every runner (closed loop).
        open_runners: the runners that also get the Poisson levels.
        concurrencies: closed-loop levels.
        rates: Poisson levels (fractions of the saturation probe).
        repetitions: how many times each level is measured.

    Returns:
        The steps in order.
    """
    steps = []
    for repetition in range(1, repetitions + 1):
        shift = (repetition - 1) % max(1, len(runners))
        order = [*runners[shift:], *runners[:shift]]
        for concurrency in concurrencies:
            steps += [Step(repetition, "concurrency", concurrency, name) for name in order]
        for fraction in rates:
            steps += [Step(repetition, "rate", fraction, name) for name in order if name in open_runners]
    return steps


# ---------------------------------------------------------------------------------------------------------
# The runners
# ---------------------------------------------------------------------------------------------------------


class Runner(Protocol):
    """Anything that measures one closed-loop level (drivers of servers, in-process runners)."""

    def closed(self, concurrency: int, duration_s: float, warmup_s: float) -> LevelResult:
        """One closed-loop level."""
        ...


@dataclass
class BenchRun:
    """A run in progress: settings, spec, workload, scratch folder, runners and the results so far."""

    settings: BenchSettings
    spec: PipelineSpec
    items: list[WorkItem]
    work: Path
    results: BenchResults
    runners: dict[str, Any] = field(default_factory=dict)
    urls: dict[str, str] = field(default_factory=dict)
    started: float = field(default_factory=time.monotonic)

    def save(self) -> None:
        """Write ``results.json`` as it stands (with the seconds spent so far)."""
        self.results.meta.seconds = round(time.monotonic() - self.started, 1)
        self.results.save(self.settings.out)


def _start_triton(run: BenchRun, stack: contextlib.ExitStack, baseline: str) -> None:
    from trimodal.bench.baselines import (
        TritonDriver,
        fp32_padded_spec,
        instance_counts,
        no_batching_spec,
        render_variant,
        triton_server,
    )  # fmt: skip

    spec, repo = run.spec, run.settings.repo_dir
    if baseline == "triton_nobatch":
        spec = no_batching_spec(run.spec)
        repo = render_variant(spec, repo, run.work / "repo_nobatch")
    elif baseline == "triton_fp32pad":
        spec = fp32_padded_spec(run.spec)
        repo = render_variant(spec, repo, run.work / "repo_fp32pad", trim=False)
    LOGGER.info("starting %s", baseline)
    server = stack.enter_context(triton_server(repo, run.work / baseline))
    run.urls[baseline] = server.config.grpc_url
    driver = TritonDriver(baseline, server.config.grpc_url, spec, run.items, instance_counts(spec))
    driver.warm(PROBE_CONCURRENCY, max(2.0, run.settings.warmup_s))
    run.runners[baseline] = driver


def _start_naive(run: BenchRun, stack: contextlib.ExitStack, baseline: str) -> None:
    from trimodal.bench.baselines import NaiveDriver, naive_server

    s = run.settings
    workers = cores() if baseline == "naive_workers" else 1
    LOGGER.info("starting %s (%d uvicorn worker(s))", baseline, workers)
    url = stack.enter_context(naive_server(s.build_dir, s.repo_dir, s.spec_path, run.work / f"{baseline}.log",
                                           workers=workers))  # fmt: skip
    driver = NaiveDriver(baseline, url, run.spec, run.items)
    driver.warm(2 * workers, max(2.0, s.warmup_s))
    run.runners[baseline] = driver


def _start_inprocess(run: BenchRun, stack: contextlib.ExitStack) -> None:
    from trimodal.bench.inprocess import InProcessRunner, settings_for

    for setting in settings_for(cores()):
        LOGGER.info("preparing in-process runner: %s", setting.name)
        runner = InProcessRunner(run.spec, run.settings.repo_dir, run.items, setting)
        stack.callback(runner.close)
        run.runners[f"inprocess/{setting.name}"] = runner


def start_runners(run: BenchRun, stack: contextlib.ExitStack) -> None:
    """Start every requested server and in-process runner (stopped when ``stack`` closes)."""
    for baseline in run.settings.baselines:
        if baseline == "inprocess":
            _start_inprocess(run, stack)
        elif baseline.startswith("naive"):
            _start_naive(run, stack, baseline)
        else:
            _start_triton(run, stack, baseline)


# ---------------------------------------------------------------------------------------------------------
# Measuring
# ---------------------------------------------------------------------------------------------------------


def probe_saturation(run: BenchRun) -> float | None:
    """Closed-loop throughput of Triton as configured at :data:`PROBE_CONCURRENCY` (what the rates scale)."""
    driver = run.runners.get("triton")
    if driver is None:
        return None
    s = run.settings
    level = driver.closed(PROBE_CONCURRENCY, max(s.duration_s, 3.0), s.warmup_s)
    run.results.meta.saturation_probe_rps = round(level.throughput, 1)
    return level.throughput if level.throughput > 0 else None


def compare_answers(run: BenchRun) -> None:
    """Send the first :data:`ACCURACY_SAMPLES` requests once to each Triton variant; record accuracy and agreement."""
    from trimodal.bench.baselines import TRITON_BASELINES

    drivers = {name: run.runners[name] for name in TRITON_BASELINES if name in run.runners}
    if not drivers:
        return
    items = run.items[:ACCURACY_SAMPLES]
    truth = [run.spec.classes[item.label] for item in items]
    answers: dict[str, list[str | None]] = {}
    for name, driver in drivers.items():
        answers[name] = driver.labels(len(items))
        correct = sum(a == t for a, t in zip(answers[name], truth, strict=True))
        run.results.meta.accuracy[name] = {"correct": correct, "total": len(items)}
    if "triton" in answers:
        for name, labels in answers.items():
            if name != "triton":
                same = sum(a == b for a, b in zip(labels, answers["triton"], strict=True))
                run.results.meta.accuracy[name]["same_label_as_triton"] = same


def measure(run: BenchRun, step: Step, saturation_rps: float | None) -> LevelResult | None:
    """One step of the schedule, with the machine's load recorded around it."""
    from trimodal.bench.baselines import log_level

    s = run.settings
    runner = run.runners[step.runner]
    settle_heap()
    load_1m = os.getloadavg()[0]
    before = cpuload.sample()
    if step.mode == "concurrency":
        result = runner.closed(int(step.level), s.duration_s, s.warmup_s)
    elif saturation_rps:
        rate = max(1.0, round(step.level * saturation_rps, 1))
        result = runner.open(rate, s.rate_duration_s, s.warmup_s, seed=step.repetition)
    else:
        return None
    after = cpuload.sample()
    result.repetition, result.load_1m = step.repetition, round(load_1m, 2)
    result.outside_cores = round(cpuload.outside_cores(before, after), 2)
    result.run_cores = round(cpuload.run_cores(before, after), 2)
    log_level(result)
    if cpuload.busy(result.outside_cores, cores()):
        LOGGER.warning("%s: %.2f cores busy outside the run during this level", step.runner, result.outside_cores)
    return result


def record_saturation(results: BenchResults) -> None:
    """``meta.saturation_rps``: the median throughput of Triton as configured at its best closed-loop level."""
    from trimodal.bench.aggregate import best, rows, select

    top = best(select(rows(results.levels), "triton"))
    if top is not None:
        results.meta.saturation_rps = round(top.throughput.median, 1)
        results.meta.saturation_source = f"loadgen {top.label()} (median of {len(top.levels)})"


def perf_sweeps(run: BenchRun) -> list[LevelResult]:
    """perf_analyzer's concurrency levels against Triton as configured (a cross-check of the asyncio client)."""
    from trimodal.bench.baselines import instance_counts
    from trimodal.bench.perf import PerfRunner, find_perf_analyzer, perf_env, write_input_data

    s, url = run.settings, run.urls.get("triton")
    if url is None or not s.perf or not s.pa_concurrencies:
        return []
    try:
        binary, env = find_perf_analyzer(), perf_env(BuildLayout(s.build_dir).tools_lib)
    except BenchError as exc:
        LOGGER.warning("skipping perf_analyzer: %s", exc)
        run.results.meta.perf_analyzer = f"skipped: {exc}"
        return []
    input_json = write_input_data(run.items, s.out / PERF_INPUT)
    runner = PerfRunner(url=url, input_json=input_json, out_dir=s.out / PERF_DIR, measurement_ms=s.pa_window_ms,
                        instances=instance_counts(run.spec), env=env, binary=binary)  # fmt: skip
    try:
        return [runner.level("concurrency", concurrency) for concurrency in s.pa_concurrencies]
    finally:
        input_json.unlink(missing_ok=True)


def run_schedule(run: BenchRun) -> None:
    """Probe saturation, then measure every step of :func:`schedule`, saving after each."""
    s = run.settings
    saturation_rps = probe_saturation(run)
    open_runners = [name for name in OPEN_LOOP_BASELINES if name in run.runners]
    steps = schedule(list(run.runners), open_runners, s.concurrencies, s.rates, s.repetitions)
    begun = time.monotonic()
    for index, step in enumerate(steps, 1):
        result = measure(run, step, saturation_rps)
        if result is not None:
            run.results.levels.append(result)
            run.save()
        elapsed = time.monotonic() - begun
        LOGGER.info("bench: %d/%d levels, %.0f s elapsed, about %.0f s left", index, len(steps), elapsed,
                    elapsed / index * (len(steps) - index))  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------


def _meta(settings: BenchSettings, spec: PipelineSpec, items: Sequence[WorkItem]) -> BenchMeta:
    from trimodal.bench.baselines import instance_counts
    from trimodal.bench.workload import format_mix, parse_mix
    from trimodal.triton.repository import stale_files

    return BenchMeta(
        timestamp=settings.out.name, machine=machine(), quick=settings.quick, duration_s=settings.duration_s,
        warmup_s=settings.warmup_s, concurrencies=list(settings.concurrencies), mix=format_mix(parse_mix(settings.mix)),
        workload_size=len(items), serving=spec.serving.model_dump(), instances=instance_counts(spec),
        load_before=os.getloadavg()[0], cores=cores(), repetitions=settings.repetitions,
        rate_fractions=list(settings.rates), rate_duration_s=settings.rate_duration_s, commit=git_commit(),
        stale_configs=[str(p) for p in stale_files(spec, settings.repo_dir)],
        precision_cpu=spec.precision.cpu.model_dump(),
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


@contextlib.contextmanager
def _run_context(settings: BenchSettings) -> Iterator[BenchRun]:
    spec, items = _prepare(settings)
    settings.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="trimodal-bench-") as tmp:
        yield BenchRun(settings, spec, items, Path(tmp), BenchResults(meta=_meta(settings, spec, items)))


def run_bench(settings: BenchSettings) -> Path:
    """Start every requested baseline, measure the interleaved schedule, write results, report and plots.

    Args:
        settings: what to run.

    Returns:
        The report path.

    Raises:
        BenchError: if the repository or the dataset is not built, or a setting is invalid.
    """
    from trimodal.bench.report import write_report

    planned = stage_estimates(settings)
    with _run_context(settings) as run, contextlib.ExitStack() as stack:
        log_progress(planned, [], 0.0)
        start_runners(run, stack)
        run.results.meta.servers_started_s = round(time.monotonic() - run.started, 1)
        compare_answers(run)
        run.save()
        log_progress(planned, STAGES[:1], time.monotonic() - run.started)
        run_schedule(run)
        record_saturation(run.results)
        log_progress(planned, STAGES[:2], time.monotonic() - run.started)
        run.results.perf += perf_sweeps(run)
        run.results.meta.load_after = os.getloadavg()[0]
        run.save()
    report = write_report(settings.out, BenchResults.load(settings.out))
    LOGGER.info("report: %s (%.0f s)", report, time.monotonic() - run.started)
    return report
