"""The ``trimodal`` command line: a thin typer app over the package's folders.

Settings come from flags, then ``TRIMODAL_*`` environment variables, then pipeline.yaml. Every command maps
:class:`~trimodal.errors.TrimodalError` to ``error: ...`` on stderr and exit code 1 (no traceback).
"""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Annotated, Any

import click
import typer
from typer.core import TyperGroup

from trimodal.bench.commands import app as bench_app
from trimodal.errors import TrimodalError
from trimodal.layout import Layout
from trimodal.options import (
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    BuildDirOption,
    RepoOption,
    SpecOption,
    TimeoutOption,
    UrlOption,
    clean_errors,
)

LOGGER = logging.getLogger("trimodal")


class Target(str, Enum):
    """Where the built artifacts run: `trimodal build` makes the CPU ones; GPU plans come from build-engines."""

    cpu = "cpu"
    gpu = "gpu"


class Precision(str, Enum):
    """TensorRT engine precision (the graph that is built: fp32 as exported, fp16 casts, int8 Q/DQ)."""

    fp32 = "fp32"
    fp16 = "fp16"
    int8 = "int8"


JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of text.")]


class CleanErrors(TyperGroup):
    """A command group that turns every :class:`TrimodalError` into a one-line message and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; report a TrimodalError without a traceback."""
        with clean_errors():
            return super().invoke(ctx)


app = typer.Typer(
    cls=CleanErrors, add_completion=False, no_args_is_help=True, help="Multimodal classifier served by Triton."
)
app.add_typer(bench_app)


def _version(value: bool) -> None:
    if value:
        try:
            typer.echo(f"trimodal {version('trimodal')}")
        except PackageNotFoundError:
            typer.echo("trimodal (not installed)")
        raise typer.Exit()


@app.callback()
def main(
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False,
    show_version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Multimodal (image + text + audio) classifier served by NVIDIA Triton."""
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@app.command()
def render(
    spec: SpecOption = None,
    repository: RepoOption = None,
    check: Annotated[bool, typer.Option("--check", help="Only report configs that differ from a render.")] = False,
    as_json: JsonOption = False,
) -> None:
    """Render model_repository/ configs from pipeline.yaml (protobuf -> text_format)."""
    from trimodal.spec import load_spec
    from trimodal.triton.repository import render as render_repo
    from trimodal.triton.repository import stale_files

    layout = Layout.default(repository=repository, spec=spec)
    loaded = load_spec(layout.spec)
    if check:
        stale = stale_files(loaded, layout.repository.root)
        if as_json:
            typer.echo(json.dumps({"repository": str(layout.repository.root), "up_to_date": not stale,
                                   "stale": [str(path) for path in stale]}))  # fmt: skip
        elif stale:
            typer.echo("stale: " + ", ".join(map(str, stale)) + " (run `trimodal render`)")
        else:
            typer.echo("model repository is up to date")
        if stale:
            raise typer.Exit(code=1)
        return
    written = render_repo(loaded, layout.repository.root)
    if as_json:
        typer.echo(json.dumps({"repository": str(layout.repository.root), "written": [str(p) for p in written]}))
        return
    for path in written:
        typer.echo(f"wrote {path}")


@app.command()
def build(
    spec: SpecOption = None,
    build_dir: BuildDirOption = None,
    repository: RepoOption = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild every step.")] = False,
    target: Annotated[
        Target, typer.Option(help="cpu (the only one built here); GPU plans come from `trimodal build-engines`.")
    ] = Target.cpu,
) -> None:
    """Build the dataset, train, export the ONNX graphs and fill the model repository (CPU; needs the build extra).

    TensorRT plans are built from the repository's graphs by `trimodal build-engines` where TensorRT is.
    """
    from trimodal.spec import load_spec
    from trimodal.training.build import build_cpu

    if target is not Target.cpu:
        raise TrimodalError(
            f"--target {target.value}: `trimodal build` only builds the CPU artifacts; build TensorRT plans from the "
            "repository's graphs with `trimodal build-engines` where TensorRT is (deploy/GPU.md)"
        )
    layout = Layout.default(build_dir=build_dir, repository=repository, spec=spec)
    loaded = load_spec(layout.spec)
    ran = build_cpu(loaded, layout.build.root, layout.repository.root, force=force)
    typer.echo("build: " + ", ".join(f"{step} {'ran' if did else 'reused'}" for step, did in ran.items()))


GraphDirOption = Annotated[
    Path | None,
    typer.Option("--build-dir", help="Read the graphs from this (mounted) build folder's onnx/ instead of the "
                 "repository; its engines/ keeps the timing cache."),
]  # fmt: skip


@app.command("build-engines")
def build_engines(
    spec: SpecOption = None,
    repository: RepoOption = None,
    build_dir: GraphDirOption = None,
    precision: Annotated[Precision | None, typer.Option(help="Engine precision (default: pipeline.yaml's).")] = None,
    workspace: Annotated[int | None, typer.Option(help="TensorRT workspace, MiB (default: pipeline.yaml's).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Rebuild plans that are up to date.")] = False,
    cache_dir: Annotated[
        Path | None, typer.Option("--cache-dir", help="TensorRT's timing cache folder (default: <build-dir>/engines).")
    ] = None,
) -> None:
    """Build strongly typed TensorRT plans from the repository's ONNX graphs (never trains, exports or renders)."""
    from trimodal.spec import load_spec
    from trimodal.tensorrt.builder import build_all
    from trimodal.tensorrt.sources import check_spec_matches_repository

    layout = Layout.default(repository=repository, spec=spec)
    loaded = load_spec(layout.spec)
    check_spec_matches_repository(loaded, layout.repository.root, layout.spec)
    built = build_all(loaded, layout.repository.root, build_dir=build_dir, cache_dir=cache_dir,
                      precision=precision.value if precision else None,
                      workspace=workspace, force=force)  # fmt: skip
    for meta in built:
        layers = meta.layer_precisions.summary() if meta.layer_precisions else "no layer summary"
        typer.echo(f"{meta.model}: {meta.plan_file} ({meta.precision}, TensorRT {meta.tensorrt_version}, {layers})")


def _check_build_dir(build_dir: Path | None) -> Path | None:
    """The build folder `trimodal check` reads: the given one, else the project's when it exists, else none."""
    if build_dir is not None:
        return build_dir
    default = Layout.default().build.root
    return default if default.is_dir() else None


@app.command()
def check(
    spec: SpecOption = None,
    build_dir: BuildDirOption = None,
    repository: RepoOption = None,
    accuracy: Annotated[bool, typer.Option(help="Also compare engine outputs with ONNX Runtime (GPU).")] = True,
    samples: Annotated[int, typer.Option(help="Test samples for the accuracy check.")] = 500,
    as_json: JsonOption = False,
) -> None:
    """GPU pre-flight: TensorRT plans vs running TensorRT/GPU vs config.pbtxt, then engine accuracy."""
    from trimodal.spec import load_spec
    from trimodal.tensorrt.accuracy import unavailable_reason, verify_accuracy
    from trimodal.tensorrt.preflight import check_engines, errors

    layout = Layout.default(repository=repository, spec=spec)
    loaded = load_spec(layout.spec)
    build = _check_build_dir(build_dir)
    onnx_dir = None if build is None else build / "onnx"
    problems = check_engines(loaded, layout.repository.root, onnx_dir=onnx_dir)
    result: dict[str, Any] = {
        "repository": str(layout.repository.root),
        "problems": [{"severity": p.severity, "model": p.model, "message": p.message,
                      "path": None if p.path is None else str(p.path)} for p in problems],
        "engines_ok": not errors(problems), "accuracy": None, "accuracy_skipped": None,
    }  # fmt: skip

    def finish(ok: bool) -> None:
        if as_json:
            typer.echo(json.dumps(result))
        if not ok:
            raise typer.Exit(code=1)

    if not as_json:
        for problem in problems:
            typer.echo(f"{problem.severity}: {problem.model}: {problem.message}")
    if errors(problems):
        finish(False)
    if not as_json:
        typer.echo(f"engines in {layout.repository.root} match the running TensorRT, the GPU and the configs")
    reason = "--no-accuracy" if not accuracy else unavailable_reason()
    if reason is None and build is None:
        reason = "it needs the dataset: pass --build-dir with the build folder (build/data)"
    if reason is not None:
        result["accuracy_skipped"] = reason
        if accuracy and not as_json:
            typer.echo(f"accuracy check skipped: {reason}")
        finish(True)
        return
    report = verify_accuracy(loaded, layout.repository.root, build, samples=samples)
    result["accuracy"] = {"passed": report.passed, "summary": report.summary(), "precision": report.precision,
                          "top1_agreement": report.top1_agreement, "max_prob_diff": report.max_prob_diff}  # fmt: skip
    if not as_json:
        typer.echo(report.summary())
    finish(report.passed)


@app.command()
def serve(
    repository: RepoOption = None,
    host: Annotated[str, typer.Option(envvar="TRIMODAL_HOST", help="Address to bind.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(envvar="TRIMODAL_HTTP_PORT", help="HTTP port.")] = 8000,
    grpc_port: Annotated[int, typer.Option(envvar="TRIMODAL_GRPC_PORT", help="gRPC port.")] = 8001,
    metrics_port: Annotated[int, typer.Option(envvar="TRIMODAL_METRICS_PORT", help="Metrics port.")] = 8002,
    config_name: Annotated[str, typer.Option(help="--model-config-name ('' = config.pbtxt, GPU).")] = "cpu",
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 240.0,
    demo: Annotated[bool, typer.Option(help="Classify the bundled samples once ready.")] = False,
    supervise: Annotated[bool, typer.Option(help="Restart the server when a model stops being ready.")] = True,
    admin_key: Annotated[
        str | None,
        typer.Option(
            envvar="TRIMODAL_ADMIN_KEY",
            help="Key for the restricted admin APIs: HTTP header 'admin-key', gRPC metadata "
            "'triton-grpc-protocol-admin-key' (default: random, written to build/triton/admin-key).",
        ),
    ] = None,
) -> None:
    """Start tritonserver in the foreground until Ctrl-C / SIGTERM (self-healing unless --no-supervise)."""
    from trimodal.triton.serve import clean, describe_stop, serve_forever
    from trimodal.triton.server import ServerConfig

    layout = Layout.default(repository=repository)
    config = ServerConfig(
        model_repository=layout.repository.root, host=host, http_port=http_port, grpc_port=grpc_port,
        metrics_port=metrics_port, model_config_name=config_name or None, work_dir=layout.build.triton,
        admin_key=admin_key,
    )  # fmt: skip

    def on_ready(server: Any) -> None:
        from trimodal.triton.server import ADMIN_HEADER, GRPC_ADMIN_HEADER

        typer.echo(f"serving: gRPC {config.grpc_url}  HTTP {config.http_url}  metrics {config.metrics_url}")
        typer.echo(
            f"admin APIs need HTTP header '{ADMIN_HEADER}' or gRPC metadata '{GRPC_ADMIN_HEADER}' "
            f"(key in {config.work_dir / 'admin-key'})"
        )
        if demo:
            _demo(config.grpc_url, layout.samples)
        typer.echo("Ctrl-C to stop")
        sys.stdout.flush()

    report = serve_forever(config, ready_timeout_s=ready_timeout, supervise=supervise, on_ready=on_ready)
    typer.echo(describe_stop(report))
    if not clean(report):
        raise typer.Exit(code=1)


@app.command()
def tune(
    models: Annotated[
        list[str] | None,
        typer.Argument(help="Models to tune (default: the four ONNX models)."),
    ] = None,
    target: Annotated[
        Target, typer.Option(help="Whose configs: cpu (configs/cpu.pbtxt, here) or gpu (config.pbtxt).")
    ] = Target.cpu,
    max_instances: Annotated[int, typer.Option(min=1, help="Largest instance count tried.")] = 4,
    max_batch_size: Annotated[int, typer.Option(min=1, help="Largest max_batch_size tried.")] = 32,
    max_concurrency: Annotated[int, typer.Option(min=1, help="Largest perf_analyzer concurrency.")] = 64,
    window_ms: Annotated[int, typer.Option(min=100, help="perf_analyzer measurement window, milliseconds.")] = 2000,
    repository: RepoOption = None,
    build_dir: BuildDirOption = None,
    out: Annotated[Path | None, typer.Option(help="Results folder (default build/tune/<timestamp>).")] = None,
    analyzer: Annotated[
        Path | None, typer.Option(envvar="TRIMODAL_MODEL_ANALYZER", help="model-analyzer executable.")
    ] = None,
    minutes_per_model: Annotated[
        float,
        typer.Option(min=1.0, help="Stop Model Analyzer after this many minutes per model (a wedged server)."),
    ] = 30.0,
) -> None:
    """Model Analyzer's quick config search (instances x max batch size) against the real tritonserver.

    Needs Model Analyzer in .venv-analyzer (`make tune` installs it). About 5-10 minutes per model on 2 cores.
    """
    from trimodal.triton.analyzer import (
        DEFAULT_MODELS,
        SearchLimits,
        check_models,
        default_out,
        find_model_analyzer,
        summary_table,
    )
    from trimodal.triton.analyzer import tune as run_tune

    layout = Layout.default(build_dir=build_dir, repository=repository)
    chosen = list(models or DEFAULT_MODELS)
    find_model_analyzer(analyzer)
    check_models(chosen, layout.repository.root, target.value)
    limits = SearchLimits(max_instances=max_instances, max_batch_size=max_batch_size,
                          max_concurrency=max_concurrency, window_ms=window_ms)  # fmt: skip
    folder = out or default_out(layout)
    typer.echo(f"tune: Model Analyzer quick search of {', '.join(chosen)} on the {target.value} target; results go to "
               f"{folder} (roughly 5-10 minutes per model on 2 cores)")  # fmt: skip
    run, measurements = run_tune(layout, chosen, limits, target=target.value, out=folder, analyzer=analyzer,
                                 echo=typer.echo, timeout_s=60.0 * minutes_per_model * len(chosen))  # fmt: skip
    typer.echo("")
    for line in summary_table(run, measurements):
        typer.echo(line)
    typer.echo(f"results: {run.out} (results/*.csv, reports/summaries/*/result_summary.*, checkpoints/)")


def _sample_files(folder: Path) -> list[tuple[Path, Path, Path, dict[str, Any]]]:
    samples = []
    for meta in sorted(folder.glob("*.json")):
        info = json.loads(meta.read_text())
        samples.append((folder / info["image"], folder / info["text"], folder / info["audio"], info))
    return samples


def _demo(url: str, folder: Path) -> None:
    from trimodal.client import Sample, TrimodalClient

    samples = _sample_files(folder)
    if not samples:
        typer.echo(f"no bundled samples in {folder}")
        return
    with TrimodalClient(url) as client:
        for image, text, audio, info in samples:
            sample = Sample.from_files(image=image, text=text.read_text(encoding="utf-8"), audio=audio)
            result = client.classify(sample)
            top = ", ".join(f"{name} {score:.3f}" for name, score in result.top_k)
            typer.echo(f"{image.stem}: expected {info['label']:<6} -> {result.label:<6} (top: {top})")
            typer.echo(f"  {result.explain()}")


@app.command()
def infer(
    image: Annotated[Path | None, typer.Option(help="PNG or JPEG file.")] = None,
    text: Annotated[str | None, typer.Option(help="Text (UTF-8).")] = None,
    audio: Annotated[Path | None, typer.Option(help="WAV file.")] = None,
    url: UrlOption = DEFAULT_URL,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Labels to show.")] = 3,
    timeout: TimeoutOption = DEFAULT_TIMEOUT_S,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Classify one sample; any modality may be omitted (at least one is needed)."""
    from trimodal.client import Sample, TrimodalClient

    if image is None and text is None and audio is None:
        raise TrimodalError("give at least one of --image, --text, --audio")
    with TrimodalClient(url, timeout_s=timeout) as client:
        result = client.classify(Sample.from_files(image=image, text=text, audio=audio), top_k=top_k)
    if as_json:
        typer.echo(json.dumps(_infer_payload(result)))
        return
    typer.echo(f"label: {result.label} ({result.probability:.4f})")
    for name, score in result.top_k:
        typer.echo(f"  {name:<8} {score:.4f}")
    if result.modalities:
        typer.echo(f"modalities: {result.explain()}")


def _infer_payload(result: Any) -> dict[str, Any]:
    """The ``--json`` answer of ``trimodal infer``: the fused result and what each present modality says."""
    modalities = {
        name: {"label": vote.label, "probability": vote.probability} for name, vote in result.modalities.items()
    }
    return {"label": result.label, "probability": result.probability, "top_k": result.top_k,
            "probabilities": [float(p) for p in result.probabilities], "modalities": modalities,
            "agreement": result.agreement, "conflict_score": result.conflict_score, "conflict": result.conflict,
            "explanation": result.explain()}  # fmt: skip


@app.command()
def protoset(
    out: Annotated[Path, typer.Argument(help="File to write (e.g. build/triton.protoset).")],
) -> None:
    """Write Triton's gRPC API (grpc_service.proto + model_config.proto) as a descriptor set for non-Python clients.

    grpcurl takes it with -protoset, Node's @grpc/proto-loader with loadFileDescriptorSetFromBuffer
    (clients/node/infer.js).
    """
    from trimodal.protoset import write_descriptor_set

    typer.echo(f"wrote {write_descriptor_set(out)}")


@app.command()
def samples(
    spec: SpecOption = None,
    build_dir: BuildDirOption = None,
    count: Annotated[int, typer.Option(help="How many test samples to bundle.")] = 3,
    out: Annotated[Path | None, typer.Option(help="Output folder (default clients/samples).")] = None,
) -> None:
    """Write a few test-split samples (PNG/JPEG, WAV, text) to clients/samples for demos and examples."""
    from trimodal.spec import load_spec
    from trimodal.training.data.dataset import load_split

    layout = Layout.default(build_dir=build_dir, spec=spec)
    loaded = load_spec(layout.spec)
    split = load_split(layout.build.root, "test")
    folder = out or layout.samples
    folder.mkdir(parents=True, exist_ok=True)
    clean = [i for i in range(len(split)) if not split.corrupted[i].any()]
    for n, index in enumerate(clean[:: max(1, len(clean) // count)][:count]):
        label = loaded.classes[int(split.labels[index])]
        ext = "jpg" if split.images[index][:2] == b"\xff\xd8" else "png"
        stem = f"sample{n}_{label}"
        (folder / f"{stem}.{ext}").write_bytes(split.images[index])
        (folder / f"{stem}.wav").write_bytes(split.audio[index])
        (folder / f"{stem}.txt").write_text(split.texts[index], encoding="utf-8")
        info = {"label": label, "image": f"{stem}.{ext}", "audio": f"{stem}.wav", "text": f"{stem}.txt",
                "test_index": index}  # fmt: skip
        (folder / f"{stem}.json").write_text(json.dumps(info, indent=2) + "\n")
        typer.echo(f"wrote {stem} ({label})")


@app.command()
def evidence(
    collect: Annotated[
        bool,
        typer.Option(
            "--collect",
            help="First copy what the build and the tests wrote under build/ into the "
            "committed folders (benchmarks/accuracy, benchmarks/evidence, benchmarks/precision).",
        ),
    ] = False,
    write: Annotated[bool, typer.Option("--write", help="Rewrite the README's evidence regions.")] = False,
) -> None:
    """Check (default) or rewrite the README figures rendered from committed artifacts (see trimodal/evidence/)."""
    from trimodal.errors import EvidenceError
    from trimodal.evidence import artifacts, documents

    if collect:
        for path in artifacts.collect():
            typer.echo(f"copied {path}")
    if write:
        for path in documents.write():
            typer.echo(f"rewrote {path}")
        return
    stale = documents.stale()
    if stale:
        names = "; ".join(f"{path.name}: {', '.join(regions)}" for path, regions in stale.items())
        raise EvidenceError(f"figures differ from their artifacts ({names}): run `trimodal evidence --write`")
    typer.echo("every evidence region matches its artifacts")


def run() -> None:
    """Console entry point with clean exit codes."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run()
