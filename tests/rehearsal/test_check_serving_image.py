"""Item 7: ``trimodal check`` inside the serving image (build/Dockerfile.triton, target ``triton``).

That image has Triton's TensorRT backend, so ``libnvinfer.so.<major>`` and the driver's ``libcuda.so.1`` are
there, but no TensorRT Python bindings and no Polygraphy. Rehearsed here with compiled stand-ins for both
libraries (tests/doubles/native), ``tensorrt``/``polygraphy`` unimportable, the image's ENV and WORKDIR under
a temporary root and no arguments: the check must read the TensorRT version from libnvinfer and the compute
capability from the driver, look at ``/models`` (TRIMODAL_REPOSITORY), and skip the accuracy check with a
message instead of failing.
"""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest
from rehearsal_support import ROOT, cli_without, double_env, image_env, image_workdir, in_root

DOCKERFILE = ROOT / "build" / "Dockerfile.triton"
CHECK = cli_without(("tensorrt", "polygraphy", "torch", "trimodal.training"), "triton")

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def built_repository(fp16_repository, native_libs, tmp_path_factory):
    """The fp16 repository with plans built under the TensorRT 11.1 double (as the engine builder would)."""
    repo = tmp_path_factory.mktemp("served") / "models"
    shutil.copytree(fp16_repository, repo)
    build = subprocess.run([sys.executable, "-m", "trimodal.cli", "build-engines", "--repository", str(repo)],
                           env=double_env("11", native_libs), capture_output=True, text=True, timeout=240)  # fmt: skip
    assert build.returncode == 0, build.stderr
    return repo


def serving_check(root, repo, native_libs, *args: str, **fake: str) -> subprocess.CompletedProcess:
    """``trimodal check <args>`` as in the serving image: its ENV and WORKDIR under ``root``, /models = ``repo``."""
    if not (root / "models").exists():
        shutil.copytree(repo, root / "models")
        (root / "opt" / "trimodal").mkdir(parents=True)
        shutil.copy2(ROOT / "pipeline.yaml", root / "opt" / "trimodal" / "pipeline.yaml")
    workdir = root / image_workdir(DOCKERFILE, "triton").lstrip("/")
    workdir.mkdir(parents=True, exist_ok=True)
    env = double_env(None, native_libs, **{"FAKE_TRT_VERSION": "11.1.0.106", **fake})
    env.update({key: in_root(value, root) for key, value in image_env(DOCKERFILE, "triton").items()})
    return subprocess.run([sys.executable, "-c", CHECK, "check", *args], env=env, cwd=workdir, capture_output=True,
                          text=True, timeout=120)  # fmt: skip


def test_check_in_the_serving_image_compares_plans_and_skips_accuracy(built_repository, native_libs, tmp_path):
    result = serving_check(tmp_path, built_repository, native_libs)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"engines in {tmp_path}/models match the running TensorRT, the GPU and the configs" in result.stdout
    assert "accuracy check skipped: tensorrt is not importable here" in result.stdout
    assert "site-packages" not in result.stdout + result.stderr
    assert "plans were not compared" not in result.stdout + result.stderr


def test_check_in_the_serving_image_sees_another_tensorrt_and_gpu(built_repository, native_libs, tmp_path):
    newer = serving_check(tmp_path, built_repository, native_libs, "--no-accuracy", FAKE_TRT_VERSION="11.4.0.9")
    assert newer.returncode == 1
    assert "image_encoder/1/model.plan was built with TensorRT 11.1.0.106 but this server runs TensorRT 11.4.0.9" in (
        newer.stdout
    )
    other_gpu = serving_check(tmp_path, built_repository, native_libs, "--no-accuracy", FAKE_GPU_NAME="NVIDIA L4",
                              FAKE_GPU_CC="8.9")  # fmt: skip
    assert other_gpu.returncode == 1
    assert "built for compute capability 9.0 (NVIDIA H200) but this GPU is NVIDIA L4 with compute capability 8.9" in (
        other_gpu.stdout
    )


def test_check_without_any_tensorrt_library_says_where_to_run(built_repository, tmp_path):
    result = serving_check(tmp_path, built_repository, None, "--no-accuracy")
    assert result.returncode == 0, result.stderr  # plans vs configs still compared; the runtime part is a warning
    assert "no TensorRT library here" in result.stdout and "inside the serving container" in result.stdout
