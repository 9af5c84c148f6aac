"""The ``trimodal`` command line: render, build, serve, infer, evaluate, samples.

Settings come from flags, then ``TRIMODAL_*`` environment variables, then pipeline.yaml.
"""

from __future__ import annotations

import json
import logging
import signal
import sys
from pathlib import Path
from typing import Annotated

import typer

from trimodal.errors import TrimodalError

LOGGER = logging.getLogger("trimodal")

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Multimodal classifier served by Triton.")

SpecOption = Annotated[Path | None, typer.Option("--spec", envvar="TRIMODAL_SPEC", help="pipeline.yaml to use.")]
BuildDirOption = Annotated[Path, typer.Option("--build-dir", envvar="TRIMODAL_BUILD_DIR", help="Build outputs.")]
RepoOption = Annotated[Path, typer.Option("--repository", envvar="TRIMODAL_REPOSITORY", help="Model repository.")]
UrlOption = Annotated[str, typer.Option("--url", envvar="TRIMODAL_URL", help="Triton gRPC host:port.")]
TimeoutOption = Annotated[float, typer.Option("--timeout", help="Deadline of each call, seconds.")]

ROOT = Path(__file__).resolve().parent.parent
SAMPLES_DIR = ROOT / "clients" / "samples"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@app.callback()
def main(verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Debug logging.")] = False) -> None:
    """Multimodal (image + text + audio) classifier served by NVIDIA Triton."""
    _setup_logging(verbose)


def _fail(exc: Exception) -> typer.Exit:
    typer.secho(f"error: {exc}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


@app.command()
def render(
    spec: SpecOption = None,
    repository: RepoOption = ROOT / "model_repository",
    check: Annotated[bool, typer.Option("--check", help="Only report configs that differ from a render.")] = False,
) -> None:
    """Render model_repository/ configs from pipeline.yaml (protobuf -> text_format)."""
    from trimodal.spec import load_spec
    from trimodal.triton.repository import render as render_repo
    from trimodal.triton.repository import stale_files

    try:
        loaded = load_spec(spec)
        if check:
            stale = stale_files(loaded, repository)
            if stale:
                typer.echo("stale: " + ", ".join(map(str, stale)) + " (run `trimodal render`)")
                raise typer.Exit(code=1)
            typer.echo("model repository is up to date")
            return
        for path in render_repo(loaded, repository):
            typer.echo(f"wrote {path}")
    except TrimodalError as exc:
        raise _fail(exc) from None


@app.command()
def build(
    spec: SpecOption = None,
    build_dir: BuildDirOption = ROOT / "build",
    repository: RepoOption = ROOT / "model_repository",
    target: Annotated[str, typer.Option(help="cpu: ONNX for ONNX Runtime; gpu: also TensorRT plans.")] = "cpu",
    force: Annotated[bool, typer.Option("--force", help="Rebuild every step.")] = False,
    precision: Annotated[str | None, typer.Option(help="GPU engines: fp32, fp16 or int8.")] = None,
    workspace: Annotated[int | None, typer.Option(help="GPU engines: TensorRT workspace, MiB.")] = None,
) -> None:
    """Build the dataset, train, export ONNX and fill the model repository (and TensorRT plans on GPU)."""
    from trimodal.spec import load_spec
    from trimodal.training.build import build_cpu

    if target not in ("cpu", "gpu"):
        raise _fail(ValueError(f"--target: expected cpu or gpu, got {target!r}"))
    try:
        loaded = load_spec(spec)
        ran = build_cpu(loaded, build_dir, repository, force=force)
        typer.echo("build: " + ", ".join(f"{step} {'ran' if did else 'reused'}" for step, did in ran.items()))
        if target == "gpu":
            from trimodal.tensorrt.builder import build_all

            build_all(loaded, build_dir, repository, precision=precision, workspace=workspace)
    except TrimodalError as exc:
        raise _fail(exc) from None


@app.command()
def check(
    spec: SpecOption = None,
    build_dir: BuildDirOption = ROOT / "build",
    repository: RepoOption = ROOT / "model_repository",
    accuracy: Annotated[bool, typer.Option(help="Also compare engine outputs with ONNX Runtime (GPU).")] = True,
    samples: Annotated[int, typer.Option(help="Test samples for the accuracy check.")] = 500,
) -> None:
    """GPU pre-flight: TensorRT plans vs running TensorRT/GPU vs config.pbtxt, then engine accuracy."""
    from trimodal.spec import load_spec
    from trimodal.tensorrt.preflight import check_engines, errors, verify_accuracy

    try:
        loaded = load_spec(spec)
        problems = check_engines(loaded, repository, onnx_dir=build_dir / "onnx")
        for problem in problems:
            typer.echo(f"{problem.severity}: {problem.model}: {problem.message}")
        if errors(problems):
            raise typer.Exit(code=1)
        typer.echo("engines match the running TensorRT, the GPU and the configs")
        if accuracy:
            report = verify_accuracy(loaded, repository, build_dir, samples=samples)
            typer.echo(report.summary())
            if not report.passed:
                raise typer.Exit(code=1)
    except TrimodalError as exc:
        raise _fail(exc) from None


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(signal.Signals(signum).name)


def _stop_on_signals() -> None:
    """Turn SIGTERM (and SIGINT) into KeyboardInterrupt so every ``finally`` stops the server."""
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)


@app.command()
def serve(
    repository: RepoOption = ROOT / "model_repository",
    host: Annotated[str, typer.Option(envvar="TRIMODAL_HOST", help="Address to bind.")] = "127.0.0.1",
    http_port: Annotated[int, typer.Option(envvar="TRIMODAL_HTTP_PORT")] = 8000,
    grpc_port: Annotated[int, typer.Option(envvar="TRIMODAL_GRPC_PORT")] = 8001,
    metrics_port: Annotated[int, typer.Option(envvar="TRIMODAL_METRICS_PORT")] = 8002,
    config_name: Annotated[str, typer.Option(help="--model-config-name ('' = config.pbtxt, GPU).")] = "cpu",
    ready_timeout: Annotated[float, typer.Option(help="Seconds to wait for readiness.")] = 240.0,
    demo: Annotated[bool, typer.Option(help="Classify the bundled samples once ready.")] = False,
    supervise: Annotated[bool, typer.Option(help="Restart the server when a model stops being ready.")] = True,
    admin_key: Annotated[
        str | None, typer.Option(envvar="TRIMODAL_ADMIN_KEY", help="Key for the restricted admin APIs.")
    ] = None,
) -> None:
    """Start tritonserver in the foreground until Ctrl-C / SIGTERM (self-healing unless --no-supervise)."""
    from trimodal.triton.install import missing_artifacts
    from trimodal.triton.server import ADMIN_HEADER, ServerConfig, TritonServer
    from trimodal.triton.supervisor import Supervisor, inference_probe

    missing = missing_artifacts(repository) if config_name == "cpu" else []
    if missing:
        raise _fail(TrimodalError(f"missing {', '.join(map(str, missing))}: run `trimodal build` first"))
    config = ServerConfig(
        model_repository=repository, host=host, http_port=http_port, grpc_port=grpc_port,
        metrics_port=metrics_port, model_config_name=config_name or None, work_dir=ROOT / "build" / "triton",
        admin_key=admin_key,
    )  # fmt: skip
    server = TritonServer(config)
    probe = inference_probe(config.http_url) if (repository / "multimodal").is_dir() else None
    supervisor = Supervisor(server, ready_timeout_s=ready_timeout, probe=probe)
    _stop_on_signals()
    try:
        server.start(ready_timeout)
        if supervise:
            supervisor.start()
        typer.echo(f"serving: gRPC {config.grpc_url}  HTTP {config.http_url}  metrics {config.metrics_url}")
        typer.echo(f"admin APIs need header '{ADMIN_HEADER}' (key in {config.work_dir / 'admin-key'})")
        if demo:
            _demo(config.grpc_url)
        typer.echo("Ctrl-C to stop", err=False)
        sys.stdout.flush()
        while True:
            signal.pause()
    except KeyboardInterrupt:
        typer.echo("stopping")
    except TrimodalError as exc:
        raise _fail(exc) from None
    finally:
        supervisor.stop()
        server.stop()


def _sample_files() -> list[tuple[Path, Path, Path, str]]:
    samples = []
    for meta in sorted(SAMPLES_DIR.glob("*.json")):
        info = json.loads(meta.read_text())
        samples.append((SAMPLES_DIR / info["image"], SAMPLES_DIR / info["text"], SAMPLES_DIR / info["audio"], info))
    return samples


def _demo(url: str) -> None:
    from trimodal.client import Sample, TrimodalClient

    samples = _sample_files()
    if not samples:
        typer.echo(f"no bundled samples in {SAMPLES_DIR}")
        return
    with TrimodalClient(url) as client:
        for image, text, audio, info in samples:
            sample = Sample.from_files(image=image, text=text.read_text(encoding="utf-8"), audio=audio)
            result = client.classify(sample)
            top = ", ".join(f"{name} {score:.3f}" for name, score in result.top_k)
            typer.echo(f"{image.stem}: expected {info['label']:<6} -> {result.label:<6} (top: {top})")


@app.command()
def infer(
    image: Annotated[Path | None, typer.Option(help="PNG or JPEG file.")] = None,
    text: Annotated[str | None, typer.Option(help="Text (UTF-8).")] = None,
    audio: Annotated[Path | None, typer.Option(help="WAV file.")] = None,
    url: UrlOption = "127.0.0.1:8001",
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Labels to show.")] = 3,
    timeout: TimeoutOption = 10.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Classify one sample; any modality may be omitted (at least one is needed)."""
    from trimodal.client import Sample, TrimodalClient

    if image is None and text is None and audio is None:
        raise _fail(ValueError("give at least one of --image, --text, --audio"))
    try:
        with TrimodalClient(url, timeout_s=timeout) as client:
            result = client.classify(Sample.from_files(image=image, text=text, audio=audio), top_k=top_k)
    except TrimodalError as exc:
        raise _fail(exc) from None
    if as_json:
        payload = {"label": result.label, "probability": result.probability, "top_k": result.top_k,
                   "probabilities": [float(p) for p in result.probabilities]}  # fmt: skip
        typer.echo(json.dumps(payload))
        return
    typer.echo(f"label: {result.label} ({result.probability:.4f})")
    for name, score in result.top_k:
        typer.echo(f"  {name:<8} {score:.4f}")


@app.command()
def samples(
    spec: SpecOption = None,
    build_dir: BuildDirOption = ROOT / "build",
    count: Annotated[int, typer.Option(help="How many test samples to bundle.")] = 3,
    out: Annotated[Path, typer.Option(help="Output folder.")] = SAMPLES_DIR,
) -> None:
    """Write a few test-split samples (PNG/JPEG, WAV, text) to clients/samples for demos and examples."""
    from trimodal.spec import load_spec
    from trimodal.training.data.dataset import load_split

    loaded = load_spec(spec)
    split = load_split(build_dir, "test")
    out.mkdir(parents=True, exist_ok=True)
    clean = [i for i in range(len(split)) if not split.corrupted[i].any()]
    for n, index in enumerate(clean[:: max(1, len(clean) // count)][:count]):
        label = loaded.classes[int(split.labels[index])]
        ext = "jpg" if split.images[index][:2] == b"\xff\xd8" else "png"
        stem = f"sample{n}_{label}"
        (out / f"{stem}.{ext}").write_bytes(split.images[index])
        (out / f"{stem}.wav").write_bytes(split.audio[index])
        (out / f"{stem}.txt").write_text(split.texts[index], encoding="utf-8")
        info = {"label": label, "image": f"{stem}.{ext}", "audio": f"{stem}.wav", "text": f"{stem}.txt",
                "test_index": index}  # fmt: skip
        (out / f"{stem}.json").write_text(json.dumps(info, indent=2) + "\n")
        typer.echo(f"wrote {stem} ({label})")


from trimodal.bench.commands import bench, plan  # noqa: E402

app.command()(bench)
app.command()(plan)


def run() -> None:
    """Console entry point with clean exit codes."""
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    run()
