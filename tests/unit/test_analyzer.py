"""trimodal tune without a server: the repository Model Analyzer gets, its YAML, and the clear errors."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import yaml

from trimodal import contract
from trimodal.errors import TuneError
from trimodal.layout import Layout, onnx_filename
from trimodal.spec import PRECISIONS, load_spec
from trimodal.triton.analyzer import (
    AnalyzerRun,
    SearchLimits,
    analyzer_config,
    check_models,
    find_model_analyzer,
    read_config,
    run_analyzer,
    stage_repository,
    write_config,
)
from trimodal.triton.repository import render

TEXT_ENCODER = contract.ENCODERS[1]


@pytest.fixture()
def repository(tmp_path: Path) -> Path:
    """The rendered configs plus a graph file per precision (staging only links them)."""
    root = tmp_path / "repo"
    render(load_spec(Layout.default().spec), root)
    for model in contract.ENCODERS:
        for precision in PRECISIONS:
            (root / model / "1" / onnx_filename(precision)).write_bytes(b"graph")
    return root


def test_staged_config_is_the_cpu_config_without_preferred_sizes_or_queue_timeout(repository: Path, tmp_path: Path):
    staged = stage_repository(repository, [TEXT_ENCODER], "cpu", tmp_path / "staged")
    shipped = read_config(repository / TEXT_ENCODER / "configs" / "cpu.pbtxt")
    config = read_config(staged / TEXT_ENCODER / "config.pbtxt")
    assert config.backend == "python" and config.instance_group[0].kind == shipped.instance_group[0].kind
    assert config.max_batch_size == shipped.max_batch_size
    assert shipped.dynamic_batching.preferred_batch_size and not config.dynamic_batching.preferred_batch_size
    assert config.dynamic_batching.max_queue_delay_microseconds == shipped.dynamic_batching.max_queue_delay_microseconds
    assert not config.dynamic_batching.HasField("default_queue_policy")
    files = sorted(p.name for p in (staged / TEXT_ENCODER / "1").iterdir())
    served = onnx_filename(load_spec(Layout.default().spec).precision.of(TEXT_ENCODER, "cpu"))
    assert files == sorted(["model.py", served])  # the served graph only, no other precision's
    assert not (staged / contract.FUSION).exists()


def test_gpu_target_stages_config_pbtxt(repository: Path, tmp_path: Path):
    staged = stage_repository(repository, [contract.FUSION], "gpu", tmp_path / "staged")
    assert read_config(staged / contract.FUSION / "config.pbtxt").platform == "tensorrt_plan"


def test_yaml_is_a_quick_search_over_grpc_with_the_servers_environment(tmp_path: Path):
    run = AnalyzerRun.create(tmp_path / "run")
    limits = SearchLimits(max_instances=2, max_batch_size=8, max_concurrency=16, window_ms=1500)
    perf = tmp_path / "perf_analyzer"
    config = analyzer_config(run, {contract.FUSION: tmp_path / "data.json"}, limits, "cpu", perf,
                             {"LD_LIBRARY_PATH": "/perf/libs"}, tmp_path / "work")  # fmt: skip
    loaded = yaml.safe_load(write_config(run, config).read_text())
    assert loaded["run_config_search_mode"] == "quick" and loaded["client_protocol"] == "grpc"
    assert loaded["triton_launch_mode"] == "local" and loaded["perf_analyzer_path"] == str(perf)
    assert loaded["run_config_search_max_instance_count"] == 2
    assert loaded["run_config_search_max_model_batch_size"] == 8
    assert loaded["run_config_search_max_concurrency"] == 16
    assert loaded["triton_grpc_endpoint"] == f"127.0.0.1:{run.grpc_port}"
    assert "/perf/libs" in loaded["triton_server_environment"]["LD_LIBRARY_PATH"].split(":")
    assert "nvidia_pytriton.libs" in loaded["triton_server_environment"]["LD_LIBRARY_PATH"]
    assert loaded["triton_server_flags"]["backend-config"].endswith(run.shm_prefix)
    model = loaded["profile_models"][contract.FUSION]
    assert model["cpu_only"] is True
    assert model["perf_analyzer_flags"]["input-data"] == str(tmp_path / "data.json")
    assert model["perf_analyzer_flags"]["measurement-interval"] == 1500


def test_clear_errors(repository: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("TRIMODAL_MODEL_ANALYZER", str(tmp_path / "missing"))
    with pytest.raises(TuneError, match="make tune"):
        find_model_analyzer()
    with pytest.raises(TuneError, match="unknown model 'nope'"):
        check_models(["nope"], repository, "cpu")
    with pytest.raises(TuneError, match="unknown model 'preprocess_text'"):
        check_models(["preprocess_text"], repository, "cpu")
    with pytest.raises(TuneError, match="hung here"):
        check_models([contract.ENSEMBLE], repository, "cpu")
    (repository / contract.FUSION / "1" / "model.onnx").unlink()
    with pytest.raises(TuneError, match="trimodal build"):
        check_models([contract.FUSION], repository, "cpu")
    with pytest.raises(TuneError, match="trimodal build"):
        check_models([contract.FUSION], tmp_path / "no-repo", "cpu")


def test_a_silent_analyzer_is_stopped_at_the_timeout(tmp_path: Path):
    script = tmp_path / "model-analyzer"
    script.write_text("#!/bin/sh\necho started\nexec sleep 60\n")
    script.chmod(0o755)
    run = AnalyzerRun.create(tmp_path / "run")
    run.out.mkdir()
    lines: list[str] = []
    with pytest.raises(TuneError, match="ran past 1 s"):
        run_analyzer(run, script, dict(os.environ), lines.append, timeout_s=1.0)
    assert lines == ["started"]
    assert run.log_file.read_text() == "started\n"
