"""The baseline a user might write instead of Triton: FastAPI + uvicorn + PyTorch eager, one request at a time.

Same weights (``build/checkpoints``, loaded like :mod:`trimodal.training.export` does), same preprocessing
(:mod:`trimodal.runtime.preprocess`), same answer (class probabilities). The handler is ``async`` and runs the
models inline, so uvicorn's single worker serves exactly one request at a time: no batching, no overlap.
That is deliberate (it is the naive server); the benchmark does not tune it.

    python -m trimodal.bench.naive_server --port 8100 [--build-dir build] [--spec pipeline.yaml] [--torch-threads 1]

API: ``POST /classify`` with ``{"image": base64|null, "text": str|null, "audio": base64|null}`` ->
``{"probabilities": [...], "label": name}``; ``GET /health`` -> 200 when loaded.
"""

from __future__ import annotations

import argparse
import base64
import logging
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from trimodal.errors import TrimodalError

LOGGER = logging.getLogger(__name__)


class ClassifyRequest(BaseModel):
    """Body of ``POST /classify``: base64 image and audio files, UTF-8 text; None = absent."""

    image: str | None = None
    text: str | None = None
    audio: str | None = None


class NaiveModel:
    """The four torch models + preprocessing; ``classify`` runs one sample in eager mode.

    Args:
        spec: the pipeline spec.
        build_dir: build folder with ``checkpoints/``.
        repo_dir: model repository (for the served tokenizer.json).
    """

    def __init__(self, spec: Any, build_dir: Path, repo_dir: Path) -> None:
        import torch

        from trimodal.layout import tokenizer_source
        from trimodal.runtime.preprocess import TextPreprocessor
        from trimodal.training.export import _build_models

        self.torch = torch
        self.spec = spec
        self.models = _build_models(spec, Path(build_dir))
        tokenizer = repo_dir / "preprocess_text" / "1" / "tokenizer.json"
        self.tokenize = TextPreprocessor(spec.modalities.text, tokenizer if tokenizer.exists() else tokenizer_source())

    def classify(self, image: bytes, text: bytes, audio: bytes) -> list[float]:
        """Class probabilities of one sample (empty bytes = absent modality).

        Raises:
            PreprocessError: for undecodable input or an all-empty sample.
        """
        from trimodal.errors import PreprocessError
        from trimodal.runtime.preprocess import preprocess_audio, preprocess_images

        torch = self.torch
        modalities = self.spec.modalities
        image_tensor, image_mask = preprocess_images([image], modalities.image)
        ids, attention, text_mask = self.tokenize([text])
        audio_tensor, audio_mask = preprocess_audio([audio], modalities.audio)
        if float(image_mask.sum() + text_mask.sum() + audio_mask.sum()) == 0.0:
            raise PreprocessError("IMAGE, TEXT, AUDIO: every modality is empty; expected at least one")
        with torch.inference_mode():
            image_features = self.models["image_encoder"](torch.from_numpy(image_tensor))
            text_features = self.models["text_encoder"](torch.from_numpy(ids), torch.from_numpy(attention))
            audio_features = self.models["audio_encoder"](torch.from_numpy(audio_tensor))
            outputs = self.models["fusion_classifier"](
                image_features, text_features, audio_features,
                torch.from_numpy(image_mask), torch.from_numpy(text_mask), torch.from_numpy(audio_mask),
            )  # fmt: skip
        probabilities = outputs[0] if isinstance(outputs, tuple | list) else outputs
        return probabilities[0].tolist()


def create_app(spec: Any, build_dir: Path, repo_dir: Path) -> Any:
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
    async def classify(request: ClassifyRequest) -> dict[str, Any]:
        # Inline on the event loop on purpose: one request at a time, like the naive server it stands for.
        try:
            probabilities = model.classify(
                base64.b64decode(request.image) if request.image else b"",
                request.text.encode("utf-8") if request.text else b"",
                base64.b64decode(request.audio) if request.audio else b"",
            )
        except (TrimodalError, ValueError) as exc:
            raise HTTPException(status_code=400, detail=str(exc)) from None
        best = max(range(len(probabilities)), key=probabilities.__getitem__)
        return {"probabilities": probabilities, "label": spec.classes[best]}

    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the naive baseline with uvicorn (one worker) on 127.0.0.1."""
    import uvicorn

    from trimodal.spec import load_spec
    from trimodal.triton.repository import DEFAULT_REPOSITORY

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8100)
    parser.add_argument("--build-dir", type=Path, default=Path("build"))
    parser.add_argument("--repository", type=Path, default=DEFAULT_REPOSITORY)
    parser.add_argument("--spec", type=Path, default=None)
    parser.add_argument(
        "--torch-threads", type=int, default=1,
        help="torch intra-op threads (1 = the same per-model thread budget as the Triton CPU instances; torch's "
        "default of one OpenMP thread per core collapses when the cores are shared with a load generator)",
    )  # fmt: skip
    args = parser.parse_args(argv)
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(load_spec(args.spec), args.build_dir, args.repository)
    uvicorn.run(app, host=args.host, port=args.port, workers=1, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
