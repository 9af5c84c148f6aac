"""Model Analyzer's quick config search (``trimodal tune``) against the real tritonserver.

Model Analyzer (``triton-model-analyzer`` on PyPI) pins its own dependencies, so it lives in a venv of its own
(``.venv-analyzer``, made by ``make tune``) and runs as a subprocess. In ``local`` launch mode it starts the
server itself: the same binary, backends folder, Python stub and environment as :mod:`trimodal.triton.server`
(``triton_server_path``, ``triton_server_flags``, ``triton_server_environment``), on free ports. Model Analyzer
reads and writes ``config.pbtxt``, so :func:`stage_repository` builds a repository where each model's config for
the chosen target (``configs/cpu.pbtxt`` on the CPU target) is its ``config.pbtxt``. perf_analyzer is the real
binary from this venv (tritonclient 2.51), over gRPC, with real test-split tensors (:mod:`.analyzer_data`).

The quick search is a hill climb over instance count x max batch size per model (dynamic batching on, with
Triton's default settings), the concurrency following as 2 x batch x instances; its first measurement is the
shipped config. Everything goes to ``build/tune/<timestamp>/``: the Model Analyzer YAML (generated from a dict),
its log, ``results/metrics-model-inference.csv``, ``reports/``, ``checkpoints/`` and the tried configs in
``output_model_repository/``. No tritonserver it started outlives the run (:func:`stop_leftover_servers`).
"""

from __future__ import annotations

import contextlib
import csv
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from trimodal import contract
from trimodal.errors import TrimodalError, TuneError
from trimodal.layout import CONFIG_FILE, VERSION, Layout, project_root
from trimodal.triton.processes import alive, running_servers, stop_group
from trimodal.triton.server import SHM_DIR, find_tritonserver, free_port, prepare_backends, server_env

LOGGER = logging.getLogger(__name__)

ANALYZER_ENV = "TRIMODAL_MODEL_ANALYZER"
ANALYZER_VENV = ".venv-analyzer"
DEFAULT_MODELS: tuple[str, ...] = contract.ENCODERS
# The ONNX models. The preprocessors and postprocess take what only the ensemble makes, and Model Analyzer 1.58's
# quick search of the ensemble (8 composing models) hung here before its first measurement (no server running).
TUNABLE: tuple[str, ...] = contract.ENCODERS
RESULTS_CSV = Path("results") / "metrics-model-inference.csv"
OUTPUT_REPOSITORY = "output_model_repository"
SHM_PREFIX = "trimodal_tune_"


@dataclass(frozen=True)
class SearchLimits:
    """Bounds of the quick search and of each perf_analyzer measurement.

    ``stability_percent`` is perf_analyzer's ``-s``: an unstable measurement makes Model Analyzer retry with a
    window one second longer (up to ten times), so on a shared 2-core machine a tight value costs minutes;
    1000 accepts the last window. ``concurrency_sweep`` measures the best configs at concurrency 1, 2, 4 ...
    for the reports' throughput/latency curves.
    """

    min_instances: int = 1
    max_instances: int = 4
    max_batch_size: int = 32
    max_concurrency: int = 64
    window_ms: int = 2000
    max_trials: int = 5
    stability_percent: int = 50
    samples: int = 32
    concurrency_sweep: bool = True


@dataclass(frozen=True)
class Measurement:
    """One configuration Model Analyzer measured (a row of its inference CSV)."""

    model: str
    variant: str
    concurrency: int
    instances: str
    max_batch_size: int
    throughput: float
    p99_ms: float

    @property
    def shipped(self) -> bool:
        """True for the first measurement of the search: the model's config as shipped."""
        return self.variant.endswith("_config_default")


def find_model_analyzer(path: Path | None = None) -> Path:
    """The ``model-analyzer`` executable: argument, ``TRIMODAL_MODEL_ANALYZER``, else ``.venv-analyzer/bin``.

    Raises:
        TuneError: if it is not installed, saying that ``make tune`` installs it.
    """
    candidate = path or os.environ.get(ANALYZER_ENV)
    found = Path(candidate) if candidate else project_root() / ANALYZER_VENV / "bin" / "model-analyzer"
    if not (found.is_file() and os.access(found, os.X_OK)):
        raise TuneError(
            f"Model Analyzer is not installed (no {found}): `make tune` installs it in {ANALYZER_VENV} "
            f"(or set {ANALYZER_ENV} to a model-analyzer executable)"
        )
    return found


def check_models(models: Sequence[str], repository: Path, target: str) -> None:
    """Refuse unknown model names and a repository that has not been built.

    Raises:
        TuneError: naming the model, the known ones, or the missing file and ``trimodal build``.
    """
    for name in models:
        if name == contract.ENSEMBLE:
            raise TuneError(
                f"{name}: Model Analyzer 1.58's quick search of the ensemble hung here before its first measurement; "
                f"tune its ONNX models ({', '.join(TUNABLE)}) and measure the ensemble with `trimodal bench`"
            )
        if name not in TUNABLE:
            raise TuneError(f"unknown model {name!r}; expected one of {', '.join(TUNABLE)}")
        config = source_config(repository, name, target)
        if not config.is_file():
            raise TuneError(f"{name}: no {config}: run `trimodal build` (or `trimodal render`)")
        for graph in _graphs(read_config(config)):
            if not (repository / name / VERSION / graph).is_file():
                raise TuneError(f"{name}: no {repository / name / VERSION / graph}: run `trimodal build` first")


def source_config(repository: Path, model: str, target: str) -> Path:
    """The config a model is served with on ``target``: ``configs/<target>.pbtxt`` when present, else config.pbtxt."""
    per_target = repository / model / "configs" / f"{target}.pbtxt"
    return per_target if target != "gpu" and per_target.is_file() else repository / model / CONFIG_FILE


def read_config(path: Path) -> mc.ModelConfig:
    """A model config parsed from its text_format file."""
    return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())


def _graphs(config: mc.ModelConfig) -> list[str]:
    """The ONNX file a CPU (Python-backend) config loads, from its ``onnx_file`` parameter."""
    return [config.parameters["onnx_file"].string_value] if "onnx_file" in config.parameters else []


def _unused_graph(name: str, config: mc.ModelConfig) -> bool:
    """True for another precision's graph (``model.fp16.onnx`` ...) than the one this config loads."""
    return name.endswith(".onnx") and bool(_graphs(config)) and name not in _graphs(config)


def stage_repository(repository: Path, models: Sequence[str], target: str, dest: Path) -> Path:
    """A model repository for Model Analyzer: each model's ``target`` config as its config.pbtxt.

    Version folders hold symlinks to the repository's files (Model Analyzer copies them once per model),
    without the graphs of the precisions this target does not serve. ``preferred_batch_size`` is left out: Model
    Analyzer keeps the dynamic batcher's settings in every config it tries and skips, as illegal, each one whose
    max batch size is below the largest preferred size, which would end the quick search at its first step
    (it starts at max batch size 1). ``default_queue_policy`` is left out too: one request queued past its
    timeout fails perf_analyzer's whole measurement, and a failed step ends the search; without it, such waits
    show up in the p99 instead. The queue delay is kept.

    Args:
        repository: the project's model repository.
        models: the models to tune.
        target: ``cpu`` or ``gpu``.
        dest: the folder to create.

    Returns:
        ``dest``.
    """
    for name in models:
        config = read_config(source_config(repository, name, target))
        if config.HasField("dynamic_batching"):
            del config.dynamic_batching.preferred_batch_size[:]
            config.dynamic_batching.ClearField("default_queue_policy")
        folder = dest / name
        (folder / VERSION).mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(text_format.MessageToString(config), encoding="utf-8")
        for item in (repository / name).iterdir():
            if item.is_file() and item.name != CONFIG_FILE:
                (folder / item.name).symlink_to(item.resolve())
        for item in (repository / name / VERSION).iterdir():
            if item.is_file() and not _unused_graph(item.name, config):
                (folder / VERSION / item.name).symlink_to(item.resolve())
    return dest


@dataclass(frozen=True)
class AnalyzerRun:
    """Where one Model Analyzer run reads and writes, and the ports of the server it starts."""

    out: Path
    staged: Path
    http_port: int
    grpc_port: int
    metrics_port: int
    shm_prefix: str

    @classmethod
    def create(cls, out: Path) -> AnalyzerRun:
        """A run writing into ``out``, on free ports."""
        out = out.resolve()
        return cls(out=out, staged=out / "model_repository", http_port=free_port(), grpc_port=free_port(),
                   metrics_port=free_port(), shm_prefix=f"{SHM_PREFIX}{os.getpid()}_{out.name}_")  # fmt: skip

    @property
    def output_repository(self) -> Path:
        """Where Model Analyzer writes the configs it tries (the repository its servers serve)."""
        return self.out / OUTPUT_REPOSITORY

    @property
    def config_file(self) -> Path:
        """The Model Analyzer YAML."""
        return self.out / "model-analyzer.yaml"

    @property
    def log_file(self) -> Path:
        """Model Analyzer's console output."""
        return self.out / "model-analyzer.log"


def _server_settings(run: AnalyzerRun, work_dir: Path, perf_libs: str) -> dict[str, object]:
    """``triton_server_*`` settings: the binary, flags and environment of :mod:`trimodal.triton.server`.

    Model Analyzer runs perf_analyzer in the server's environment too, so LD_LIBRARY_PATH also holds
    ``perf_libs`` (perf_analyzer's libcudart and libb64).
    """
    binary = find_tritonserver()
    embedded = not os.environ.get("TRIMODAL_TRITONSERVER")
    flags: dict[str, object] = {
        "backend-config": f"python,shm-region-prefix-name={run.shm_prefix}",
        "allow-gpu-metrics": False,
        "exit-timeout-secs": 10,
        "http-address": "127.0.0.1",
        "grpc-address": "127.0.0.1",
        "metrics-address": "127.0.0.1",
    }
    if embedded:
        flags["backend-directory"] = str(prepare_backends(work_dir))
    env = server_env(embedded)
    libraries = [*env.get("LD_LIBRARY_PATH", "").split(os.pathsep), *perf_libs.split(os.pathsep)]
    environment = {"PATH": env["PATH"], "LD_LIBRARY_PATH": os.pathsep.join(dict.fromkeys(filter(None, libraries)))}
    return {"triton_server_path": str(binary), "triton_server_flags": flags, "triton_server_environment": environment}


def analyzer_config(
    run: AnalyzerRun, models: dict[str, Path], limits: SearchLimits, target: str, perf_analyzer: Path,
    perf_env: dict[str, str], work_dir: Path,
) -> dict[str, object]:  # fmt: skip
    """The Model Analyzer ``profile`` config for a quick search (written with :func:`yaml.safe_dump`).

    Args:
        run: the run's folders and ports.
        models: model name -> its perf_analyzer ``--input-data`` JSON.
        limits: bounds of the search.
        target: ``cpu`` (instances ``KIND_CPU``) or ``gpu``.
        perf_analyzer: the perf_analyzer binary.
        perf_env: its environment (from :func:`trimodal.bench.perf.perf_env`).
        work_dir: where the server's backends folder is laid out.

    Returns:
        The config as plain data.
    """
    perf_flags = {
        "measurement-mode": "time_windows",
        "measurement-interval": limits.window_ms,
        "max-trials": limits.max_trials,
        "stability-percentage": limits.stability_percent,
    }
    profile_models = {
        name: {"cpu_only": target == "cpu", "perf_analyzer_flags": {**perf_flags, "input-data": str(data)}}
        for name, data in models.items()
    }
    return {
        "model_repository": str(run.staged),
        "output_model_repository_path": str(run.output_repository),
        "override_output_model_repository": True,
        "checkpoint_directory": str(run.out / "checkpoints"),
        "export_path": str(run.out),
        "triton_launch_mode": "local",
        **_server_settings(run, work_dir, perf_env.get("LD_LIBRARY_PATH", "")),
        "triton_http_endpoint": f"127.0.0.1:{run.http_port}",
        "triton_grpc_endpoint": f"127.0.0.1:{run.grpc_port}",
        "triton_metrics_url": f"http://127.0.0.1:{run.metrics_port}/metrics",
        "triton_output_path": str(run.out / "tritonserver.log"),
        "perf_analyzer_path": str(perf_analyzer),
        "perf_output": True,
        "perf_output_path": str(run.out / "perf_analyzer.log"),
        "client_protocol": "grpc",
        "run_config_search_mode": "quick",
        "run_config_search_min_instance_count": limits.min_instances,
        "run_config_search_max_instance_count": limits.max_instances,
        "run_config_search_max_model_batch_size": limits.max_batch_size,
        "run_config_search_max_concurrency": limits.max_concurrency,
        "concurrency_sweep_disable": not limits.concurrency_sweep,
        "skip_detailed_reports": True,
        "profile_models": profile_models,
    }


def write_config(run: AnalyzerRun, config: dict[str, object]) -> Path:
    """Write the Model Analyzer YAML of ``run``."""
    run.out.mkdir(parents=True, exist_ok=True)
    run.config_file.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return run.config_file


def stop_leftover_servers(run: AnalyzerRun, grace_s: float = 15.0) -> list[int]:
    """Stop every tritonserver still serving this run's repositories and remove its ``/dev/shm`` segments.

    Model Analyzer starts its servers in sessions of their own: when it is interrupted, they keep running.

    Returns:
        The pids that were still running.
    """
    pids = [s.pid for r in (run.output_repository, run.staged) for s in running_servers(r)]
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while pids and time.monotonic() < deadline and any(alive(pid) for pid in pids):
        time.sleep(0.25)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, signal.SIGKILL)
    for segment in SHM_DIR.glob(f"{run.shm_prefix}*"):
        with contextlib.suppress(OSError):
            segment.unlink()
    return pids


@contextlib.contextmanager
def _sigterm_as_error() -> Iterator[None]:
    """In the main thread, turn SIGTERM into a TuneError so that the cleanup below still runs."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_error(signum: int, frame: object) -> None:
        raise TuneError("stopped by SIGTERM")

    previous = signal.signal(signal.SIGTERM, raise_error)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_analyzer(
    run: AnalyzerRun, analyzer: Path, env: dict[str, str], echo: Callable[[str], None], timeout_s: float | None = None
) -> int:
    """Run ``model-analyzer profile`` on the run's YAML, echoing and logging its output.

    Model Analyzer runs in a session of its own; on a timeout, an error or SIGTERM it is stopped with everything
    it started, and :func:`stop_leftover_servers` runs in every case.

    Args:
        run: the run (its YAML must be written).
        analyzer: the model-analyzer executable.
        env: its environment (perf_analyzer's libraries on LD_LIBRARY_PATH).
        echo: called with each output line.
        timeout_s: stop it after this long (None = no limit), even if it prints nothing.

    Returns:
        Model Analyzer's exit code.

    Raises:
        TuneError: if it ran past ``timeout_s`` or this process got SIGTERM.
    """
    command = [str(analyzer), "profile", "-f", str(run.config_file)]
    process = subprocess.Popen(command, env=env, cwd=run.out, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True, stdin=subprocess.DEVNULL)  # fmt: skip
    fired = threading.Event()

    def expire() -> None:
        fired.set()
        stop_group(process, grace_s=20.0)

    timer = threading.Timer(timeout_s, expire) if timeout_s is not None else None
    try:
        with _sigterm_as_error(), run.log_file.open("w", encoding="utf-8") as log:
            if timer is not None:
                timer.start()
            assert process.stdout is not None
            for line in process.stdout:
                log.write(line)
                echo(line.rstrip("\n"))
            code = process.wait()
        if fired.is_set():
            raise TuneError(f"Model Analyzer ran past {timeout_s or 0:.0f} s and was stopped (log: {run.log_file})")
        return code
    finally:
        if timer is not None:
            timer.cancel()
        stop_group(process, grace_s=20.0)
        left = stop_leftover_servers(run)
        if left:
            LOGGER.warning("stopped tritonserver(s) %s that Model Analyzer left running", left)


def _number(row: dict[str, str], *keys: str) -> float:
    for key in keys:
        with contextlib.suppress(KeyError, TypeError, ValueError):
            return float(row[key])
    return float("nan")


def read_measurements(run: AnalyzerRun) -> list[Measurement]:
    """Every configuration measured, from Model Analyzer's ``results/metrics-model-inference.csv``.

    Raises:
        TuneError: if Model Analyzer wrote no results.
    """
    path = run.out / RESULTS_CSV
    if not path.is_file():
        raise TuneError(f"Model Analyzer wrote no {path} (see {run.log_file})")
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [
        Measurement(
            model=row["Model"],
            variant=row["Model Config Path"],
            concurrency=int(_number(row, "Concurrency")),
            instances=row.get("Instance Group", ""),
            max_batch_size=int(_number(row, "Max Batch Size")),
            throughput=_number(row, "Throughput (infer/sec)"),
            p99_ms=_number(row, "p99 Latency (ms)"),
        )
        for row in rows
    ]


def batching_summary(run: AnalyzerRun, variant: str) -> str:
    """How a tried config batches: max batch size, dynamic batching's queue delay and preferred sizes."""
    path = run.output_repository / variant / CONFIG_FILE
    if not path.is_file():
        return "?"
    config = read_config(path)
    if not config.HasField("dynamic_batching"):
        return f"max batch {config.max_batch_size}, no dynamic batching"
    batching = config.dynamic_batching
    preferred = ",".join(map(str, batching.preferred_batch_size)) or "-"
    return (
        f"max batch {config.max_batch_size}, queue delay {batching.max_queue_delay_microseconds} us, "
        f"preferred {preferred}"
    )


def best_per_model(measurements: Sequence[Measurement]) -> dict[str, Measurement]:
    """The highest-throughput measurement of each model."""
    best: dict[str, Measurement] = {}
    for item in measurements:
        if item.model not in best or item.throughput > best[item.model].throughput:
            best[item.model] = item
    return best


def shipped_at(measurements: Sequence[Measurement], model: str, concurrency: int) -> Measurement | None:
    """The shipped config's measurement of ``model`` at ``concurrency``, else its best one (None if unmeasured)."""
    shipped = [m for m in measurements if m.model == model and m.shipped]
    same = [m for m in shipped if m.concurrency == concurrency]
    return best_per_model(same or shipped).get(model)


def _row(run: AnalyzerRun, label: str, tag: str, item: Measurement) -> str:
    return (
        f"{label:<18} {tag + ' ' + item.variant:<38} {item.instances:<10} {batching_summary(run, item.variant):<50} "
        f"{item.concurrency:>5} {item.throughput:>8.1f} {item.p99_ms:>8.1f}"
    )


def summary_table(run: AnalyzerRun, measurements: Sequence[Measurement]) -> list[str]:
    """Lines of the short table: per model the best config the search found vs the shipped one.

    The shipped row is at the same concurrency when Model Analyzer measured it there (its concurrency sweep),
    else the shipped config's best measurement (quick search measures it at 2 x max batch x instances).
    """
    lines = [
        f"{'model':<18} {'config':<38} {'instances':<10} {'batching':<50} {'conc':>5} {'infer/s':>8} {'p99 ms':>8}"
    ]
    found = best_per_model([m for m in measurements if not m.shipped])
    for model in dict.fromkeys(m.model for m in measurements):
        best = found.get(model)
        shipped = shipped_at(measurements, model, best.concurrency if best else -1)
        lines.append(_row(run, model, "best", best) if best else f"{model:<18} no other config was measured")
        if shipped is None:
            lines.append(f"{'':<18} shipped: not measured (see {run.out / 'perf_analyzer_error.log'})")
            continue
        lines.append(_row(run, "", "shipped*", shipped))
        if best is not None and shipped.throughput > 0:
            lines.append(f"{'':<18} best / shipped throughput: {best.throughput / shipped.throughput:.2f}x")
    lines.append("* the shipped config as staged for Model Analyzer: no preferred batch sizes, no queue timeout")
    return lines


def default_out(layout: Layout) -> Path:
    """``build/tune/<UTC timestamp>``."""
    return layout.build.root / "tune" / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def input_data(layout: Layout, models: Sequence[str], folder: Path, samples: int) -> dict[str, Path]:
    """perf_analyzer input JSON for each model, from real test samples (:mod:`.analyzer_data`)."""
    from trimodal.spec import load_spec
    from trimodal.triton.analyzer_data import model_tensors, write_model_input_data

    spec = load_spec(layout.spec)
    tensors = model_tensors(spec, layout.repository.root, layout.build.root, samples)
    return {model: write_model_input_data(spec, model, tensors, folder / f"{model}.json") for model in models}


def tune(
    layout: Layout, models: Sequence[str], limits: SearchLimits, *, target: str = "cpu", out: Path | None = None,
    analyzer: Path | None = None, echo: Callable[[str], None] = print, timeout_s: float | None = None,
) -> tuple[AnalyzerRun, list[Measurement]]:  # fmt: skip
    """Run Model Analyzer's quick search on ``models`` and read what it measured.

    Args:
        layout: the project's folders.
        models: model names (default :data:`DEFAULT_MODELS`).
        limits: bounds of the search.
        target: ``cpu`` (the configs/cpu.pbtxt configs, here) or ``gpu`` (config.pbtxt, on a GPU host).
        out: results folder (default ``build/tune/<timestamp>``).
        analyzer: the model-analyzer executable (default :func:`find_model_analyzer`).
        echo: called with each line of Model Analyzer's output.
        timeout_s: stop Model Analyzer after this long.

    Returns:
        The run and every measurement.

    Raises:
        TuneError: Model Analyzer missing, an unknown model, a repository not built, no results.
    """
    from trimodal.bench.perf import find_perf_analyzer, perf_env

    executable = find_model_analyzer(analyzer)
    check_models(models, layout.repository.root, target)
    run = AnalyzerRun.create(out or default_out(layout))
    if run.out.exists() and any(run.out.iterdir()):
        raise TuneError(f"{run.out} is not empty: choose another --out")
    stage_repository(layout.repository.root, models, target, run.staged)
    try:
        data = input_data(layout, models, run.out / "input_data", limits.samples)
        perf_analyzer, env = find_perf_analyzer(), perf_env(layout.build.tools_lib)
    except TrimodalError as exc:
        raise TuneError(str(exc)) from exc
    config = analyzer_config(run, data, limits, target, perf_analyzer, env, layout.build.triton)
    write_config(run, config)
    env["PYTHONUNBUFFERED"] = "1"
    code = run_analyzer(run, executable, env, echo, timeout_s)
    if code != 0:
        raise TuneError(f"Model Analyzer exited with code {code} (log: {run.log_file})")
    measurements = read_measurements(run)
    if not measurements:
        raise TuneError(f"Model Analyzer measured no configuration (log: {run.log_file})")
    return run, measurements
