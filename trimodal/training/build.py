"""The CPU build: dataset -> training -> ONNX export -> model repository, each step cached by a stamp.

A step is skipped when its stamp (a hash of the spec and of the source code that produces the step's
outputs) matches and its outputs exist, so a second ``make run`` reuses everything.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from trimodal.spec import PipelineSpec
from trimodal.triton.repository import DEFAULT_REPOSITORY, install_artifacts, render

LOGGER = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
DEFAULT_BUILD_DIR = PACKAGE_DIR.parent / "build"


def _source_digest(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(PACKAGE_DIR)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


# The parts of the spec that change what is trained and exported (serving and engine settings do not).
MODEL_FIELDS = {"seed", "classes", "dataset", "modalities", "fusion", "training"}


def step_stamp(spec: PipelineSpec, sources: Iterable[Path]) -> str:
    """Hash of the model-defining spec fields and the given sources: a step reruns when it changes."""
    digest = hashlib.sha256(spec.model_dump_json(include=MODEL_FIELDS).encode())
    digest.update(_source_digest(sources).encode())
    return digest.hexdigest()


TRAIN_SOURCES = [PACKAGE_DIR / "data", PACKAGE_DIR / "models", PACKAGE_DIR / "train.py"]
EXPORT_SOURCES = [*TRAIN_SOURCES, PACKAGE_DIR / "export.py", PACKAGE_DIR / "contract.py"]


def _run_step(
    name: str, stamp: str, build_dir: Path, outputs: list[Path], action: Callable[[], object], force: bool
) -> bool:
    stamp_file = build_dir / "stamps" / f"{name}.json"
    fresh = not force and stamp_file.exists() and all(path.exists() for path in outputs)
    if fresh and json.loads(stamp_file.read_text()).get("stamp") == stamp:
        LOGGER.info("%s: up to date (skipped)", name)
        return False
    LOGGER.info("%s: running", name)
    started = time.perf_counter()
    action()
    elapsed = time.perf_counter() - started
    stamp_file.parent.mkdir(parents=True, exist_ok=True)
    stamp_file.write_text(json.dumps({"stamp": stamp, "seconds": round(elapsed, 1)}))
    LOGGER.info("%s: done in %.1f s", name, elapsed)
    return True


def build_cpu(
    spec: PipelineSpec,
    build_dir: Path = DEFAULT_BUILD_DIR,
    repo_dir: Path = DEFAULT_REPOSITORY,
    *,
    force: bool = False,
    progress: bool = True,
) -> dict[str, bool]:
    """Build everything the CPU target serves.

    Args:
        spec: the pipeline spec.
        build_dir: where data, checkpoints and ONNX files go.
        repo_dir: the model repository to fill.
        force: rerun every step.
        progress: show progress bars.

    Returns:
        Step name -> whether it ran (False = reused).
    """
    from trimodal.training.data.dataset import generate_dataset
    from trimodal.training.export import export_all
    from trimodal.training.train import train_all

    build_dir.mkdir(parents=True, exist_ok=True)
    ran = {}
    generate_dataset(spec, build_dir, force=force, progress=progress)
    checkpoints = build_dir / "checkpoints"
    ran["train"] = _run_step(
        "train",
        step_stamp(spec, TRAIN_SOURCES),
        build_dir,
        [checkpoints / "image_encoder.pt", checkpoints / "audio_encoder.pt", build_dir / "metrics.json"],
        lambda: train_all(spec, build_dir, progress=progress),
        force,
    )
    onnx_dir = build_dir / "onnx"
    models = ["image_encoder", "text_encoder", "audio_encoder", "fusion_classifier"]
    ran["export"] = _run_step(
        "export",
        step_stamp(spec, EXPORT_SOURCES),
        build_dir,
        [onnx_dir / f"{model}.onnx" for model in models],
        lambda: export_all(spec, build_dir),
        force or ran["train"],
    )
    render(spec, repo_dir)
    install_artifacts(build_dir, repo_dir)
    return ran
