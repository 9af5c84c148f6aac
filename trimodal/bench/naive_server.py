"""The baseline a user might write instead of Triton: FastAPI + uvicorn + PyTorch eager, as users write it.

Same weights (``build/checkpoints``, loaded by :mod:`trimodal.training.export`), same flow as every other
in-process runner (:mod:`trimodal.runtime.pipeline`: preprocessing, refusal of all-empty samples, encoders,
fusion) with the torch models behind its ``infer``, same answer (class probabilities). The endpoint is a plain
``def`` (FastAPI runs it in Starlette's thread pool, so requests overlap; torch releases the GIL), torch keeps
its default intra-op threads (one per core), one sample per request (no batching). ``--workers N`` runs N
uvicorn worker processes, each with its own models, as the FastAPI docs suggest for using every core.

    python -m trimodal.bench.naive_server --port 8100 [--workers 2] [--build-dir build] [--spec pipeline.yaml]

API: ``POST /classify`` with ``{"image": base64|null, "text": str|null, "audio": base64|null}`` ->
``{"probabilities": [...], "label": name}``; ``GET /health`` -> 200 when loaded.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from pydantic import BaseModel

from trimodal import contract
from trimodal.errors import TrimodalError
from trimodal.layout import Layout, RepositoryLayout, tokenizer_source
from trimodal.options import BuildDirOption, RepoOption, SpecOption, clean_errors

if TYPE_CHECKING:
    from trimodal.runtime.pipeline import Feeds, InferFn
    from trimodal.spec import PipelineSpec

LOGGER = logging.getLogger(__name__)


class ClassifyRequest(BaseModel):
    """Body of ``POST /classify``: base64 image and audio files, UTF-8 text; None = absent."""

    image: str | None = None
    text: str | None = None
    audio: str | None = None


def torch_infer(spec: PipelineSpec, models: Mapping[str, Any]) -> InferFn:
    """An ``infer(model, feeds)`` over torch modules in eager mode.

    Inputs are passed positionally in the contract's order (``contract.model_io(spec)[model].inputs``) and
    the outputs are named from ``.outputs``.

    Args:
        spec: the pipeline spec.
        models: torch module per model name (the three encoders and the fusion head).

    Returns:
        The infer function.
    """
    import torch

    ios = contract.model_io(spec)

    def infer(model: str, feeds: Feeds) -> Feeds:
        io = ios[model]
        with torch.inference_mode():
            result = models[model](*(torch.from_numpy(feeds[tensor.name]) for tensor in io.inputs))
        outputs = result if isinstance(result, tuple | list) else (result,)
        return {tensor.name: value.numpy() for tensor, value in zip(io.outputs, outputs, strict=True)}

    return infer


class NaiveModel:
    """The four torch models behind the one in-process pipeline; ``classify`` runs one sample in eager mode.

    Args:
        spec: the pipeline spec.
        build_dir: build folder with ``checkpoints/``.
        repo_dir: model repository (for the served tokenizer.json; the bundled one when it is not installed).
    """

    def __init__(self, spec: PipelineSpec, build_dir: Path, repo_dir: Path) -> None:
        from trimodal.runtime.pipeline import Preprocessor
        from trimodal.training.export import load_models

        self.spec = spec
        tokenizer = RepositoryLayout(Path(repo_dir)).tokenizer
        self.preprocess = Preprocessor(spec, tokenizer if tokenizer.exists() else tokenizer_source())
        self.infer = torch_infer(spec, load_models(spec, Path(build_dir)))

    def classify(self, image: bytes, text: bytes, audio: bytes) -> list[float]:
        """Class probabilities of one sample (empty bytes = absent modality).

        Raises:
            PreprocessError: for undecodable input or an all-empty sample.
        """
        from trimodal.runtime.pipeline import run_pipeline

        tensors = self.preprocess([image], [text], [audio])
        outputs = run_pipeline(self.spec, tensors, self.infer)
        return outputs[contract.POSTPROCESS][contract.PROBABILITIES][0].tolist()


def _decode(request: ClassifyRequest) -> tuple[bytes, bytes, bytes]:
    return (
        base64.b64decode(request.image) if request.image else b"",
        request.text.encode("utf-8") if request.text else b"",
        base64.b64decode(request.audio) if request.audio else b"",
    )


def create_app(spec: PipelineSpec, build_dir: Path, repo_dir: Path) -> Any:
    """The FastAPI application.

    Args:
        spec: the pipeline spec.
        build_dir: build folder with ``checkpoints/``.
        repo_dir: model repository (tokenizer).

    Returns:
        The app.
    """
    from fastapi import FastAPI, HTTPException

    model = NaiveModel(spec, build_dir, repo_dir)
    app = FastAPI(title="trimodal naive baseline")

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/classify")
    def classify(request: ClassifyRequest) -> dict[str, Any]:
        # A sync endpoint: Starlette runs it in its thread pool, as most FastAPI model servers do.
        try:
            probabilities = model.classify(*_decode(request))
        except (TrimodalError, ValueError) as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        return {"probabilities": probabilities, "label": spec.classes[best]}

    return app


ENV_PREFIX = "TRIMODAL_NAIVE_"  # how the uvicorn workers learn the folders (they import the app factory)


def app_from_env() -> Any:
    """The app, with the spec, build folder and repository from ``TRIMODAL_NAIVE_*`` (uvicorn's factory)."""
    import os

    from trimodal.spec import load_spec

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    spec_path = os.environ.get(f"{ENV_PREFIX}SPEC") or None
    layout = Layout.default(
        build_dir=Path(os.environ[f"{ENV_PREFIX}BUILD"]), repository=Path(os.environ[f"{ENV_PREFIX}REPOSITORY"]),
        spec=Path(spec_path) if spec_path else None,
    )  # fmt: skip
    return create_app(load_spec(layout.spec), layout.build.root, layout.repository.root)


cli = typer.Typer(add_completion=False, help="The naive FastAPI + PyTorch eager baseline server.")


@cli.command()
def main(
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8100,
    workers: Annotated[int, typer.Option(help="uvicorn worker processes.")] = 1,
    build_dir: BuildDirOption = None,
    repository: RepoOption = None,
    spec: SpecOption = None,
) -> None:
    """Serve the naive baseline with uvicorn on 127.0.0.1 (torch's default threads in every worker)."""
    import os

    import uvicorn

    with clean_errors():
        layout = Layout.default(build_dir=build_dir, repository=repository, spec=spec)
    os.environ[f"{ENV_PREFIX}BUILD"] = str(layout.build.root)
    os.environ[f"{ENV_PREFIX}REPOSITORY"] = str(layout.repository.root)
    os.environ[f"{ENV_PREFIX}SPEC"] = str(spec or "")
    uvicorn.run("trimodal.bench.naive_server:app_from_env", factory=True, host=host, port=port, workers=max(1, workers),
                log_level="warning", access_log=False)  # fmt: skip


if __name__ == "__main__":
    cli()
