"""The accuracy and parity gates that ``make test`` asserts (on ``build/metrics.json`` and ``build/parity.json``).

Each gate returns the list of what failed, with the numbers, so a test asserts it is empty and a companion
test feeds it doctored figures to show that it can fail.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from trimodal.spec import MODALITIES

ALL_THREE_MIN = 0.97
SINGLE_MAX = 0.85
FUSION_MARGIN = 0.10
PARITY_MIN_AGREEMENT = 0.995
PARITY_MAX_DIFF = 1e-4
FULL = "+".join(MODALITIES)
SUBSETS = 7
REBUILD_TOLERANCE = 0.03
"""How far a figure of a rebuild on another kind of machine may be from the committed one: same seeds, other
float kernels (AMD EPYC vs Intel Xeon measured up to 0.019 apart on one single-modality subset, 0.012 across every
variant's fp32 test accuracies)."""


def served_accuracy(metrics: Mapping[str, Any]) -> dict[str, float]:
    """Test accuracy per modality subset of the served variant (``{subset: accuracy}``)."""
    return dict(metrics["test_accuracy"][metrics["served_variant"]])


def accuracy_failures(metrics: Mapping[str, Any]) -> list[str]:
    """The accuracy gates on the served model's test accuracies (the dataset's design).

    All three modalities >= 97%; every single modality <= 85% (no modality alone is near-perfect); all three
    at least 10 points above the best single modality.

    Args:
        metrics: ``build/metrics.json`` (``served_variant`` and ``test_accuracy``).

    Returns:
        One message per failed gate; empty when every gate holds.
    """
    accuracy = served_accuracy(metrics)
    singles = {modality: accuracy[modality] for modality in MODALITIES}
    best = max(singles, key=lambda modality: singles[modality])
    failures = []
    if accuracy[FULL] < ALL_THREE_MIN:
        failures.append(f"{FULL} {accuracy[FULL]:.3f} < {ALL_THREE_MIN}")
    failures += [f"{modality} alone {value:.3f} > {SINGLE_MAX}" for modality, value in singles.items()
                 if value > SINGLE_MAX]  # fmt: skip
    # Rounded: accuracies are multiples of 1/samples, and 0.96 - 0.86 must count as 10 points.
    if round(accuracy[FULL] - singles[best], 6) < FUSION_MARGIN:
        failures.append(f"{FULL} {accuracy[FULL]:.3f} is not {FUSION_MARGIN:.2f} above {best} {singles[best]:.3f}")
    return failures


def parity_failures(parity: Mapping[str, Any]) -> list[str]:
    """The served == offline gate: every modality subset, same prediction on >= 99.5%, probabilities within 1e-4.

    Args:
        parity: ``build/parity.json`` (``subsets``: ``{subset: {samples, agreement, max_abs_diff, ...}}``).

    Returns:
        One message per failed gate; empty when it holds for every subset.
    """
    subsets = parity.get("subsets", {})
    failures = [] if len(subsets) == SUBSETS else [f"{len(subsets)} modality subsets compared, not {SUBSETS}"]
    for name, row in subsets.items():
        if row["agreement"] < PARITY_MIN_AGREEMENT:
            failures.append(f"{name}: same prediction on {row['agreement']:.4f} < {PARITY_MIN_AGREEMENT}")
        if row["max_abs_diff"] > PARITY_MAX_DIFF:
            failures.append(f"{name}: max |p - p'| {row['max_abs_diff']:.1e} > {PARITY_MAX_DIFF:.0e}")
    return failures


def same_machine(committed: Mapping[str, Any], built: Mapping[str, Any]) -> bool:
    """Whether two ``metrics.json`` were trained on the same kind of machine (:func:`trimodal.machine.fingerprint`).

    A file without the record (written before builds recorded it) matches nothing.
    """
    machine = committed.get("machine")
    return machine is not None and machine.get("cpu") != "?" and machine == built.get("machine")


def rebuild_differences(
    committed: Mapping[str, float], built: Mapping[str, float], tolerance: float = REBUILD_TOLERANCE
) -> list[str]:
    """Figures of a rebuild on another kind of machine that are missing or too far from the committed ones.

    Args:
        committed: ``{name: accuracy}`` from the committed artifact.
        built: the same figures from this machine's build.
        tolerance: the largest difference accepted (a fraction: 0.03 = 3 points).

    Returns:
        One message per figure that differs more (or exists on one side only); empty when all are close.
    """
    failures = [f"{name}: on one side only" for name in sorted(set(committed) ^ set(built))]
    for name in sorted(set(committed) & set(built)):
        if abs(committed[name] - built[name]) > tolerance:
            failures.append(f"{name}: committed {committed[name]:.4f}, built {built[name]:.4f} (> {tolerance})")
    return failures
