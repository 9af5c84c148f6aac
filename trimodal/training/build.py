"""The CPU build: dataset -> training -> ONNX export -> precision graphs -> model repository, each step cached.

A step is skipped when its stamp (a hash of the spec and of the source code that produces the step's
outputs) matches and its outputs exist, so a second ``make run`` reuses everything. Stamps live in
``build/stamps/<step>.json``. Every build writes ``build/timings.json``: the seconds of each stage in this
invocation, whether it ran, and how long it took the last time it ran (from its stamp).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from trimodal.contract import ENCODERS
from trimodal.layout import BuildLayout
from trimodal.spec import PRECISIONS, PipelineSpec

LOGGER = logging.getLogger(__name__)

TRAINING_DIR = Path(__file__).resolve().parent
PACKAGE_DIR = TRAINING_DIR.parent
"""The ``trimodal`` package; source paths are hashed relative to it, so stamps do not depend on the checkout."""

TIMINGS_JSON = "timings.json"

# The parts of the spec that change what is trained and exported (serving and engine settings do not).
MODEL_FIELDS = {"seed", "classes", "dataset", "modalities", "fusion", "multitask", "training"}

TRAIN_MODULES: tuple[str, ...] = (
    "features.py", "loop.py", "augment.py", "encoders.py", "heads.py", "evaluate.py", "quality.py", "report.py",
    "train.py",
)  # fmt: skip
TRAIN_SOURCES: list[Path] = [
    TRAINING_DIR / "data",
    TRAINING_DIR / "models",
    *(TRAINING_DIR / module for module in TRAIN_MODULES),
    # What the models are trained on: the server's preprocessing, keyed and cast by the contract.
    PACKAGE_DIR / "contract.py",
    PACKAGE_DIR / "runtime" / "preprocess.py",
    PACKAGE_DIR / "runtime" / "normalize.py",
    PACKAGE_DIR / "runtime" / "pipeline.py",
    # What the quality metrics are computed with: the served postprocess step.
    PACKAGE_DIR / "runtime" / "agreement.py",
]
EXPORT_SOURCES: list[Path] = [*TRAIN_SOURCES, TRAINING_DIR / "export.py"]
PRECISION_SOURCES: list[Path] = [
    *EXPORT_SOURCES,
    TRAINING_DIR / "compress.py",
    TRAINING_DIR / "precision.py",
    PACKAGE_DIR / "runtime" / "sessions.py",
]


def _source_digest(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in sorted(paths):
        files = sorted(path.rglob("*.py")) if path.is_dir() else [path]
        for file in files:
            digest.update(str(file.relative_to(PACKAGE_DIR)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def step_stamp(spec: PipelineSpec, sources: Iterable[Path]) -> str:
    """Hash of the model-defining spec fields and the given sources: a step reruns when it changes.

    Args:
        spec: the pipeline spec.
        sources: files and folders (every ``*.py`` below) whose code produces the step's outputs.

    Returns:
        A hex digest.
    """
    digest = hashlib.sha256(spec.model_dump_json(include=MODEL_FIELDS).encode())
    digest.update(_source_digest(sources).encode())
    return digest.hexdigest()


def precision_stamp(spec: PipelineSpec) -> str:
    """Stamp of the precision step: its sources, the model fields and the served precisions (measured columns)."""
    digest = hashlib.sha256(step_stamp(spec, PRECISION_SOURCES).encode())
    digest.update(spec.precision.model_dump_json().encode())
    return digest.hexdigest()


def _run_step(
    name: str, stamp: str, build: BuildLayout, outputs: list[Path], action: Callable[[], object], force: bool
) -> bool:
    """Run ``action`` unless the stamp of step ``name`` matches and every output exists; True if it ran."""
    stamp_file = build.stamps / f"{name}.json"
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
    spec: PipelineSpec, build_dir: Path, repo_dir: Path, *, force: bool = False, progress: bool = True
) -> dict[str, bool]:
    """Build everything the CPU target serves.

    Args:
        spec: the pipeline spec.
        build_dir: where data, checkpoints and ONNX files go (``Layout.default().build.root``).
        repo_dir: the model repository to fill (``Layout.default().repository.root``).
        force: rerun every step.
        progress: show progress bars.

    Returns:
        Step name -> whether it ran (False = reused).
    """
    from trimodal.training.data.dataset import generate_dataset
    from trimodal.training.export import export_all
    from trimodal.training.models import TRAINED_MODALITIES, encoder_name
    from trimodal.training.precision import PRECISION_JSON, build_precision
    from trimodal.training.report import METRICS_JSON
    from trimodal.training.train import train_all
    from trimodal.triton.install import install_artifacts
    from trimodal.triton.repository import render

    build = BuildLayout(Path(build_dir))
    build.root.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    seconds: dict[str, float] = {}
    generate_dataset(spec, build.root, force=force, progress=progress)
    seconds["dataset"] = time.perf_counter() - started
    trained = [build.checkpoint(encoder_name(modality)) for modality in TRAINED_MODALITIES]
    mark = time.perf_counter()
    ran = {
        "train": _run_step(
            "train",
            step_stamp(spec, TRAIN_SOURCES),
            build,
            [*trained, build.root / METRICS_JSON],
            lambda: train_all(spec, build.root, progress=progress),
            force,
        )
    }
    seconds["train"], mark = time.perf_counter() - mark, time.perf_counter()
    ran["export"] = _run_step(
        "export",
        step_stamp(spec, EXPORT_SOURCES),
        build,
        [build.onnx_file(model) for model in ENCODERS],
        lambda: export_all(spec, build.root),
        force or ran["train"],
    )
    seconds["export"], mark = time.perf_counter() - mark, time.perf_counter()
    ran["precision"] = _run_step(
        "precision",
        precision_stamp(spec),
        build,
        [build.onnx_file(m, p) for m in ENCODERS for p in PRECISIONS] + [build.root / PRECISION_JSON],
        lambda: build_precision(spec, build.root),
        force or ran["export"],
    )
    seconds["precision"], mark = time.perf_counter() - mark, time.perf_counter()
    render(spec, Path(repo_dir))
    install_artifacts(build.root, Path(repo_dir))
    seconds["repository"] = time.perf_counter() - mark
    write_timings(build, {"dataset": None, **ran}, seconds, time.perf_counter() - started)
    return ran


def _last_run_seconds(build: BuildLayout, stage: str) -> float | None:
    """How long ``stage`` took the last time it ran, from its stamp (the dataset's own, or ``stamps/<stage>.json``)."""
    stamp = build.data / "stamp.json" if stage == "dataset" else build.stamps / f"{stage}.json"
    if not stamp.is_file():
        return None
    recorded = json.loads(stamp.read_text()).get("seconds")
    return None if recorded is None else round(float(recorded), 1)


def write_timings(build: BuildLayout, ran: dict[str, bool | None], seconds: dict[str, float], total: float) -> Path:
    """Record the stage timings of one build in ``build/timings.json``.

    Args:
        build: the build layout.
        ran: stage -> whether it ran in this invocation (None: the stage decides itself, e.g. the dataset).
        seconds: stage -> wall seconds in this invocation (reused stages take about no time).
        total: wall seconds of the whole invocation.

    Returns:
        The written file.
    """
    stages = {
        stage: {
            "seconds": round(seconds[stage], 1),
            "ran": ran.get(stage),
            "last_run_seconds": _last_run_seconds(build, stage),
        }
        for stage in seconds
    }
    path = build.root / TIMINGS_JSON
    path.write_text(json.dumps({"stages": stages, "total_seconds": round(total, 1)}, indent=2) + "\n")
    return path
