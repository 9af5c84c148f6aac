"""``trimodal bench`` and ``trimodal plan`` (typer commands, registered in :mod:`trimodal.cli`)."""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any

import typer

from trimodal.bench import BenchError
from trimodal.errors import TrimodalError

LOGGER = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parent.parent.parent
RESULTS_ROOT = ROOT / "benchmarks" / "results"

QUICK = {"concurrency": "1,4,16,32", "duration": 4.0, "warmup": 1.0, "samples": 256, "rates": "0.7",
         "pa_concurrency": "1,16", "pa_window_ms": 2000}  # fmt: skip
FULL = {"concurrency": "1,2,4,8,16,32,64", "duration": 10.0, "warmup": 2.0, "samples": 512,
        "rates": "0.3,0.5,0.7,0.9", "pa_concurrency": "1,4,16,32,64", "pa_window_ms": 5000}  # fmt: skip

# Serving variants compared with the configured one (rendered into temporary repositories).
TUNING: dict[str, dict[str, Any]] = {
    "queue delay 0": {"max_queue_delay_us": 0},
    "queue delay 10 ms": {"max_queue_delay_us": 10000},
    "text_encoder ORT threads 2": {"models": {"text_encoder": {"ort_threads": 2}}},
    "text_encoder x2 instances": {"models": {"text_encoder": {"cpu_instances": 2}}},
}


def _ints(text: str, what: str) -> list[int]:
    try:
        values = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BenchError(f"{what}: expected comma-separated integers, got {text!r}") from None
    if not values or any(v < 1 for v in values):
        raise BenchError(f"{what}: expected integers >= 1, got {text!r}")
    return values


def _floats(text: str, what: str) -> list[float]:
    try:
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise BenchError(f"{what}: expected comma-separated numbers, got {text!r}") from None
    if any(not 0 < v <= 1.5 for v in values):
        raise BenchError(f"{what}: expected fractions of saturation in (0, 1.5], got {text!r}")
    return values


def _machine() -> str:
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


def _summary(levels: list[Any]) -> str:
    return "; ".join(f"c={x.concurrency}: {x.throughput:.1f}/s p99 {x.p99_ms:.0f} ms" for x in levels)


def run_bench(
    *, quick: bool, out: Path, spec_path: Path | None, build_dir: Path, repo_dir: Path, baselines: list[str],
    concurrencies: list[int], duration_s: float, warmup_s: float, samples: int, mix_text: str, perf: bool,
    rates: list[float], pa_concurrencies: list[int], pa_window_ms: int, tune: bool,
) -> Path:  # fmt: skip
    """Run every requested baseline in one run on one workload; write results.json, levels.csv, report, plots.

    Returns:
        The report path.
    """
    from trimodal.bench import baselines as base
    from trimodal.bench import perf as pa
    from trimodal.bench.report import RESULTS_FILE, saturation, write_report
    from trimodal.bench.workload import format_mix, load_workload, parse_mix
    from trimodal.spec import load_spec
    from trimodal.triton.install import missing_artifacts

    spec = load_spec(spec_path)
    missing = missing_artifacts(repo_dir)
    if missing:
        raise BenchError(f"model repository not built ({missing[0]} missing): run `trimodal build` first")
    mix = parse_mix(mix_text)
    items = load_workload(build_dir, mix, samples)
    out.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    meta: dict[str, Any] = {
        "timestamp": out.name, "machine": _machine(), "quick": quick, "duration_s": duration_s, "warmup_s": warmup_s,
        "concurrencies": concurrencies, "mix": format_mix(mix), "workload_size": len(items),
        "serving": spec.serving.model_dump(), "instances": base.instance_counts(spec),
        "load_before": os.getloadavg()[0],
    }  # fmt: skip
    results: dict[str, Any] = {"meta": meta, "levels": [], "perf": [], "tuning": [], "notes": []}

    def save() -> None:
        meta["seconds"] = round(time.monotonic() - started, 1)
        dump = {**results, "levels": [x.to_dict() for x in results["levels"]],
                "perf": [x.to_dict() for x in results["perf"]]}  # fmt: skip
        (out / RESULTS_FILE).write_text(json.dumps(dump, indent=1, default=_json_default) + "\n", encoding="utf-8")

    with tempfile.TemporaryDirectory(prefix="trimodal-bench-") as tmp:
        work = Path(tmp)
        if "inprocess" in baselines:
            LOGGER.info("baseline: in-process ONNX Runtime")
            results["levels"] += base.run_inprocess(spec, repo_dir, items, concurrencies, duration_s, warmup_s)
            save()
        if "naive" in baselines:
            LOGGER.info("baseline: FastAPI + PyTorch eager (starting the server)")
            with base.naive_server(build_dir, repo_dir, spec_path, work / "naive.log") as url:
                results["levels"] += base.run_naive(url, spec, items, concurrencies, duration_s, warmup_s)
            save()
        if "triton_nobatch" in baselines:
            LOGGER.info("baseline: Triton with dynamic batching off (rendering the variant repository)")
            variant = base.no_batching_spec(spec)
            repo = base.render_variant(variant, repo_dir, work / "repo_nobatch")
            with base.triton_server(repo, work / "triton_nobatch") as server:
                results["levels"] += base.run_triton(
                    server.config.grpc_url, "triton_nobatch", variant, items, concurrencies, duration_s, warmup_s,
                    base.instance_counts(variant),
                )  # fmt: skip
            save()
        if "triton" in baselines:
            LOGGER.info("baseline: Triton as configured")
            instances = base.instance_counts(spec)
            with base.triton_server(repo_dir, work / "triton") as server:
                url = server.config.grpc_url
                levels = base.run_triton(url, "triton", spec, items, concurrencies, duration_s, warmup_s, instances)
                results["levels"] += levels
                save()
                if perf:
                    access = {"http_url": server.config.http_url, "admin_key": getattr(server, "admin_key", None)}
                    results["perf"] += _perf_sweeps(
                        pa, url, items, out / "perf", pa_concurrencies, rates, pa_window_ms, instances, levels, meta,
                        access,
                    )  # fmt: skip
                    save()
            if tune:
                sat = saturation(levels)
                probe = sorted({16, sat.concurrency if sat else max(concurrencies)})
                results["tuning"].append(
                    {
                        "name": "as configured",
                        "settings": "pipeline.yaml serving",
                        "summary": _summary([x for x in levels if x.concurrency in probe]),
                    }
                )
                for name, update in TUNING.items():
                    LOGGER.info("tuning variant: %s", name)
                    try:
                        variant = base.serving_variant(spec, **json.loads(json.dumps(update)))
                        repo = base.render_variant(variant, repo_dir, work / "repo_variant")
                        with base.triton_server(repo, work / "triton_variant") as server:
                            tuned = base.run_triton(server.config.grpc_url, f"variant: {name}", variant, items, probe,
                                                    duration_s, warmup_s, base.instance_counts(variant))  # fmt: skip
                        results["tuning"].append({"name": name, "settings": json.dumps(update),
                                                  "summary": _summary(tuned),
                                                  "levels": [x.to_dict() for x in tuned]})  # fmt: skip
                    except TrimodalError as exc:
                        results["tuning"].append({"name": name, "settings": json.dumps(update),
                                                  "summary": f"failed: {exc}"[:300]})  # fmt: skip
                    save()
    meta["load_after"] = os.getloadavg()[0]
    save()
    report = write_report(out, _reload(out))
    LOGGER.info("report: %s (%.0f s)", report, time.monotonic() - started)
    return report


def _perf_sweeps(
    pa: Any, url: str, items: list[Any], folder: Path, concurrencies: list[int], rates: list[float],
    window_ms: int, instances: dict[str, int], levels: list[Any], meta: dict[str, Any], access: dict[str, Any],
) -> list[Any]:  # fmt: skip
    from trimodal.bench.report import saturation

    try:
        binary = pa.find_perf_analyzer()
        env = pa.perf_env(ROOT / "build" / "tools" / "lib")
    except BenchError as exc:
        LOGGER.warning("skipping perf_analyzer: %s", exc)
        meta["perf_analyzer"] = f"skipped: {exc}"
        return []
    input_json = pa.write_input_data(items, folder.parent / "_perf_input.json")
    found = []
    try:
        for concurrency in concurrencies:
            found.append(
                pa.run_level(
                    url,
                    input_json,
                    folder,
                    "triton",
                    "concurrency",
                    concurrency,
                    measurement_ms=window_ms,
                    instances=instances,
                    env=env,
                    binary=binary,
                    **access,
                )
            )
        best = saturation([*found, *levels])
        if best is None:
            return found
        meta["saturation_rps"] = best.throughput
        meta["saturation_source"] = f"{best.tool} c={best.concurrency}"
        for fraction in rates:
            rate = max(1.0, round(fraction * best.throughput, 1))
            found.append(
                pa.run_level(
                    url,
                    input_json,
                    folder,
                    "triton",
                    "rate",
                    rate,
                    measurement_ms=window_ms,
                    instances=instances,
                    env=env,
                    binary=binary,
                    **access,
                )
            )
    finally:
        input_json.unlink(missing_ok=True)
    return found


def _json_default(value: object) -> object:
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return str(value)


def _reload(folder: Path) -> dict[str, Any]:
    from trimodal.bench.report import load_results

    return load_results(folder)


def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Short sweep (under 5 minutes on 2 cores).")] = False,
    out: Annotated[Path | None, typer.Option(help="Results folder (default benchmarks/results/<timestamp>).")] = None,
    baselines: Annotated[
        str, typer.Option(help="Comma-separated subset of inprocess,naive,triton_nobatch,triton.")
    ] = "inprocess,naive,triton_nobatch,triton",
    concurrency: Annotated[str | None, typer.Option(help="Concurrency levels, e.g. 1,4,16,32.")] = None,
    duration: Annotated[float | None, typer.Option(help="Measured seconds per level.")] = None,
    warmup: Annotated[float | None, typer.Option(help="Warm-up seconds per level.")] = None,
    samples: Annotated[int | None, typer.Option(help="Distinct test-split requests in the workload.")] = None,
    mix: Annotated[str | None, typer.Option(envvar="TRIMODAL_MIX", help="Modality-subset weights.")] = None,
    perf: Annotated[bool, typer.Option(help="Run the perf_analyzer sweeps.")] = True,
    rates: Annotated[str | None, typer.Option(help="Poisson rates as fractions of saturation, e.g. 0.5,0.7.")] = None,
    tune: Annotated[bool | None, typer.Option(help="Compare serving variants (default: on unless --quick).")] = None,
    spec: Annotated[Path | None, typer.Option("--spec", envvar="TRIMODAL_SPEC", help="pipeline.yaml.")] = None,
    build_dir: Annotated[Path, typer.Option(envvar="TRIMODAL_BUILD_DIR", help="Build outputs.")] = ROOT / "build",
    repository: Annotated[Path, typer.Option(envvar="TRIMODAL_REPOSITORY", help="Model repository.")] = ROOT
    / "model_repository",
) -> None:
    """Benchmark Triton against the in-process, naive and no-batching baselines; write report.md and plots."""
    from trimodal.bench.baselines import BASELINES
    from trimodal.bench.workload import DEFAULT_MIX

    preset = QUICK if quick else FULL
    try:
        chosen = [b.strip() for b in baselines.split(",") if b.strip()]
        unknown = sorted(set(chosen) - set(BASELINES))
        if unknown or not chosen:
            raise BenchError(f"--baselines: unknown {unknown}; expected some of {list(BASELINES)}")
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if quick else "")
        report = run_bench(
            quick=quick, out=out or RESULTS_ROOT / stamp, spec_path=spec, build_dir=build_dir, repo_dir=repository,
            baselines=chosen, concurrencies=_ints(concurrency or preset["concurrency"], "--concurrency"),
            duration_s=duration or preset["duration"], warmup_s=preset["warmup"] if warmup is None else warmup,
            samples=samples or preset["samples"], mix_text=mix or DEFAULT_MIX, perf=perf,
            rates=_floats(rates or preset["rates"], "--rates"),
            pa_concurrencies=_ints(preset["pa_concurrency"], "perf_analyzer concurrency"),
            pa_window_ms=int(preset["pa_window_ms"]), tune=(not quick) if tune is None else tune,
        )  # fmt: skip
    except TrimodalError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(report.read_text(encoding="utf-8"))
    typer.echo(f"results: {report.parent}")


def plan(
    rps: Annotated[float, typer.Option("--rps", help="Target load, requests per second.")],
    p99_ms: Annotated[float, typer.Option("--p99-ms", help="p99 latency target, milliseconds.")],
    results: Annotated[Path | None, typer.Option(help="Results folder (default: the newest one).")] = None,
    headroom: Annotated[float, typer.Option(help="Fraction of measured capacity to plan with.")] = 0.8,
    utilization: Annotated[float, typer.Option(help="Target busy fraction per model instance.")] = 0.7,
) -> None:
    """Replicas and per-model instance counts for a target load under a p99 target, with the arithmetic."""
    from trimodal.bench.plan import latest_results, plan_from_folder

    try:
        folder = results or latest_results(RESULTS_ROOT)
        answer = plan_from_folder(folder, rps, p99_ms, headroom, utilization)
    except TrimodalError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"results folder: {folder}")
    for line in answer.lines:
        typer.echo(line)
    typer.echo(f"=> {answer.replicas} replica(s); instances per replica: "
               + ", ".join(f"{m}={n}" for m, n in sorted(answer.instances.items())))  # fmt: skip
