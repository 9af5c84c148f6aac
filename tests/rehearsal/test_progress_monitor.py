"""Defect 10: the builder's progress monitor gets ``phase_start(phase_name, parent_phase, num_steps)``.

The TensorRT double drives the monitor exactly as the bindings' trampoline does (pyCore.cpp
``PyProgressMonitor::phaseStart`` passes ``phaseName, parentPhase, nbSteps`` positionally), through a real
build of a real graph: a top-level phase must be logged at INFO under its own name.
"""

from __future__ import annotations

import logging

import pytest
from rehearsal_support import ROOT, load_double

from trimodal.layout import RepositoryLayout
from trimodal.tensorrt.builder import progress_monitor
from trimodal.tensorrt.profiles import profile_shapes


def build_with_monitor(trt, spec, model: str, monitor) -> object:
    """A build of the repository's fp32 graph with the TensorRT API directly (no Polygraphy)."""
    logger = trt.Logger(trt.Logger.ERROR)
    builder = trt.Builder(logger)
    network = builder.create_network(1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED))
    parser = trt.OnnxParser(network, logger)
    assert parser.parse_from_file(str(RepositoryLayout(ROOT / "model_repository").onnx_file(model)))
    config = builder.create_builder_config()
    profile = builder.create_optimization_profile()
    for name, (low, opt, high) in profile_shapes(spec, model).items():
        profile.set_shape(name, low, opt, high)
    assert config.add_optimization_profile(profile) == 0
    config.progress_monitor = monitor
    return builder.build_serialized_network(network, config)


@pytest.mark.parametrize("major", ["10", "11"])
def test_top_level_phase_is_logged_under_its_name(major, spec, caplog, capsys):
    if not RepositoryLayout(ROOT / "model_repository").onnx_file("image_encoder").is_file():
        pytest.skip("run `make build` first (model_repository/image_encoder/1/model.onnx)")
    trt = load_double(major)
    monitor = progress_monitor(trt, "image_encoder")
    with caplog.at_level(logging.DEBUG, logger="trimodal.tensorrt.builder"):
        plan = build_with_monitor(trt, spec, "image_encoder", monitor)
    assert plan is not None, "the build was cancelled or failed"
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
    assert info == ["image_encoder: Building engine (2 steps)"], info
    debug = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert "image_encoder: Graph optimization (4 steps)" in debug
    assert any(m.startswith("image_encoder: Tactic selection done in") for m in debug)
    assert "Exception caught" not in capsys.readouterr().err


def test_monitor_is_a_subclass_of_the_releases_base_and_never_cancels():
    trt = load_double("11")
    monitor = progress_monitor(trt, "m")
    assert isinstance(monitor, trt.IProgressMonitor)
    assert monitor.step_complete("Tactic selection", 3) is True
