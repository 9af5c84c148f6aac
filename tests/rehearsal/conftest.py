"""Fixtures of the GPU-path rehearsal (no GPU, no Docker, no TensorRT needed)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from rehearsal_support import ENGINE_MODELS, ROOT, compile_native, copy_repository, make_fp16_graph

from trimodal.layout import RepositoryLayout
from trimodal.spec import PipelineSpec, load_spec


@pytest.fixture(scope="session")
def spec() -> PipelineSpec:
    return load_spec()


@pytest.fixture(scope="session")
def native_libs(tmp_path_factory) -> Path:
    """Fake libcuda.so.1 (an H200, cc 9.0) and libnvinfer.so.11 compiled from tests/doubles/native."""
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        pytest.skip("no C compiler to build the fake libcuda/libnvinfer (apt-get install gcc)")
    return compile_native(tmp_path_factory.mktemp("native"))


@pytest.fixture(scope="session")
def fp16_repository(tmp_path_factory) -> Path:
    """A copy of model_repository/ with fp32 graphs, tokenizer and fp16 graphs (``model.fp16.onnx``) of every engine."""
    source = RepositoryLayout(ROOT / "model_repository")
    missing = [m for m in ENGINE_MODELS if not source.onnx_file(m).is_file()]
    if missing:
        pytest.skip(f"model_repository has no ONNX graphs for {missing}: run `make build` first")
    repo = copy_repository(source.root, tmp_path_factory.mktemp("fp16") / "models")
    for model in ENGINE_MODELS:
        make_fp16_graph(RepositoryLayout(repo).onnx_file(model), RepositoryLayout(repo).onnx_file(model, "fp16"))
    return repo


@pytest.fixture()
def repository(fp16_repository, tmp_path) -> Path:
    """A fresh copy of the fp16 repository for one test."""
    return copy_repository(fp16_repository, tmp_path / "models")
