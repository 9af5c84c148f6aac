"""The ensemble end to end on the real Triton server over real gRPC (CPU target)."""

import asyncio
import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from raw_grpc import bytes_tensor, infer_raw
from tritonclient.utils import InferenceServerException

from trimodal import contract
from trimodal.client import Sample, TrimodalClient, classify_many, classify_many_async
from trimodal.errors import ClientError
from trimodal.layout import Layout
from trimodal.spec import MODALITIES

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
COMPOSING = [*contract.PREPROCESSORS, *contract.ENCODERS, contract.POSTPROCESS]
REPOSITORY = Layout.default().repository.root
SUBSETS = ["itx", "i", "t", "x", "it", "ix", "tx"]
LETTERS = dict(zip("itx", MODALITIES, strict=True))


def _sample(split, i: int, keep: str = "itx") -> Sample:
    return Sample(
        image=split.images[i] if "i" in keep else None,
        text=split.texts[i] if "t" in keep else None,
        audio=split.audio[i] if "x" in keep else None,
    )


def _clean_indices(split, n: int) -> list[int]:
    return [i for i in range(len(split)) if not split.corrupted[i].any()][:n]


def test_classify_one_sample_all_modalities(server, spec, test_split) -> None:
    i = _clean_indices(test_split, 1)[0]
    with TrimodalClient(server.config.grpc_url, timeout_s=30) as client:
        assert client.is_ready()
        result = client.classify(_sample(test_split, i), top_k=3)
    assert result.label == spec.classes[int(test_split.labels[i])]
    assert result.probabilities.shape == (spec.num_classes,)
    assert abs(float(result.probabilities.sum()) - 1.0) < 1e-4
    assert len(result.top_k) == 3 and result.top_k[0][0] == result.label
    assert result.index == int(np.argmax(result.probabilities))
    assert abs(result.top_k[0][1] - result.probability) < 1e-4


@pytest.mark.parametrize("keep", ["i", "t", "x", "it", "ix", "tx"])
def test_any_subset_of_modalities(server, spec, test_split, keep: str) -> None:
    indices = _clean_indices(test_split, 8)
    with TrimodalClient(server.config.grpc_url, timeout_s=30) as client:
        results = client.classify_batch([_sample(test_split, i, keep) for i in indices])
    correct = sum(r.label == spec.classes[int(test_split.labels[i])] for r, i in zip(results, indices, strict=True))
    assert correct >= 6, f"subset {keep}: {correct}/8 clean samples right"


def test_every_modality_subset_matches_in_process_onnxruntime(server, spec, test_split) -> None:
    """Triton == offline on the whole test split in every modality subset (absent modalities sent empty).

    Same prediction on >= 99.5% and probabilities within 1e-4 in each subset (``parity_failures``); the accuracy
    through Triton equals the build's offline accuracy of what the CPU target serves (build/precision.json's
    served-cpu column: the text encoder at int8-cpu, not the training run's fp32) within the disagreement.
    """
    from trimodal.evidence.gates import parity_failures
    from trimodal.runtime.pipeline import LocalPipeline
    from trimodal.training.evaluate import subset_name
    from trimodal.training.precision import PRECISION_JSON

    with TrimodalClient(server.config.grpc_url, timeout_s=60) as client:  # a cold model's first run is slow
        client.classify(_sample(test_split, 0))
    local = LocalPipeline(spec, REPOSITORY)
    offline = json.loads((Layout.default().build.root / PRECISION_JSON).read_text())["accuracy"]["served-cpu"]
    subsets = {}
    started = time.perf_counter()
    for keep in SUBSETS:
        name = subset_name([modality for letter, modality in LETTERS.items() if letter in keep])
        samples = [_sample(test_split, i, keep) for i in range(len(test_split))]
        served = classify_many(samples, server.config.grpc_url, concurrency=16, timeout_s=60)
        served_probs = np.stack([r.probabilities for r in served])
        local_probs = np.concatenate([local.classify(samples[k : k + 32]) for k in range(0, len(samples), 32)])
        agreement = float(np.mean(served_probs.argmax(1) == local_probs.argmax(1)))
        subsets[name] = {"samples": len(samples), "agreement": agreement,
                         "max_abs_diff": float(np.abs(served_probs - local_probs).max()),
                         "accuracy_through_triton": float(np.mean(served_probs.argmax(1) == test_split.labels)),
                         "accuracy_offline": offline[name]}  # fmt: skip
    full = subsets["image+text+audio"]
    report = {**{key: full[key] for key in ("samples", "agreement", "max_abs_diff", "accuracy_through_triton")},
              "seconds": round(time.perf_counter() - started, 2), "subsets": subsets}  # fmt: skip
    (Layout.default().build.root / "parity.json").write_text(json.dumps(report, indent=2))
    assert parity_failures(report) == [], report
    for name, row in subsets.items():
        slack = 1 - row["agreement"] + 2 / row["samples"] + 1e-9
        assert abs(row["accuracy_through_triton"] - row["accuracy_offline"]) <= slack, (name, row)


def _mixed_samples(test_split, count: int) -> list[Sample]:
    """Every modality subset in turn, and every third sample with the audio of another test sample."""
    samples = []
    for i in range(count):
        sample = _sample(test_split, i, SUBSETS[i % len(SUBSETS)])
        if i % 3 == 0 and sample.audio is not None:
            sample = Sample(sample.image, sample.text, test_split.audio[(i * 7 + 3) % len(test_split)])
        samples.append(sample)
    return samples


def _served_answer(url: str, samples: list[Sample]) -> dict[str, np.ndarray]:
    """Every ensemble output as Triton answers it (raw arrays), in requests of up to 30 samples."""
    import tritonclient.grpc as grpcclient

    from trimodal.client import build_inputs, build_outputs

    client = grpcclient.InferenceServerClient(url)
    parts: dict[str, list[np.ndarray]] = {}
    try:
        for start in range(0, len(samples), 30):
            chunk = samples[start : start + 30]
            outputs = [o for o in build_outputs(grpcclient, 1) if o.name() != contract.LABEL]
            result = client.infer(
                contract.ENSEMBLE, build_inputs(chunk, grpcclient), outputs=outputs, client_timeout=60
            )
            for output in outputs:
                parts.setdefault(output.name(), []).append(result.as_numpy(output.name()))
    finally:
        client.close()
    return {name: np.concatenate(values) for name, values in parts.items()}


def test_agreement_outputs_match_in_process(server, spec, test_split) -> None:
    """Every output through Triton == the in-process pipeline, absent modalities and conflicts included."""
    from trimodal.runtime.pipeline import LocalPipeline

    samples = _mixed_samples(test_split, 210)
    served = _served_answer(server.config.grpc_url, samples)
    local = LocalPipeline(spec, REPOSITORY)
    parts = [local.answer(samples[k : k + 30]) for k in range(0, len(samples), 30)]
    expected = {name: np.concatenate([part[name] for part in parts]) for name in served}
    assert {name: value.dtype.kind for name, value in served.items()} == {
        name: value.dtype.kind for name, value in expected.items()
    }
    absent = np.isnan(expected[contract.MODALITY_PROBABILITIES])
    close = (contract.PROBABILITIES, contract.MODALITY_PROBABILITIES, contract.CONFLICT_SCORE)
    report = {
        "samples": len(samples),
        "absent_rows_same": bool(np.array_equal(np.isnan(served[contract.MODALITY_PROBABILITIES]), absent)),
        "max_abs_diff": {name: float(np.nanmax(np.abs(served[name] - expected[name]))) for name in close},
        "same": {name: float(np.mean(served[name] == expected[name]))
                 for name in (contract.MODALITY_LABELS, contract.AGREEMENT, contract.CONFLICT)},
        "conflicts": int(expected[contract.CONFLICT].sum()),
    }  # fmt: skip
    (ROOT / "build" / "parity_agreement.json").write_text(json.dumps(report, indent=2))
    assert report["absent_rows_same"], report
    assert 0.2 < absent[:, :, 0].mean() < 0.8  # absent and present rows both exercised
    for name in close:
        np.testing.assert_allclose(served[name], expected[name], atol=1e-4, rtol=0, err_msg=name)
    assert min(report["same"].values()) >= 0.995, report
    assert 0.05 < float(np.mean(expected[contract.CONFLICT])) < 0.6  # conflicts were exercised too


def test_mismatched_modalities_are_flagged_and_explained(server, spec, test_split) -> None:
    clean = [i for i in range(len(test_split)) if not test_split.corrupted[i].any()]
    pairs = [(i, next(j for j in clean[k + 1 :] if test_split.labels[j] != test_split.labels[i]))
             for k, i in enumerate(clean[:8])]  # fmt: skip
    samples = [Sample(image=test_split.images[i], audio=test_split.audio[j]) for i, j in pairs]
    with TrimodalClient(server.config.grpc_url, timeout_s=30) as client:
        results = client.classify_batch(samples)
        matched = client.classify_batch([_sample(test_split, i, "ix") for i, _ in pairs])
    flagged = [(result, i, j) for result, (i, j) in zip(results, pairs, strict=True) if result.conflict]
    assert len(flagged) >= 7, [r.explain() for r in results]
    for result, _, _ in flagged:
        image, audio = result.modalities["image"], result.modalities["audio"]
        assert set(result.modalities) == {"image", "audio"} and not result.agreement and image.label != audio.label
        assert result.explain() == (
            f"image says {image.label} ({image.probability:.2f}), audio says {audio.label} ({audio.probability:.2f}): "
            f"conflict (score {result.conflict_score:.2f})"
        )
    said = [(r.modalities["image"].label, r.modalities["audio"].label) for r in results]
    truth = [(spec.classes[int(test_split.labels[i])], spec.classes[int(test_split.labels[j])]) for i, j in pairs]
    assert sum(a == b for a, b in zip(said, truth, strict=True)) >= 6, (said, truth)  # each says its own digit
    assert sum(r.conflict for r in matched) <= 1 and sum(r.agreement for r in matched) >= 7


def _metrics(server) -> dict[tuple[str, str], float]:
    with urllib.request.urlopen(server.config.metrics_url, timeout=10) as response:
        text = response.read().decode()
    values = {}
    for match in re.finditer(r'^(nv_inference_(?:exec_)?count)\{model="([^"]+)",version="1"\} (\S+)$', text, re.M):
        values[(match.group(1), match.group(2))] = float(match.group(3))
    return values


def test_dynamic_batching_merges_concurrent_requests(server, test_split) -> None:
    before = _metrics(server)
    samples = [_sample(test_split, i) for i in range(32)]

    async def burst() -> list:
        return await classify_many_async(samples, server.config.grpc_url, concurrency=32, timeout_s=60)

    results = asyncio.run(burst())
    assert len(results) == 32
    after = _metrics(server)
    counts = {}
    for model in COMPOSING:
        inferences = after[("nv_inference_count", model)] - before.get(("nv_inference_count", model), 0)
        executions = after[("nv_inference_exec_count", model)] - before.get(("nv_inference_exec_count", model), 0)
        counts[model] = {"inferences": inferences, "executions": executions}
    (Layout.default().build.root / "batching.json").write_text(json.dumps(counts, indent=2))
    for model, count in counts.items():
        assert count["inferences"] == 32, (model, count)
        assert count["executions"] <= count["inferences"] / 2, (model, count)


def _bad_inputs(test_split):
    image, text, audio = test_split.images[0], test_split.texts[0].encode(), test_split.audio[0]
    good = {"IMAGE": bytes_tensor(image), "TEXT": bytes_tensor(text), "AUDIO": bytes_tensor(audio)}
    big = 33
    return {
        "undecodable image": ({**good, "IMAGE": bytes_tensor(b"this is not an image")}, "IMAGE"),
        "truncated png": ({**good, "IMAGE": bytes_tensor(image[: len(image) // 2])}, "IMAGE"),
        "non-utf8 text": ({**good, "TEXT": bytes_tensor(b"\xff\xfe\xfa seven")}, "TEXT"),
        "not a wav": ({**good, "AUDIO": bytes_tensor(b"RIFX" + b"\x00" * 64)}, "AUDIO"),
        "wrong dtype": ({**good, "IMAGE": (np.zeros((1, 1), dtype=np.float32), "FP32")}, "IMAGE"),
        "missing input": ({"IMAGE": good["IMAGE"], "TEXT": good["TEXT"]}, "AUDIO"),
        "batch above max": (
            {
                "IMAGE": bytes_tensor(*[image] * big),
                "TEXT": bytes_tensor(*[text] * big),
                "AUDIO": bytes_tensor(*[audio] * big),
            },
            "batch",
        ),
        "all modalities empty": (
            {"IMAGE": bytes_tensor(b""), "TEXT": bytes_tensor(b""), "AUDIO": bytes_tensor(b"")},
            "empty",
        ),
    }


@pytest.mark.parametrize(
    "case",
    ["undecodable image", "truncated png", "non-utf8 text", "not a wav", "wrong dtype", "missing input",
     "batch above max", "all modalities empty"],
)  # fmt: skip
def test_bad_input_is_invalid_argument_and_server_survives(server, test_split, case: str) -> None:
    tensors, named = _bad_inputs(test_split)[case]
    with pytest.raises(InferenceServerException) as info:
        infer_raw(server.config.grpc_url, contract.ENSEMBLE, tensors)
    assert str(info.value.status()).endswith("INVALID_ARGUMENT"), info.value
    assert named in info.value.message(), info.value.message()
    assert server.is_ready()
    with TrimodalClient(server.config.grpc_url, timeout_s=30) as client:
        assert client.classify(_sample(test_split, 0)).probabilities.shape[0] == 10


def test_client_error_carries_status(server, test_split) -> None:
    with TrimodalClient(server.config.grpc_url, timeout_s=30) as client, pytest.raises(ClientError) as info:
        client.classify(Sample(image=b"garbage", text="seven"))
    assert info.value.status == "INVALID_ARGUMENT"
    assert "IMAGE" in str(info.value)


def test_deadline_is_enforced(test_split, tmp_path: Path) -> None:
    """A 5 ms deadline (shorter than any answer) fails with DEADLINE_EXCEEDED.

    On a server of its own: a request cancelled by its deadline can wedge Triton 2.51's ensemble (seen in CI with
    this very test on the shared server; benchmarks/RELIABILITY.md), which must not take the other tests down.
    """
    from trimodal.triton.server import ServerConfig, TritonServer, free_port

    config = ServerConfig(
        model_repository=REPOSITORY, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
        work_dir=tmp_path / "work", exit_timeout_s=5,
    )  # fmt: skip
    own = TritonServer(config).start(timeout_s=240)
    try:
        with TrimodalClient(own.config.grpc_url, timeout_s=0.005) as client, pytest.raises(ClientError) as info:
            client.classify(_sample(test_split, 0))
    finally:
        own.stop()
    assert info.value.status == "DEADLINE_EXCEEDED"


def test_cli_infer(server, spec, tmp_path: Path, test_split) -> None:
    i = _clean_indices(test_split, 1)[0]
    (tmp_path / "x.png").write_bytes(test_split.images[i])
    (tmp_path / "x.wav").write_bytes(test_split.audio[i])
    command = [sys.executable, "-m", "trimodal.cli", "infer", "--image", str(tmp_path / "x.png"),
               "--text", test_split.texts[i], "--audio", str(tmp_path / "x.wav"),
               "--url", server.config.grpc_url, "--top-k", "2", "--json"]  # fmt: skip
    out = subprocess.run(command, capture_output=True, text=True, timeout=60, check=True).stdout
    payload = json.loads(out.strip().splitlines()[-1])
    label = spec.classes[int(test_split.labels[i])]
    assert payload["label"] == label
    assert len(payload["top_k"]) == 2
    assert set(payload["modalities"]) == {"image", "text", "audio"} and payload["agreement"]
    assert payload["modalities"]["image"]["label"] == label and not payload["conflict"]
    other = next(j for j in range(len(test_split)) if not test_split.corrupted[j].any()
                 and test_split.labels[j] != test_split.labels[i])  # fmt: skip
    (tmp_path / "y.wav").write_bytes(test_split.audio[other])
    mismatched = [*command[:8], "--audio", str(tmp_path / "y.wav"), "--url", server.config.grpc_url]
    text = subprocess.run(mismatched, capture_output=True, text=True, timeout=60, check=True).stdout
    line = next(line for line in text.splitlines() if line.startswith("modalities: "))
    assert f"image says {label}" in line and f"audio says {spec.classes[int(test_split.labels[other])]}" in line
    assert "text says" in line and line.rstrip().endswith(")") and ": conflict (score" in line, text
    bad = subprocess.run([*command[:5], str(tmp_path / "nope.png"), "--url", server.config.grpc_url],
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert bad.returncode == 1 and "cannot read the image file" in bad.stderr


def test_old_clients_reading_only_probabilities_work_unchanged(server, spec, test_split, tmp_path: Path) -> None:
    """A request for PROBABILITIES alone (and the sync example, which reads PROBABILITIES and LABEL) still works."""
    import tritonclient.grpc as grpcclient

    from trimodal.client import build_inputs
    from trimodal.runtime.pipeline import LocalPipeline

    i = _clean_indices(test_split, 1)[0]
    sample = _sample(test_split, i)
    client = grpcclient.InferenceServerClient(server.config.grpc_url)
    try:
        result = client.infer(
            contract.ENSEMBLE,
            build_inputs([sample], grpcclient),
            outputs=[grpcclient.InferRequestedOutput(contract.PROBABILITIES)],
            client_timeout=30,
        )
    finally:
        client.close()
    probabilities = result.as_numpy(contract.PROBABILITIES)
    assert result.get_output(contract.CONFLICT) is None  # only what was asked for
    assert probabilities.dtype == np.float32 and probabilities.shape == (1, spec.num_classes)
    np.testing.assert_allclose(probabilities, LocalPipeline(spec, REPOSITORY).classify([sample]), atol=1e-4)
    (tmp_path / "x.png").write_bytes(test_split.images[i])
    example = [sys.executable, str(ROOT / "clients" / "sync_client.py"), "--url", server.config.grpc_url,
               "--image", str(tmp_path / "x.png"), "--text", test_split.texts[i]]  # fmt: skip
    old = subprocess.run(example, capture_output=True, text=True, timeout=60, check=True).stdout
    label = spec.classes[int(test_split.labels[i])]
    assert old.splitlines()[0].startswith(label) and "sum of probabilities: 1.0000" in old
    new = subprocess.run([*example, "--modalities"], capture_output=True, text=True, timeout=60, check=True).stdout
    assert new.startswith(old) and new.splitlines()[-1].startswith("image says ") and "text says " in new


def test_streaming_example_answers_every_sample_and_fails_cleanly_past_its_deadline(server) -> None:
    """clients/streaming_client.py: one stream, every bundled sample answered with its own label; when the answers
    do not come within --timeout it exits 1 with one line, not a traceback."""
    samples = ROOT / "clients" / "samples"
    command = [sys.executable, str(ROOT / "clients" / "streaming_client.py"), "--url", server.config.grpc_url,
               "--samples", str(samples)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    lines = sorted(done.stdout.splitlines())
    assert len(lines) == len(list(samples.glob("*.json")))
    for line in lines:
        answered, expected = re.fullmatch(r"request \d+: (\S+) \(expected (\S+)\)", line).groups()
        assert answered == expected, line
    late = subprocess.run([*command, "--timeout", "0.001"], capture_output=True, text=True, timeout=60)
    assert late.returncode == 1 and late.stderr.startswith("error: ") and "Traceback" not in late.stderr, late.stderr
