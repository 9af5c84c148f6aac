"""GPU target end to end: build strongly typed TensorRT plans, check them, compare with ONNX Runtime, serve them.

Marked ``gpu``; every test skips with the reason when TensorRT, a CUDA GPU, the ONNX graphs or (for the
serving test) a tritonserver binary with the TensorRT backend is missing. Plans are built at pipeline.yaml's
precision when the repository has that precision's graphs (``model.fp16.onnx``...), else at fp32 from
``model.onnx`` (the test output says which). Run inside the engine-builder image (or NVIDIA's Triton
container with trimodal installed) on a GPU host::

    docker compose run --rm --entrypoint "" -v "$PWD:/src" -w /src engine-builder \
        sh -c 'python3 -m pip install -q --user pytest pytest-timeout && python3 -m pytest -m gpu tests/gpu -v'
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from trimodal import contract
from trimodal.contract import ENCODERS
from trimodal.errors import EngineError
from trimodal.layout import Layout
from trimodal.runtime.pipeline import ort_infer, run_models
from trimodal.spec import load_spec
from trimodal.tensorrt.accuracy import verify_accuracy
from trimodal.tensorrt.builder import build_all
from trimodal.tensorrt.metadata import metadata_path, read_metadata, sha256_file
from trimodal.tensorrt.plans import plan_path_for
from trimodal.tensorrt.preflight import check_engines, errors
from trimodal.tensorrt.profiles import profile_shapes
from trimodal.tensorrt.runtime import RuntimeInfo, detect_runtime
from trimodal.tensorrt.samples import encoder_inputs

pytestmark = pytest.mark.gpu

LAYOUT = Layout.default()
ROOT = LAYOUT.root
BUILD = LAYOUT.build
REPOSITORY = LAYOUT.repository.root


def _runtime_or_skip() -> RuntimeInfo:
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        pytest.skip("tensorrt is not installed (run inside NVIDIA's TensorRT/Triton container, see deploy/GPU.md)")
    try:
        return detect_runtime()
    except EngineError as exc:
        pytest.skip(f"no CUDA GPU available: {exc}")


@pytest.fixture(scope="module")
def spec():
    return load_spec()


@pytest.fixture(scope="module")
def runtime() -> RuntimeInfo:
    return _runtime_or_skip()


@pytest.fixture(scope="module")
def precision(spec) -> str:
    """pipeline.yaml's GPU precision (of the image encoder) when the repository has its graphs, else fp32."""
    graphs, wanted = LAYOUT.repository, spec.precision.of("image_encoder", "gpu")
    if all(graphs.onnx_file(m, wanted).exists() for m in ENCODERS):
        return wanted
    print(f"no {wanted} graphs in {graphs.root}: building fp32 plans")
    return "fp32"


@pytest.fixture(scope="module")
def built_repo(runtime, spec, precision, tmp_path_factory) -> Path:
    """A copy of the rendered repository with freshly built strongly typed plans."""
    missing = [m for m in ENCODERS if not LAYOUT.repository.onnx_file(m).exists()]
    if missing:
        pytest.skip(f"ONNX graphs missing in model_repository for {missing}: run `trimodal build` (CPU) first")
    repo = tmp_path_factory.mktemp("repo") / "model_repository"
    shutil.copytree(REPOSITORY, repo, ignore=shutil.ignore_patterns("*.plan", "*.plan.json"))
    metadata = build_all(spec, repo, precision=precision, runtime=runtime)
    assert [m.model for m in metadata] == list(ENCODERS)
    return repo


def test_plans_and_metadata(built_repo, runtime, spec, precision):
    for model in ENCODERS:
        plan = plan_path_for(built_repo, spec, model, runtime)
        meta = read_metadata(plan)
        assert meta.tensorrt_version == runtime.tensorrt_version
        assert meta.compute_capability == runtime.compute_capability
        assert meta.precision == precision and meta.strongly_typed
        assert meta.layer_precisions is not None and meta.layer_precisions.layers > 0
        print(f"{model}: {meta.layer_precisions.summary()}")
        assert meta.profiles == profile_shapes(spec, model)
        io = contract.model_io(spec)[model]
        assert {t.name for t in meta.inputs} == {t.name for t in io.inputs}
        assert {t.name for t in meta.outputs} == {t.name for t in io.outputs}
        assert meta.plan_sha256 == sha256_file(plan)


def test_rebuild_is_skipped_when_up_to_date(built_repo, runtime, spec, precision):
    plan = plan_path_for(built_repo, spec, "image_encoder", runtime)
    before = plan.stat().st_mtime_ns
    build_all(spec, built_repo, precision=precision, models=["image_encoder"], runtime=runtime)
    assert plan.stat().st_mtime_ns == before


def test_checker_is_clean_on_fresh_plans(built_repo, spec, runtime):
    assert errors(check_engines(spec, built_repo, runtime, onnx_dir=BUILD.onnx)) == []
    # and with the runtime detected from this process
    assert errors(check_engines(spec, built_repo)) == []


def test_parity_with_onnx_runtime(built_repo, spec, runtime):
    report = verify_accuracy(spec, built_repo, BUILD.root, samples=300, runtime=runtime)
    print(report.summary())
    assert report.passed, report.summary()


def test_checker_messages_on_deliberately_mismatched_plans(built_repo, spec, runtime, tmp_path):
    repo = tmp_path / "broken"
    shutil.copytree(built_repo, repo)
    # 1. a plan "from another TensorRT": what Triton would reject with a magic-tag error
    plan = plan_path_for(repo, spec, "image_encoder", runtime)
    meta_file = metadata_path(plan)
    data = json.loads(meta_file.read_text())
    data["tensorrt_version"] = "8.6.1"
    meta_file.write_text(json.dumps(data))
    # 2. the text encoder's plan dropped into the audio encoder's folder
    text_plan = plan_path_for(repo, spec, "text_encoder", runtime)
    audio_plan = plan_path_for(repo, spec, "audio_encoder", runtime)
    shutil.copyfile(text_plan, audio_plan)
    shutil.copyfile(metadata_path(text_plan), metadata_path(audio_plan))
    problems = errors(check_engines(spec, repo, runtime))
    text = "\n".join(p.message for p in problems)
    assert "was built with TensorRT 8.6.1 but this server runs TensorRT" in text
    assert "audio_encoder/config.pbtxt declares input AUDIO_TENSOR" in text
    assert all("trimodal build-engines" in p.message or "trimodal render" in p.message for p in problems)


# --- serving the plans with the same command line as docker-compose.yml --------------------------------


def _tritonserver_or_skip() -> Path:
    binary = Path(os.environ.get("TRIMODAL_TRITONSERVER", "/opt/tritonserver/bin/tritonserver"))
    if not binary.exists():
        pytest.skip(f"no tritonserver at {binary} (run inside the trimodal/triton image or set TRIMODAL_TRITONSERVER)")
    if not (binary.parent.parent / "backends" / "tensorrt").is_dir():
        pytest.skip(f"{binary} has no TensorRT backend")
    return binary


def compose_triton_command(model_repository: Path, admin_key: str) -> list[str]:
    """The triton service's command from docker-compose.yml, with variables substituted."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["triton"]["command"]
    resolved = [re.sub(r"\$\{TRIMODAL_ADMIN_KEY[^}]*\}", admin_key, arg) for arg in command]
    return [a.replace("--model-repository=/models", f"--model-repository={model_repository}") for a in resolved]


@pytest.fixture(scope="module")
def served(request) -> Iterator[str]:
    """tritonserver on the default ports with the compose command line.

    Serves ``TRIMODAL_GPU_REPOSITORY`` when set (e.g. the compose volume built by engine-builder, for running
    this inside the trimodal/triton image, which has no TensorRT Python bindings), else freshly built plans.
    """
    binary = _tritonserver_or_skip()
    prebuilt = os.environ.get("TRIMODAL_GPU_REPOSITORY")
    repo = Path(prebuilt) if prebuilt else request.getfixturevalue("built_repo")
    command = compose_triton_command(repo, "gpu-test-key")
    command[0] = str(binary)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"tritonserver exited with {process.returncode}:\n{process.stdout.read()[-4000:]}")
            try:
                if urllib.request.urlopen("http://127.0.0.1:8000/v2/health/ready", timeout=2).status == 200:
                    break
            except OSError:
                time.sleep(2)
        else:
            pytest.fail("tritonserver did not become ready within 300 s")
        yield "127.0.0.1:8001"
    finally:
        process.terminate()
        try:
            process.wait(timeout=40)
        except subprocess.TimeoutExpired:
            process.kill()


def test_served_plans_match_onnx_runtime(served, spec):
    import tritonclient.grpc as grpcclient

    tensors, labels = encoder_inputs(spec, BUILD.root, "test", 64, repo_dir=REPOSITORY)
    reference = run_models(spec, tensors, ort_infer(LAYOUT.repository.onnx_file), 32)
    client = grpcclient.InferenceServerClient(served)
    rows = min(len(labels), spec.serving.resolved("image_encoder").max_batch_size)
    io = contract.model_io(spec)["image_encoder"]
    feeds = [grpcclient.InferInput(t.name, [rows, *t.dims], t.dtype) for t in io.inputs]
    for feed in feeds:
        feed.set_data_from_numpy(tensors[feed.name()][:rows])
    result = client.infer("image_encoder", feeds, client_timeout=30)
    got = result.as_numpy(contract.IMAGE_FEATURES)
    want = reference["image_encoder"][contract.IMAGE_FEATURES][:rows]
    assert got.shape == want.shape
    assert np.max(np.abs(got - want)) < 5e-2


def test_restricted_apis_need_the_admin_key(served):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(served)
    with pytest.raises(InferenceServerException):
        client.get_model_repository_index()
    assert client.get_model_repository_index(headers={"admin-key": "gpu-test-key"}) is not None
    assert client.is_server_ready()
