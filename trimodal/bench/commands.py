"""``trimodal bench`` and ``trimodal plan``: the typer app :data:`app`, merged into :mod:`trimodal.cli`.

The top-level CLI adds it without a name (``app.add_typer(bench_app)``), so both commands appear at the top
level. Each command maps :class:`~trimodal.errors.TrimodalError` to ``error: ...`` on stderr and exit code 1.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated

import typer

from trimodal.layout import Layout
from trimodal.options import BuildDirOption, RepoOption, SpecOption, clean_errors

LOGGER = logging.getLogger(__name__)

app = typer.Typer(add_completion=False, help="Benchmarks and the capacity planner.")

ALL_BASELINES = "inprocess,naive,naive_workers,triton_nobatch,triton_fp32pad,triton"


def _stamp(quick: bool) -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ") + ("-quick" if quick else "")


@app.command()
def bench(
    quick: Annotated[bool, typer.Option("--quick", help="Short run (about 2 minutes on 2 cores; full: ~14).")] = False,
    out: Annotated[Path | None, typer.Option(help="Results folder (default benchmarks/results/<timestamp>).")] = None,
    baselines: Annotated[str, typer.Option(help=f"Comma-separated subset of {ALL_BASELINES}.")] = ALL_BASELINES,
    concurrency: Annotated[str | None, typer.Option(help="Concurrency levels, e.g. 1,4,16,32.")] = None,
    duration: Annotated[float | None, typer.Option(help="Measured seconds per level.")] = None,
    warmup: Annotated[float | None, typer.Option(help="Warm-up seconds per level.")] = None,
    samples: Annotated[int | None, typer.Option(help="Distinct test-split requests in the workload.")] = None,
    mix: Annotated[str | None, typer.Option(envvar="TRIMODAL_MIX", help="Modality-subset weights.")] = None,
    perf: Annotated[bool, typer.Option(help="Cross-check with perf_analyzer's concurrency levels.")] = True,
    rates: Annotated[
        str | None, typer.Option(help="Poisson rates as fractions of the saturation probe, e.g. 0.5,0.7.")
    ] = None,
    rate_duration: Annotated[float | None, typer.Option(help="Measured seconds per Poisson level.")] = None,
    repetitions: Annotated[int | None, typer.Option(min=1, help="Measurements of each level (interleaved).")] = None,
    spec: SpecOption = None,
    build_dir: BuildDirOption = None,
    repository: RepoOption = None,
) -> None:
    """Benchmark Triton against the in-process bound, the naive server and its variants; write report.md and plots.

    Every server is started first; each level is then measured ``--repetitions`` times, the baselines
    interleaved; capacity and latency targets come from open-loop (Poisson) levels only.
    """
    from trimodal.bench.run import FULL, QUICK, BenchSettings, parse_baselines, parse_fractions, parse_ints, run_bench
    from trimodal.bench.workload import DEFAULT_MIX

    preset = QUICK if quick else FULL
    with clean_errors():
        layout = Layout.default(build_dir=build_dir, repository=repository)
        settings = BenchSettings(
            out=out or layout.results / _stamp(quick), build_dir=layout.build.root, repo_dir=layout.repository.root,
            baselines=parse_baselines(baselines),
            concurrencies=parse_ints(concurrency or preset.concurrency, "--concurrency"),
            duration_s=duration or preset.duration_s, warmup_s=preset.warmup_s if warmup is None else warmup,
            samples=samples or preset.samples, mix=mix or DEFAULT_MIX,
            rates=parse_fractions(rates or preset.rates, "--rates"),
            pa_concurrencies=parse_ints(preset.pa_concurrency, "perf_analyzer concurrency"),
            pa_window_ms=preset.pa_window_ms, spec_path=spec, quick=quick, perf=perf,
            repetitions=repetitions or preset.repetitions, rate_duration_s=rate_duration or preset.rate_duration_s,
        )  # fmt: skip
        report = run_bench(settings)
    typer.echo(report.read_text(encoding="utf-8"))
    typer.echo(f"results: {report.parent}")


@app.command()
def plan(
    rps: Annotated[float, typer.Option("--rps", help="Target load, requests per second.")],
    p99_ms: Annotated[float, typer.Option("--p99-ms", help="p99 latency target, milliseconds.")],
    results: Annotated[Path | None, typer.Option(help="Results folder (default: the newest one).")] = None,
    headroom: Annotated[float, typer.Option(help="Fraction of measured capacity to plan with.")] = 0.8,
    utilization: Annotated[float, typer.Option(help="Target busy fraction per model instance.")] = 0.7,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")] = False,
) -> None:
    """Replicas, per-model instances and the chart's per-pod request-rate target, from open-loop levels only."""
    from trimodal.bench.plan import latest_results, plan_from_folder

    with clean_errors():
        folder = results or latest_results(Layout.default().results)
        answer = plan_from_folder(folder, rps, p99_ms, headroom, utilization)
    if as_json:
        level = answer.level
        typer.echo(json.dumps({
            "results": str(folder), "rps": rps, "p99_ms": p99_ms, "replicas": answer.replicas,
            "capacity_rps": answer.capacity_rps, "instances": dict(sorted(answer.instances.items())),
            "hpa_request_rate_target": answer.hpa_target,
            "level": {"baseline": level.baseline, "mode": level.mode, "rate": level.rate,
                      "throughput": level.throughput, "p99_ms": level.p99_ms},
            "arithmetic": answer.lines,
        }))  # fmt: skip
        return
    typer.echo(f"results folder: {folder}")
    for line in answer.lines:
        typer.echo(line)
    typer.echo(f"=> {answer.replicas} replica(s); instances per replica: "
               + ", ".join(f"{m}={n}" for m, n in sorted(answer.instances.items())))  # fmt: skip
