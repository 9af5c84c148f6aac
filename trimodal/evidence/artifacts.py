"""Which build output is committed where, and the copy from ``build/`` into the committed folders.

``build/`` is git-ignored; the README's figures are rendered from the committed copies, so each figure can be
traced to a file in the repository. ``trimodal evidence --collect`` (``make evidence``) refreshes the copies
from the current build and test runs.
"""

from __future__ import annotations

import json
import logging
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trimodal.errors import EvidenceError
from trimodal.layout import Layout

LOGGER = logging.getLogger(__name__)

RESULTS_DIR = Path("benchmarks") / "results"
RESULTS_FILE = "results.json"
TEXT_COSTS = Path("benchmarks") / "precision" / "text_encoder_costs.json"
CPU_SHARE = Path("benchmarks") / "cpu" / "cpu_share.json"
BATCH_COST = Path("benchmarks") / "cpu" / "batch_cost.json"


@dataclass(frozen=True)
class Artifact:
    """One build output and its committed copy.

    Attributes:
        name: the key the renderers use.
        build: path relative to the build folder (a folder copies every ``*.json`` in it).
        committed: path relative to the project root.
        written_by: what produces it (shown in errors).
        collected: whether ``collect`` copies it (the reliability figures are copied by hand after a chosen run,
            with benchmarks/RELIABILITY.md rewritten from them, so a later short run does not replace them).
    """

    name: str
    build: str
    committed: str
    written_by: str
    collected: bool = True


ARTIFACTS: tuple[Artifact, ...] = (
    Artifact("metrics", "metrics.json", "benchmarks/accuracy/metrics.json", "`trimodal build` (training)"),
    Artifact("metrics-md", "metrics.md", "benchmarks/accuracy/metrics.md", "`trimodal build` (training)"),
    Artifact("parity", "parity.json", "benchmarks/accuracy/parity.json",
             "tests/integration/test_pipeline.py::test_every_modality_subset_matches_in_process_onnxruntime"),
    Artifact("parity-agreement", "parity_agreement.json", "benchmarks/accuracy/parity_agreement.json",
             "tests/integration/test_pipeline.py::test_agreement_outputs_match_in_process"),
    Artifact("batching", "batching.json", "benchmarks/evidence/batching.json",
             "tests/integration/test_pipeline.py::test_dynamic_batching_merges_concurrent_requests"),
    Artifact("timings", "timings.json", "benchmarks/evidence/build_timings.json", "`trimodal build`"),
    Artifact("precision", "precision.json", "benchmarks/precision/precision.json", "`trimodal build` (precision)"),
    Artifact("precision-md", "precision.md", "benchmarks/precision/precision.md", "`trimodal build` (precision)"),
    Artifact("reliability", "reliability", "benchmarks/reliability", "tests/integration reliability tests", False),
)  # fmt: skip
BY_NAME = {artifact.name: artifact for artifact in ARTIFACTS}


def committed_path(name: str, layout: Layout | None = None) -> Path:
    """The committed copy of artifact ``name``."""
    return (layout or Layout.default()).root / BY_NAME[name].committed


def build_path(name: str, layout: Layout | None = None) -> Path:
    """Where the build (or a test) writes artifact ``name``."""
    return (layout or Layout.default()).build.root / BY_NAME[name].build


def read_json(path: Path) -> Any:
    """A JSON artifact.

    Raises:
        EvidenceError: if it is missing or not JSON.
    """
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise EvidenceError(f"{path}: missing (see trimodal/evidence/artifacts.py for what writes it)") from exc
    except ValueError as exc:
        raise EvidenceError(f"{path}: not JSON ({exc})") from exc


def load(name: str, layout: Layout | None = None) -> Any:
    """The committed copy of JSON artifact ``name`` (a folder artifact: ``{file stem: content}``)."""
    path = committed_path(name, layout)
    if path.is_dir():
        return {file.stem: read_json(file) for file in sorted(path.glob("*.json"))}
    return read_json(path)


def latest_results(layout: Layout | None = None) -> Path:
    """The newest benchmark results folder (by name: timestamps sort) that holds a results.json.

    Raises:
        EvidenceError: if there is none.
    """
    root = (layout or Layout.default()).root / RESULTS_DIR
    folders = sorted(path.parent for path in root.glob(f"*/{RESULTS_FILE}"))
    if not folders:
        raise EvidenceError(f"no benchmark results under {root}: run `trimodal bench` first")
    return folders[-1]


def collect(layout: Layout | None = None) -> list[Path]:
    """Copy every artifact the build and the tests have written into its committed place.

    Artifacts not written yet are left as committed (logged); the reliability figures are not collected (see
    :class:`Artifact`).

    Args:
        layout: the project layout (default: this checkout).

    Returns:
        The committed paths that were written.
    """
    layout = layout or Layout.default()
    written = []
    for artifact in (artifact for artifact in ARTIFACTS if artifact.collected):
        source, target = build_path(artifact.name, layout), committed_path(artifact.name, layout)
        files = sorted(source.glob("*.json")) if source.is_dir() else [source] if source.is_file() else []
        if not files:
            LOGGER.info(
                "%s: not in %s (written by %s); committed copy kept", artifact.name, source, artifact.written_by
            )
            continue
        for file in files:
            destination = target / file.name if source.is_dir() else target
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(file, destination)
            written.append(destination)
    return written
