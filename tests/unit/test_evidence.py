"""Every README figure equals its committed artifact, the committed artifacts agree with the build, and the
accuracy and parity gates can fail.

The README's figures live in marked regions rendered from the committed artifacts (trimodal/evidence/); a
figure edited by hand, or an artifact refreshed without ``trimodal evidence --write``, fails here.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import re
import shutil
from pathlib import Path

import pytest

from trimodal import contract
from trimodal.errors import EvidenceError
from trimodal.evidence import artifacts, documents
from trimodal.evidence.gates import accuracy_failures, parity_failures, rebuild_differences, same_machine
from trimodal.evidence.regions import regions, replace_regions, stale_regions
from trimodal.evidence.render import DOCUMENTS, RENDERERS, render_all
from trimodal.layout import Layout

LAYOUT = Layout.default()
README = LAYOUT.root / "README.md"
METRICS_KEYS = ("served_variant", "test_accuracy", "val_accuracy", "targets", "quality", "samples", "seed")
BUILD_STAGES = ("dataset", "train", "export", "precision")


def _built(name: str) -> Path:
    path = artifacts.build_path(name, LAYOUT)
    if not path.is_file():
        pytest.skip(f"{path} not written yet (by {artifacts.BY_NAME[name].written_by})")
    return path


# --- the documents ---------------------------------------------------------------------------------------


def test_every_readme_figure_region_matches_its_artifacts() -> None:
    assert documents.stale(LAYOUT) == {}, "run `trimodal evidence --write` (or `make evidence`) and commit"


def test_every_renderer_has_its_region() -> None:
    found = set()
    for name in DOCUMENTS:
        found |= set(regions((LAYOUT.root / name).read_text(encoding="utf-8")))
    assert found == set(RENDERERS)


def test_a_figure_edited_by_hand_fails() -> None:
    text, rendered = README.read_text(encoding="utf-8"), render_all(LAYOUT)
    body = regions(text)["accuracy"]
    figure = re.search(r"\| (\d+\.\d)% \|", body)  # the first accuracy figure of the table, whatever it is
    assert figure is not None, body
    edited = text.replace(body, body.replace(figure.group(0), f"| {float(figure.group(1)) + 0.1:.1f}% |", 1))
    assert edited != text
    assert stale_regions(edited, rendered) == ["accuracy"]
    assert stale_regions(replace_regions(edited, rendered), rendered) == []


def test_a_refreshed_artifact_makes_the_readme_stale(tmp_path: Path) -> None:
    """Change one committed figure (a copy of the project): the README region quoting it is stale."""
    for name in ("README.md", "benchmarks", "deploy"):
        source = LAYOUT.root / name
        (shutil.copytree if source.is_dir() else shutil.copyfile)(source, tmp_path / name)
    layout = dataclasses.replace(LAYOUT, root=tmp_path)
    assert documents.stale(layout) == {}
    parity = json.loads(artifacts.committed_path("parity", layout).read_text())
    parity["subsets"]["text"]["agreement"] = 0.9
    artifacts.committed_path("parity", layout).write_text(json.dumps(parity))
    stale = {tmp_path / "README.md": ["parity"], tmp_path / "benchmarks/accuracy/README.md": ["parity"]}
    assert documents.stale(layout) == stale  # deploy/KUBERNETES.md: still fresh
    assert documents.write(layout) == list(stale) and documents.stale(layout) == {}
    assert "**90.0% same prediction in every subset" in (tmp_path / "README.md").read_text()


def test_malformed_regions_are_refused() -> None:
    with pytest.raises(EvidenceError, match="unpaired"):
        regions("<!-- evidence:accuracy -->\nno end\n")
    with pytest.raises(EvidenceError, match="twice"):
        regions("<!-- evidence:a -->\nx\n<!-- /evidence -->\n<!-- evidence:a -->\ny\n<!-- /evidence -->\n")
    with pytest.raises(EvidenceError, match="no renderer for evidence region"):
        replace_regions("<!-- evidence:nothing -->\nx\n<!-- /evidence -->\n", {"accuracy": "y\n"})


def test_indented_regions_keep_their_markers() -> None:
    text = "- item\n  <!-- evidence:a -->\n  old\n  <!-- /evidence -->\nafter\n"
    assert (
        replace_regions(text, {"a": "  new\n"}) == "- item\n  <!-- evidence:a -->\n  new\n  <!-- /evidence -->\nafter\n"
    )


# --- committed copies vs the build ------------------------------------------------------------------------


def _committed_and_built_metrics() -> tuple[dict, dict]:
    built = json.loads(_built("metrics").read_text())
    return artifacts.load("metrics", LAYOUT), built


def _flat_accuracy(metrics: dict) -> dict[str, float]:
    return {f"{variant}/{subset}": value for variant, row in metrics["test_accuracy"].items()
            for subset, value in row.items()}  # fmt: skip


def test_committed_metrics_are_the_builds() -> None:
    """Same seeds on the same kind of machine: every accuracy and quality figure equal (only wall times differ).
    On another kind (other float kernels, other last bits) every test accuracy of every variant is within
    REBUILD_TOLERANCE and the served variant meets the same targets."""
    committed, built = _committed_and_built_metrics()
    if same_machine(committed, built):
        assert {key: committed[key] for key in METRICS_KEYS} == {key: built[key] for key in METRICS_KEYS}
        return
    for key in ("served_variant", "samples", "seed"):
        assert committed[key] == built[key], key
    assert rebuild_differences(_flat_accuracy(committed), _flat_accuracy(built)) == []
    served = committed["served_variant"]
    assert committed["targets"][served] == built["targets"][served]


def test_committed_parity_passes_the_gate_and_is_the_builds() -> None:
    committed = artifacts.load("parity", LAYOUT)
    assert parity_failures(committed) == []
    built = json.loads(_built("parity").read_text())
    if "subsets" not in built:
        pytest.skip("build/parity.json predates the per-subset comparison: run tests/integration/test_pipeline.py")
    assert parity_failures(built) == []
    accuracy = {name: row["accuracy_through_triton"] for name, row in built["subsets"].items()}
    committed_accuracy = {name: row["accuracy_through_triton"] for name, row in committed["subsets"].items()}
    if same_machine(*_committed_and_built_metrics()):
        assert accuracy == committed_accuracy
    else:
        assert rebuild_differences(committed_accuracy, accuracy) == []


def test_rebuild_comparison_can_fail() -> None:
    """A record-less file matches no machine; a figure moved past the tolerance, or missing, is reported."""
    machine = {"cpu": "Intel(R) Xeon(R) Processor", "isa": ["avx2", "avx512f"], "cores": 2}
    assert same_machine({"machine": machine}, {"machine": dict(machine)})
    assert not same_machine({}, {"machine": machine}) and not same_machine({}, {})
    assert not same_machine({"machine": machine}, {"machine": {**machine, "isa": ["avx2"]}})
    committed = {"image": 0.760, "text": 0.811}
    assert rebuild_differences(committed, {"image": 0.768, "text": 0.814}) == []
    assert rebuild_differences(committed, {"image": 0.800, "text": 0.811}) == [
        "image: committed 0.7600, built 0.8000 (> 0.03)"
    ]
    assert rebuild_differences(committed, {"image": 0.760}) == ["text: on one side only"]


def _merged_every_burst(counts: dict[str, dict[str, int]]) -> None:
    assert set(counts) == {*contract.PREPROCESSORS, *contract.ENCODERS, contract.POSTPROCESS}
    for model, row in counts.items():
        assert row["inferences"] == 32 and 1 <= row["executions"] <= 16, (model, row)


def test_committed_batching_merged_every_burst() -> None:
    _merged_every_burst(artifacts.load("batching", LAYOUT))  # the committed copy, whether or not a build wrote one
    _merged_every_burst(json.loads(_built("batching").read_text()))


def test_committed_build_timings_are_plausible() -> None:
    """Timings differ between machines and runs: every stage is recorded with a positive, sane duration."""
    committed = artifacts.load("timings", LAYOUT)
    built = json.loads(_built("timings").read_text())
    for timings in (committed, built):
        assert list(timings["stages"]) == [*BUILD_STAGES, "repository"]
        for stage in BUILD_STAGES:
            assert 0 < timings["stages"][stage]["last_run_seconds"] < 3600, (stage, timings["stages"][stage])
        assert timings["total_seconds"] >= sum(row["seconds"] for row in timings["stages"].values()) - 0.5


def test_collect_copies_what_the_build_wrote(tmp_path: Path) -> None:
    build = tmp_path / "build"
    (build / "reliability").mkdir(parents=True)
    (build / "batching.json").write_text('{"x": 1}')
    (build / "reliability" / "overload.json").write_text("{}")
    layout = dataclasses.replace(LAYOUT, root=tmp_path, build=dataclasses.replace(LAYOUT.build, root=build))
    assert artifacts.collect(layout) == [tmp_path / "benchmarks/evidence/batching.json"]
    assert artifacts.load("batching", layout) == {"x": 1}
    with pytest.raises(EvidenceError, match="missing"):
        artifacts.load("timings", layout)


# --- the gates can fail -----------------------------------------------------------------------------------


def _metrics(**accuracy: float) -> dict:
    base = {"image": 0.76, "text": 0.81, "audio": 0.81, "image+text": 0.94, "image+audio": 0.95, "text+audio": 0.96,
            "image+text+audio": 0.987}  # fmt: skip
    return {"served_variant": "attention-multitask", "test_accuracy": {"attention-multitask": {**base, **accuracy}}}


def test_accuracy_gates_pass_the_committed_model_and_fail_doctored_ones() -> None:
    assert accuracy_failures(artifacts.load("metrics", LAYOUT)) == []
    assert accuracy_failures(_metrics()) == []
    assert accuracy_failures(_metrics(**{"image+text+audio": 0.969})) == ["image+text+audio 0.969 < 0.97"]
    assert accuracy_failures(_metrics(audio=0.86, **{"image+text+audio": 0.96})) == [
        "image+text+audio 0.960 < 0.97", "audio alone 0.860 > 0.85"]  # fmt: skip
    assert accuracy_failures(_metrics(audio=0.86)) == ["audio alone 0.860 > 0.85"]  # 98.7 - 86.0 >= 10 points
    # With both other gates met the margin holds by itself (97 - 85 = 12 points): it fails with a strong modality.
    assert accuracy_failures(_metrics(text=0.88, **{"image+text+audio": 0.975})) == [
        "text alone 0.880 > 0.85", "image+text+audio 0.975 is not 0.10 above text 0.880"]  # fmt: skip
    # Exactly 10 points counts (0.95 - 0.85 is 0.0999... in floating point).
    assert accuracy_failures(_metrics(text=0.85, **{"image+text+audio": 0.95})) == ["image+text+audio 0.950 < 0.97"]


def test_parity_gate_fails_on_disagreement_drift_or_a_missing_subset() -> None:
    good = copy.deepcopy(artifacts.load("parity", LAYOUT))
    assert parity_failures(good) == []
    bad = copy.deepcopy(good)
    bad["subsets"]["audio"]["agreement"] = 0.994
    bad["subsets"]["image"]["max_abs_diff"] = 2e-4
    del bad["subsets"]["text"]
    assert parity_failures(bad) == ["6 modality subsets compared, not 7", "image: max |p - p'| 2.0e-04 > 1e-04",
                                    "audio: same prediction on 0.9940 < 0.995"]  # fmt: skip
