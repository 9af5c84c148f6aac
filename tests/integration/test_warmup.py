"""Each Python-backend model's warm-up batch is a real sample that its compute() accepts, and a server that has
just reported ready serves a burst of concurrent requests without shedding any.

The warm-up runs in ``initialize``, before Triton marks the model ready: a batch the model refuses would fail the
load, and one that takes the "absent" path (an empty element) would warm nothing but that path.
"""

import asyncio
import json

import numpy as np
import pytest
from google.protobuf import json_format, text_format
from tritonclient.grpc import model_config_pb2 as mc

from trimodal import contract
from trimodal.bench.traffic import LoadGenerator, samples_from_split
from trimodal.layout import Layout
from trimodal.runtime.backends.onnx_model import OnnxModel
from trimodal.runtime.backends.postprocess import Postprocess
from trimodal.runtime.backends.preprocess import PreprocessAudio, PreprocessImage, PreprocessText
from trimodal.triton.install import missing_artifacts
from trimodal.triton.server import ServerConfig, TritonServer, free_port

pytestmark = pytest.mark.integration
REPOSITORY = Layout.default().repository.root


def _model(cls: type, name: str, config_file: str = "config.pbtxt"):
    """An instance set up as ``initialize`` would, from the rendered config, without the warm-up itself."""
    if missing_artifacts(REPOSITORY):
        pytest.skip("model repository not built: run `make build` first")
    config = text_format.Parse((REPOSITORY / name / config_file).read_text(), mc.ModelConfig())
    model = cls()
    model.model_config = json.loads(json_format.MessageToJson(config, preserving_proto_field_name=True))
    model.model_name = name
    model.version_dir = REPOSITORY / name / "1"
    model.parameters = {k: v.string_value for k, v in config.parameters.items()}
    model.setup()
    return model


@pytest.mark.parametrize(
    ("cls", "name", "mask"),
    [(PreprocessImage, "preprocess_image", contract.IMAGE_MASK),
     (PreprocessText, "preprocess_text", contract.TEXT_MASK),
     (PreprocessAudio, "preprocess_audio", contract.AUDIO_MASK)],
)  # fmt: skip
def test_preprocessors_warm_up_on_present_samples(cls: type, name: str, mask: str) -> None:
    model = _model(cls, name)
    batch = model.warm_inputs()
    outputs = model.compute(batch)
    assert len(next(iter(batch.values()))) == 2
    assert outputs[mask].reshape(-1).tolist() == [1.0, 1.0]  # decoded, not taken as absent


@pytest.mark.parametrize("name", contract.ENCODERS)
def test_onnx_models_warm_up_at_their_largest_batch(name: str) -> None:
    model = _model(OnnxModel, name, "configs/cpu.pbtxt")
    batch = model.warm_inputs()
    outputs = model.compute(batch)
    largest = model.model_config["max_batch_size"]
    assert {len(value) for value in batch.values()} == {largest}
    assert all(len(value) == largest and np.isfinite(value).all() for value in outputs.values())
    if contract.ATTENTION_MASK in batch:  # every token column runs: nothing is trimmed away
        assert batch[contract.ATTENTION_MASK].all()


def test_postprocess_warms_up_with_every_modality_present() -> None:
    model = _model(Postprocess, "postprocess")
    outputs = model.compute(model.warm_inputs())
    assert outputs[contract.AGREEMENT].tolist() == [[True]] and np.isfinite(outputs[contract.PROBABILITIES]).all()


def test_the_warm_up_runs_in_initialize(monkeypatch) -> None:
    """initialize() calls it after setup(): what makes Triton wait for it before the model is ready."""
    ran = []
    monkeypatch.setattr(Postprocess, "warm_up", lambda self: ran.append(self.model_name))
    monkeypatch.setattr("trimodal.runtime.backends.base._pb_utils", lambda: _FakeUtils)
    config = json.loads(json_format.MessageToJson(
        text_format.Parse((REPOSITORY / "postprocess" / "config.pbtxt").read_text(), mc.ModelConfig()),
        preserving_proto_field_name=True,
    ))  # fmt: skip
    args = {"model_config": json.dumps(config), "model_name": "postprocess",
            "model_repository": str(REPOSITORY / "postprocess"), "model_version": "1"}  # fmt: skip
    Postprocess().initialize(args)
    assert ran == ["postprocess"]


def test_a_server_just_ready_serves_32_concurrent_requests_without_shedding(tmp_path) -> None:
    """Before the warm-up (2 cores, Xeon): 16 and 23 of the first 32 concurrent requests were shed UNAVAILABLE
    ("Request timeout expired": over a second in a model's queue while every stub ran its first batch)."""
    if missing_artifacts(REPOSITORY):
        pytest.skip("model repository not built: run `make build` first")
    config = ServerConfig(
        model_repository=REPOSITORY, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
        work_dir=tmp_path / "work",
    )  # fmt: skip
    build = Layout.default().build.root
    with TritonServer(config).start(timeout_s=240) as server:
        generator = LoadGenerator(server.config.grpc_url, samples_from_split(build), deadline_s=30.0)
        result = asyncio.run(generator.closed_loop(32, 2.0))  # at once: no request before this one
    summary = result.summary()
    (build / "reliability").mkdir(parents=True, exist_ok=True)
    (build / "reliability" / "cold-start.json").write_text(json.dumps(summary, indent=2))
    assert result.statuses() == {"OK": len(result.outcomes)}, summary
    assert len(result.outcomes) >= 32, summary


class _FakeUtils:
    @staticmethod
    def triton_string_to_numpy(name: str) -> type:
        return {"TYPE_FP32": np.float32, "TYPE_BOOL": np.bool_, "TYPE_STRING": np.object_}[name]
