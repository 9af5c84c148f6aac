"""``metrics.json`` and ``metrics.md``, written by the training.

The markdown holds the accuracy per modality subset, multi-task vs single-task, robustness, conflict
detection and the targets.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from trimodal.spec import MODALITIES
from trimodal.training.evaluate import modality_subsets, subset_name

LOGGER = logging.getLogger(__name__)

METRICS_JSON = "metrics.json"
METRICS_MD = "metrics.md"
FULL = subset_name(MODALITIES)


def _pct(value: float) -> str:
    return f"{100 * value:.1f}%"


def column_label(variant: str, metrics: dict[str, Any]) -> str:
    """A table header for a fusion variant: ``attention (served, multi-task)``, ``attention, single-task``, ..."""
    strategy, _, kind = variant.partition("-")
    notes = ["served"] if variant == metrics["served_variant"] else []
    if strategy == metrics["served_strategy"]:
        notes.append("multi-task" if kind == "multitask" else "single-task")
    if variant == metrics["served_variant"]:
        return f"{strategy} ({', '.join(notes)})"
    return ", ".join([strategy, *notes])


def accuracy_table(metrics: dict[str, Any]) -> list[str]:
    """Subset rows x variant columns of the test accuracy."""
    test = metrics["test_accuracy"]
    variants = list(test)
    mode = "multi-task" if metrics["auxiliary_losses"] else "single-task"
    lines = [
        "# Test accuracy per modality subset",
        "",
        f"Served: **{column_label(metrics['served_variant'], metrics)}** (`fusion.strategy`, "
        "`multitask.auxiliary_losses` in pipeline.yaml). Absent modalities are sent exactly as the server sees",
        "them (encoder run on the preprocessed empty element, mask 0). "
        f"Test samples: {metrics['samples']['test']}. Every strategy is trained {mode}; the served strategy also",
        "the other way, with the same seeds.",
        "",
        "| modalities | " + " | ".join(column_label(v, metrics) for v in variants) + " |",
        "|---|" + "---:|" * len(variants),
    ]
    for subset in modality_subsets():
        name = subset_name(subset)
        lines.append(f"| {name} | " + " | ".join(_pct(test[v][name]) for v in variants) + " |")
    return lines


def _quality_summary(quality: dict[str, Any]) -> dict[str, float]:
    robust = quality["robustness"]
    conflict = quality["conflict"]["test"]
    drops = [robust["clean"]["image"] - row["image"] for name, row in robust.items() if name != "clean"]
    return {
        "drop": max(drops),
        "flagged": min(row["flagged"] for row in conflict.values() if row["mismatched"]),
        "false": max(row["flagged"] for row in conflict.values() if not row["mismatched"]),
    }


def multitask_table(metrics: dict[str, Any]) -> list[str]:
    """Multi-task vs single-task learning of the served strategy, and which one is served."""
    strategy = metrics["served_strategy"]
    variants = [f"{strategy}-multitask", f"{strategy}-single"]
    test, fusion = metrics["test_accuracy"], metrics["fusion"]
    summary = {v: _quality_summary(metrics["quality"][v]) for v in variants}
    rows = [
        (
            "validation: mean over the 7 subsets (selects)",
            [_pct(fusion[v]["val_mean_subset_accuracy"]) for v in variants],
        ),
        ("test: mean over the 7 subsets", [_pct(float(np.mean(list(test[v].values())))) for v in variants]),
        ("test: image+text+audio", [_pct(test[v][FULL]) for v in variants]),
        ("test: image / text / audio alone", [" / ".join(_pct(test[v][m]) for m in MODALITIES) for v in variants]),
        ("robustness: largest image-alone drop", [f"{100 * summary[v]['drop']:.1f} points" for v in variants]),
        ("conflicts: lowest flagged, mismatched sets", [_pct(summary[v]["flagged"]) for v in variants]),
        ("conflicts: highest flagged, matched sets", [_pct(summary[v]["false"]) for v in variants]),
    ]
    better = max(variants, key=lambda v: fusion[v]["val_mean_subset_accuracy"])
    lines = [
        "",
        f"## Multi-task vs single-task ({strategy}, same seeds)",
        "",
        "Multi-task: the per-modality heads' losses also train the projections they share with the fusion.",
        "Single-task: the same heads on detached projections (the fused prediction alone shapes the model).",
        "",
        "| | multi-task | single-task |",
        "|---|---:|---:|",
        *[f"| {label} | {' | '.join(values)} |" for label, values in rows],
        "",
        f"Better on validation: **{column_label(better, metrics)}**; served: "
        f"**{column_label(metrics['served_variant'], metrics)}**.",
    ]
    return lines


def robustness_table(metrics: dict[str, Any]) -> list[str]:
    """Image alone and all three modalities on each robustness variant (served variant)."""
    robust = metrics["quality"][metrics["served_variant"]]["robustness"]
    clean = robust["clean"]
    lines = [
        "",
        "## Robustness (held-out variants of the test images, served model)",
        "",
        "Every test image transformed (`trimodal/training/data/robustness.py`); text, audio and labels unchanged.",
        "",
        "| images | image alone | vs clean | image+text+audio |",
        "|---|---:|---:|---:|",
    ]
    for name, row in robust.items():
        delta = "" if name == "clean" else f"{100 * (row['image'] - clean['image']):+.1f}"
        label = "clean (test split)" if name == "clean" else name
        lines.append(f"| {label} | {_pct(row['image'])} | {delta} | {_pct(row[FULL])} |")
    return lines


def conflict_table(metrics: dict[str, Any]) -> list[str]:
    """Flagged share of every matched and mismatched set (served variant, test split)."""
    conflict = metrics["quality"][metrics["served_variant"]]["conflict"]["test"]
    lines = [
        "",
        f"## Conflict detection (served model, test split, `CONFLICT` at score >= {metrics['conflict_threshold']:g})",
        "",
        "Mismatched: one modality from a sample of another class (modalities the dataset destroyed left out);",
        "matched: every sample as it is.",
        "",
        "| set | samples | flagged | top classes agree |",
        "|---|---:|---:|---:|",
    ]
    for name, row in conflict.items():
        lines.append(f"| {name} | {row['samples']} | {_pct(row['flagged'])} | {_pct(row['agreement'])} |")
    return lines


def targets_list(metrics: dict[str, Any]) -> list[str]:
    """The served variant's targets as a checklist."""
    served = metrics["served_variant"]
    lines = ["", f"## Targets ({column_label(served, metrics)})", ""]
    for target, met in metrics["targets"][served].items():
        lines.append(f"- [{'x' if met else ' '}] {target}")
    return lines


def encoders_list(metrics: dict[str, Any]) -> list[str]:
    """The encoders' pretraining accuracy and the training wall time."""
    enc = metrics["encoders"]
    return [
        "",
        "## Encoders (temporary linear head, validation accuracy)",
        "",
        f"- image: {_pct(enc['image']['val_accuracy'])} (train {_pct(enc['image']['train_accuracy'])}, "
        "augmented while training)",
        f"- audio: {_pct(enc['audio']['val_accuracy'])} (train {_pct(enc['audio']['train_accuracy'])})",
        "",
        f"Training wall time: {metrics['seconds']['total']:.0f} s with {metrics['torch_threads']} torch CPU thread(s).",
        "",
    ]


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """Render ``metrics.md`` from the metrics dictionary.

    Args:
        metrics: the dictionary written to ``metrics.json`` (see :func:`trimodal.training.train.train_all`).

    Returns:
        Markdown text.
    """
    sections = [accuracy_table, multitask_table, robustness_table, conflict_table, targets_list, encoders_list]
    return "\n".join(line for section in sections for line in section(metrics))


def write_metrics(build_dir: Path, metrics: dict[str, Any]) -> None:
    """Write ``metrics.json`` and ``metrics.md`` into the build folder and warn about missed targets.

    Args:
        build_dir: the build folder.
        metrics: the training metrics (see :func:`trimodal.training.train.train_all`).
    """
    (build_dir / METRICS_JSON).write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (build_dir / METRICS_MD).write_text(metrics_markdown(metrics), encoding="utf-8")
    served = metrics["served_variant"]
    missed = [target for target, met in metrics["targets"][served].items() if not met]
    if missed:
        LOGGER.warning("acceptance targets missed by %s: %s", served, "; ".join(missed))
