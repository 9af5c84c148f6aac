"""Rehearsal (c): real Polygraphy and trimodal's builder run the whole GPU build under the TensorRT 10 and 11 doubles.

``trimodal build-engines`` runs in a subprocess where ``import tensorrt`` gives the double of one release
(tests/doubles/trt10, trt11) and ``libcuda.so.1`` is a compiled stand-in reporting an H200: the fp16 graphs of
the real exported models are parsed into strongly typed networks, configured and "built" through Polygraphy
0.50+, and the plans and their metadata are written next to the graphs. Then ``trimodal check`` compares them
with the "running" TensorRT and GPU. Also covers defect 3 (the funcified Polygraphy loader was called twice:
TypeError) and defect 4 (weakly typed precision flags, which TensorRT 11 does not have).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from rehearsal_support import DOUBLE_VERSIONS, ENGINE_MODELS, double_env

from trimodal import contract
from trimodal.layout import RepositoryLayout
from trimodal.tensorrt.metadata import read_metadata, sha256_file
from trimodal.tensorrt.profiles import profile_shapes

pytestmark = pytest.mark.timeout(300)


def trimodal(*args: str, env: dict[str, str], cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "trimodal.cli", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=240)  # fmt: skip


@pytest.mark.parametrize("major", ["11", "10"])
def test_build_engines_writes_strongly_typed_plans_and_metadata(major, repository, spec, native_libs):
    env = double_env(major, native_libs)
    result = trimodal("build-engines", "--repository", str(repository), env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    layout = RepositoryLayout(repository)
    for model in ENGINE_MODELS:
        plan = layout.version_dir(model) / "model.plan"
        meta = read_metadata(plan)
        assert (meta.model, meta.precision, meta.tensorrt_version) == (model, "fp16", DOUBLE_VERSIONS[major])
        assert (meta.gpu_name, meta.compute_capability) == ("NVIDIA H200", "9.0")
        assert meta.onnx_file == "model.fp16.onnx" and meta.onnx_origin == "repository"
        assert meta.onnx_sha256 == sha256_file(layout.onnx_file(model, "fp16"))
        assert meta.plan_sha256 == sha256_file(plan) and meta.strongly_typed
        assert meta.profiles == profile_shapes(spec, model)
        io = contract.model_io(spec)[model]
        assert [t.name for t in meta.inputs] == [t.name for t in io.inputs]
        assert {t.name: t.dtype for t in meta.outputs} == {t.name: t.dtype for t in io.outputs}, "fp32 I/O kept"
        layers = meta.layer_precisions
        assert layers.count("FP16") > layers.count("FP32") > 0 and layers.casts >= 2, layers
        plan_content = json.loads(plan.read_bytes().split(b"\n", 1)[1])
        assert plan_content["strongly_typed"] and "FP16" not in plan_content["flags"]
        assert f"{model}: model.plan (fp16, TensorRT {DOUBLE_VERSIONS[major]}" in result.stdout
    assert not list(repository.glob("*/config.pbtxt.*")), "configs are never re-rendered"


def test_rebuild_keeps_up_to_date_plans_and_check_accepts_them(repository, native_libs):
    env = double_env("11", native_libs)
    assert trimodal("build-engines", "--repository", str(repository), env=env).returncode == 0
    plan = RepositoryLayout(repository).version_dir("text_encoder") / "model.plan"
    before = plan.stat().st_mtime_ns
    again = trimodal("build-engines", "--repository", str(repository), env=env)
    assert again.returncode == 0 and "text_encoder/1/model.plan is up to date" in again.stderr
    assert plan.stat().st_mtime_ns == before
    check = trimodal("check", "--repository", str(repository), "--no-accuracy", env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "match the running TensorRT, the GPU and the configs" in check.stdout
    newer = double_env("11", native_libs, FAKE_TRT_VERSION="11.4.0.9")
    newer["PYTHONPATH"] = ""  # the serving image: libnvinfer 11.4, no Python bindings
    stale = trimodal("check", "--repository", str(repository), "--no-accuracy", env=newer)
    assert (
        stale.returncode == 1
        and "built with TensorRT 11.1.0.106 but this server runs TensorRT 11.4.0.9" in stale.stdout
    )


def test_a_plan_from_another_release_does_not_deserialize(repository, native_libs):
    assert trimodal("build-engines", "--repository", str(repository), env=double_env("10", native_libs)).returncode == 0
    code = ("import tensorrt as trt, sys; plan = open(sys.argv[1], 'rb').read(); "
            "print(trt.Runtime(trt.Logger(trt.Logger.ERROR)).deserialize_cuda_engine(plan))")  # fmt: skip
    plan = RepositoryLayout(repository).version_dir("image_encoder") / "model.plan"
    run = subprocess.run([sys.executable, "-c", code, str(plan)], env=double_env("11", native_libs),
                         capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.stdout.strip().endswith("None")
    assert "expecting library version 11.1.0.106 got 10.16.0.72" in run.stdout


def test_missing_precision_graph_names_the_file_before_tensorrt(repository, native_libs):
    RepositoryLayout(repository).onnx_file("image_encoder", "int8").unlink(missing_ok=True)  # `trimodal build` makes it
    result = trimodal("build-engines", "--repository", str(repository), "--precision", "int8",
                      env=double_env("11", native_libs))  # fmt: skip
    assert result.returncode == 1
    assert f"missing int8 ONNX graph {repository}/image_encoder/1/model.int8.onnx" in result.stderr
    assert "`trimodal build`" in result.stderr


def test_graph_of_the_wrong_precision_is_refused(repository, native_libs):
    layout = RepositoryLayout(repository)
    layout.onnx_file("image_encoder", "fp16").write_bytes(layout.onnx_file("image_encoder").read_bytes())
    result = trimodal("build-engines", "--repository", str(repository), env=double_env("11", native_libs))
    assert result.returncode == 1
    assert "model.fp16.onnx has no FP16 layer, so it is not an fp16 graph" in result.stderr


def test_fp32_plans_clear_tf32_and_read_model_onnx(repository, native_libs):
    result = trimodal("build-engines", "--repository", str(repository), "--precision", "fp32",
                      env=double_env("11", native_libs))  # fmt: skip
    assert result.returncode == 0, result.stderr
    plan = RepositoryLayout(repository).version_dir("audio_encoder") / "model.plan"
    assert read_metadata(plan).onnx_file == "model.onnx"
    assert "TF32" not in json.loads(plan.read_bytes().split(b"\n", 1)[1])["flags"]


def test_graphs_from_a_mounted_build_folder(repository, tmp_path, native_libs):
    build = tmp_path / "build"
    (build / "onnx").mkdir(parents=True)
    for model in ENGINE_MODELS:
        source = RepositoryLayout(repository).onnx_file(model, "fp16")
        (build / "onnx" / f"{model}.fp16.onnx").write_bytes(source.read_bytes())
        source.unlink()
    result = trimodal("build-engines", "--repository", str(repository), "--build-dir", str(build),
                      env=double_env("11", native_libs))  # fmt: skip
    assert result.returncode == 0, result.stderr
    meta = read_metadata(RepositoryLayout(repository).version_dir("fusion_classifier") / "model.plan")
    assert (meta.onnx_file, meta.onnx_origin) == ("fusion_classifier.fp16.onnx", "build")
    assert list((build / "engines").glob("timing-trt11.1.0.106-sm90.cache")), "timing cache kept in the build folder"


def test_weakly_typed_precision_flags_fail_on_tensorrt_11(native_libs):
    """Defect 4: what the old builder asked Polygraphy for (fp16=True) does not exist on TensorRT 11."""
    code = ("from polygraphy.backend.trt import CreateConfig, create_network\n"
            "builder, network = create_network()\n"
            "CreateConfig(fp16=True)(builder, network)\n")  # fmt: skip
    run = subprocess.run([sys.executable, "-c", code], env=double_env("11", native_libs), capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert (
        run.returncode != 0
        and "fp16 in CreateConfig is not available on TensorRT version 11.1.0.106" in run.stdout + run.stderr
    )
