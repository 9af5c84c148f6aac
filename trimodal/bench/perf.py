"""perf_analyzer: the real binary, its input data from the dataset, concurrency and Poisson request-rate sweeps.

The PyPI ``perf-analyzer`` package is an empty placeholder; the real binary ships in the
``tritonclient==2.51.0`` wheel (``<venv>/bin/perf_analyzer``). It needs ``libb64.so.0d`` (Debian
``libb64-0d``) and ``libcudart.so.12`` at run time, but no GPU: :func:`perf_env` links the copies shipped
in the ``nvidia-pytriton`` wheel (whose names are mangled) into ``<build>/tools/lib`` when the system lacks them.

Every level runs as its own perf_analyzer invocation (``-f <csv> --verbose-csv``), bracketed by
statistics-API snapshots for the per-composing-model breakdown.
"""

from __future__ import annotations

import base64
import csv
import json
import logging
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer

from trimodal import contract
from trimodal.bench.loadgen import LevelResult
from trimodal.bench.stats import breakdown, snapshot
from trimodal.bench.workload import DEFAULT_MIX, WorkItem
from trimodal.errors import BenchError, TrimodalError
from trimodal.layout import Layout, pytriton_libs
from trimodal.options import DEFAULT_URL, BuildDirOption, UrlOption, clean_errors

LOGGER = logging.getLogger(__name__)

LIBRARIES: dict[str, str] = {"libcudart.so.12": "libcudart-", "libb64.so.0d": "libb64-"}


def find_perf_analyzer() -> Path:
    """The perf_analyzer binary: ``TRIMODAL_PERF_ANALYZER``, this venv's bin, then PATH.

    Raises:
        BenchError: if none is found.
    """
    candidates = [os.environ.get("TRIMODAL_PERF_ANALYZER"), str(Path(sys.executable).parent / "perf_analyzer"),
                  shutil.which("perf_analyzer")]  # fmt: skip
    for candidate in candidates:
        if candidate and Path(candidate).is_file() and os.access(candidate, os.X_OK):
            return Path(candidate)
    raise BenchError("perf_analyzer not found: pip install 'tritonclient[all]==2.51.0' (its wheel ships the binary)")


def _system_has(library: str) -> bool:
    for folder in ("/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/usr/lib", "/lib", "/usr/local/lib"):
        if (Path(folder) / library).exists():
            return True
    return False


def _cuda_runtime_lib() -> Path | None:
    """The ``lib`` folder of the nvidia-cuda-runtime-cu12 wheel when it holds libcudart.so.12, else None."""
    try:
        import nvidia.cuda_runtime  # type: ignore[import-not-found]
    except ImportError:
        return None
    folder = Path(next(iter(nvidia.cuda_runtime.__path__))) / "lib"
    return folder if (folder / "libcudart.so.12").exists() else None


def _bundled_libs() -> Path | None:
    """The nvidia_pytriton.libs folder (mangled copies of the libraries), or None without nvidia-pytriton."""
    try:
        return pytriton_libs()
    except TrimodalError:
        return None


def _link_library(library: str, prefix: str, link: Path, bundled: Path | None) -> None:
    found = sorted(bundled.glob(f"{prefix}*.so*")) if bundled is not None and bundled.is_dir() else []
    if not found:
        raise BenchError(
            f"perf_analyzer needs {library}: apt-get install libb64-0d / pip install nvidia-cuda-runtime-cu12"
        )
    if link.is_symlink():
        link.unlink()
    link.symlink_to(found[0])


def perf_env(lib_dir: Path) -> dict[str, str]:
    """Environment for perf_analyzer: ``lib_dir`` with the missing shared libraries linked, on LD_LIBRARY_PATH.

    ``libcudart.so.12`` comes from the ``nvidia-cuda-runtime-cu12`` wheel when installed, else from
    ``nvidia_pytriton.libs``; ``libb64.so.0d`` from the system, else from ``nvidia_pytriton.libs``.

    Args:
        lib_dir: folder for the symlinks (e.g. ``build/tools/lib``).

    Returns:
        The environment.

    Raises:
        BenchError: if a library cannot be found anywhere.
    """
    lib_dir.mkdir(parents=True, exist_ok=True)
    cuda_lib = _cuda_runtime_lib()
    folders = [str(lib_dir), *([str(cuda_lib)] if cuda_lib is not None else [])]
    bundled = _bundled_libs()
    for library, prefix in LIBRARIES.items():
        link = lib_dir / library
        if link.exists() or _system_has(library):
            continue
        if library == "libcudart.so.12" and cuda_lib is not None:
            continue
        _link_library(library, prefix, link, bundled)
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = os.pathsep.join([*folders, *filter(None, [env.get("LD_LIBRARY_PATH")])])
    return env


def _bytes_tensor(value: bytes) -> dict[str, object]:
    # perf_analyzer uses b64 data as the raw tensor: for BYTES that is the serialized form, a 4-byte
    # little-endian length before each element.
    return {"b64": base64.b64encode(struct.pack("<I", len(value)) + value).decode("ascii"), "shape": [1]}


def write_input_data(items: Sequence[WorkItem], path: Path) -> Path:
    """perf_analyzer ``--input-data`` JSON: one entry per work item (IMAGE, TEXT, AUDIO; empty = absent).

    Args:
        items: the workload.
        path: the JSON file to write.

    Returns:
        ``path``.
    """
    data = []
    for item in items:
        image, text, audio = item.sample.encoded()
        data.append({contract.IMAGE: _bytes_tensor(image), contract.TEXT: _bytes_tensor(text),
                     contract.AUDIO: _bytes_tensor(audio)})  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"data": data}), encoding="utf-8")
    return path


def parse_csv(path: Path) -> list[dict[str, float]]:
    """Rows of perf_analyzer's ``-f`` CSV as floats.

    Columns include ``Concurrency`` or ``Request Rate``, ``Inferences/Second``, ``p50 latency`` ... (microseconds).
    """
    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            row = {}
            for key, value in raw.items():
                if key is None:
                    continue
                try:
                    row[key.strip()] = float(value)
                except (TypeError, ValueError):
                    continue
            if row:
                rows.append(row)
    return rows


def parse_stdout(output: str) -> dict[str, float]:
    """The last measurement of perf_analyzer's console output in the CSV's column names (fallback for no CSV)."""
    import re

    row: dict[str, float] = {}
    patterns = {
        "Inferences/Second": r"Throughput: ([0-9.]+) infer/sec",
        "p50 latency": r"p50 latency: ([0-9.]+) usec",
        "p95 latency": r"p95 latency: ([0-9.]+) usec",
        "p99 latency": r"p99 latency: ([0-9.]+) usec",
        "Avg latency": r"Avg latency: ([0-9.]+) usec",
    }
    for key, pattern in patterns.items():
        found = re.findall(pattern, output)
        if found:
            row[key] = float(found[-1])
    return row if "Inferences/Second" in row and "p99 latency" in row else {}


def level_from_row(row: dict[str, float], baseline: str, mode: str, level: float) -> LevelResult:
    """A :class:`LevelResult` from one perf_analyzer CSV row (latencies there are in microseconds)."""
    us = lambda key: row.get(key, float("nan")) / 1000.0  # noqa: E731
    return LevelResult(
        baseline=baseline, concurrency=int(row.get("Concurrency", level if mode == "concurrency" else 0)),
        requests=0, errors=0, duration_s=0.0, throughput=row.get("Inferences/Second", 0.0),
        p50_ms=us("p50 latency"), p95_ms=us("p95 latency"), p99_ms=us("p99 latency"), mean_ms=us("Avg latency"),
        mode=mode, rate=level if mode == "rate" else None, tool="perf_analyzer",
    )  # fmt: skip


def _run(command: list[str], env: dict[str, str], timeout_s: float) -> tuple[str, int]:
    try:
        completed = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout_s, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        return f"timed out after {timeout_s:.0f} s: {exc}", -1
    return completed.stdout + completed.stderr, completed.returncode


def _command(
    binary: Path, url: str, input_json: Path, csv_path: Path, mode: str, level: float, measurement_ms: int,
) -> list[str]:  # fmt: skip
    """The perf_analyzer command line of one level, over gRPC (the model-config read it needs is open)."""
    target = ["-u", url, "-i", "grpc"]
    command = [
        str(binary), "-m", contract.ENSEMBLE, *target, "--input-data", str(input_json),
        "-p", str(measurement_ms), "-s", "25" if mode == "concurrency" else "60",
        "-r", "5", "--percentile", "99", "-f", str(csv_path), "--verbose-csv",
    ]  # fmt: skip
    if mode == "concurrency":
        return [*command, "--concurrency-range", f"{int(level)}:{int(level)}"]
    return [*command, "--request-rate-range", f"{level:g}:{level:g}", "--request-distribution", "poisson",
            "--max-threads", "32"]  # fmt: skip


def _measure(command: list[str], env: dict[str, str], timeout_s: float, tag: str) -> tuple[str, int]:
    """Run perf_analyzer; on a noisy machine measure once more and accept the last window (marked in the log)."""
    output, code = _run(command, env, timeout_s)
    if code != 0 and "stable measurement" in output:
        LOGGER.info("perf_analyzer %s: unstable, re-measuring without the stability criterion", tag)
        relaxed = [*command]
        relaxed[relaxed.index("-s") + 1] = "1000"
        retry, code = _run(relaxed, env, timeout_s)
        output = f"{output}\n--- re-run accepting an unstable measurement ---\n{retry}"
    return output, code


def _failed_level(baseline: str, mode: str, level: float, output: str) -> LevelResult:
    nan = float("nan")
    return LevelResult(
        baseline, int(level) if mode == "concurrency" else 0, 0, 1, 0.0, 0.0, nan, nan, nan, nan, mode=mode,
        rate=level if mode == "rate" else None, tool="perf_analyzer",
        first_error=(output.strip().splitlines() or ["no output"])[-1][:300],
    )  # fmt: skip


def _level_result(csv_path: Path, output: str, code: int, baseline: str, mode: str, level: float) -> LevelResult:
    """The level from the CSV (or the console output when perf_analyzer wrote none); NaN latencies if it failed."""
    rows = parse_csv(csv_path) if csv_path.exists() else []
    if code == 0 and not rows and parse_stdout(output):
        rows = [parse_stdout(output)]  # seen: exit 0 without the -f file
    if code != 0 or not rows:
        LOGGER.warning("perf_analyzer %s_%s_%g failed (exit %s): %s", baseline, mode, level, code,
                       output.strip().splitlines()[-1:])  # fmt: skip
        return _failed_level(baseline, mode, level, output)
    return level_from_row(rows[-1], baseline, mode, level)


def run_level(
    url: str, input_json: Path, out_dir: Path, baseline: str, mode: str, level: float, *, measurement_ms: int,
    instances: dict[str, int], env: dict[str, str], binary: Path, timeout_s: float = 240.0,
) -> LevelResult:  # fmt: skip
    """One perf_analyzer measurement (a concurrency or a Poisson request rate) against the ensemble.

    perf_analyzer talks gRPC, like every client of the deployment: it reads the ensemble's model config first,
    which the server leaves open (deploy/SECURITY.md; perf_analyzer's gRPC client cannot send the admin key).

    Args:
        url: Triton gRPC ``host:port`` (perf_analyzer and the statistics snapshots).
        input_json: from :func:`write_input_data`.
        out_dir: where the CSV and the log go.
        baseline: name for the result.
        mode: ``concurrency`` or ``rate``.
        level: the concurrency or the offered requests per second.
        measurement_ms: measurement window.
        instances: instance counts (utilization).
        env: from :func:`perf_env`.
        binary: perf_analyzer.
        timeout_s: kill perf_analyzer after this long.

    Returns:
        The level result with the statistics-API breakdown; NaN latencies if perf_analyzer failed.
    """
    tag = f"{baseline}_{mode}_{level:g}"
    csv_path, log_path = out_dir / f"{tag}.csv", out_dir / f"{tag}.log"
    command = _command(binary, url, input_json, csv_path, mode, level, measurement_ms)
    before = snapshot(url)
    output, code = _measure(command, env, timeout_s, tag)
    after = snapshot(url)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_path.write_text(output[-6000:], encoding="utf-8")
    result = _level_result(csv_path, output, code, baseline, mode, level)
    result.breakdown = breakdown(before, after, instances)
    LOGGER.info(
        "perf_analyzer %-8s %-11s %6g: %7.1f/s  p50 %7.1f ms  p99 %7.1f ms",
        baseline, mode, level, result.throughput, result.p50_ms, result.p99_ms,
    )  # fmt: skip
    return result


@dataclass(frozen=True)
class PerfRunner:
    """perf_analyzer set up against one server and one workload: :meth:`level` measures one level."""

    url: str
    input_json: Path
    out_dir: Path
    measurement_ms: int
    instances: dict[str, int]
    env: dict[str, str]
    binary: Path
    baseline: str = "triton"

    def level(self, mode: str, level: float) -> LevelResult:
        """:func:`run_level` of ``mode`` (``concurrency`` or ``rate``) at ``level``."""
        return run_level(
            self.url, self.input_json, self.out_dir, self.baseline, mode, level, measurement_ms=self.measurement_ms,
            instances=self.instances, env=self.env, binary=self.binary,
        )  # fmt: skip


# ---------------------------------------------------------------------------------------------------------
# Standalone sweeps: python -m trimodal.bench.perf
# ---------------------------------------------------------------------------------------------------------

cli = typer.Typer(add_completion=False, help="perf_analyzer sweeps of the multimodal ensemble")


def _levels(concurrency: str, rates: str) -> list[tuple[str, float]]:
    levels = [("concurrency", float(c)) for c in concurrency.split(",") if c.strip()]
    return levels + [("rate", float(r)) for r in rates.split(",") if r.strip()]


@cli.command()
def main(
    url: UrlOption = DEFAULT_URL,
    concurrency: Annotated[str, typer.Option(help="Concurrency levels, comma-separated.")] = "1,4,16,32",
    rates: Annotated[str, typer.Option(help="Poisson request rates (req/s), comma-separated.")] = "",
    window_ms: Annotated[int, typer.Option(help="Measurement window, milliseconds.")] = 5000,
    mix: Annotated[str, typer.Option(envvar="TRIMODAL_MIX", help="Modality-subset weights.")] = DEFAULT_MIX,
    samples: Annotated[int, typer.Option(help="Distinct test-split requests in the workload.")] = 512,
    build_dir: BuildDirOption = None,
    out: Annotated[Path | None, typer.Option(help="Output folder (default <build>/perf).")] = None,
) -> None:
    """Standalone sweeps against any running server (e.g. the docker compose load balancer).

    ``python -m trimodal.bench.perf --url 127.0.0.1:8001 --concurrency 1,8,32 --rates 50,100 --out DIR``
    """
    from trimodal.bench.workload import load_workload, parse_mix

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with clean_errors():
        build = Layout.default(build_dir=build_dir).build
        folder = out or build.root / "perf"
        binary, env = find_perf_analyzer(), perf_env(build.tools_lib)
        items = load_workload(build.root, parse_mix(mix), samples)
        runner = PerfRunner(
            url=url, input_json=write_input_data(items, folder / "input_data.json"), out_dir=folder,
            measurement_ms=window_ms, instances={}, env=env, binary=binary,
        )  # fmt: skip
        for mode, level in _levels(concurrency, rates):
            runner.level(mode, level)


if __name__ == "__main__":
    cli()
