"""A tiny Python-backend model (echo: Y = 2 X) for fast tests of the server itself."""

from pathlib import Path

from trimodal.triton.server import ServerConfig, free_port

CONFIG = """
name: "echo"
backend: "python"
max_batch_size: 8
input { name: "X" data_type: TYPE_FP32 dims: [2] }
output { name: "Y" data_type: TYPE_FP32 dims: [2] }
dynamic_batching {}
instance_group { kind: KIND_CPU count: 1 }
"""

ECHO = """
from trimodal.runtime.backends.base import BatchedModel


class TritonPythonModel(BatchedModel):
    concatenate = True

    def reject(self, batch):
        if (batch["X"] < 0).any():
            return ValueError("X: expected non-negative values")

    def compute(self, inputs):
        return {"Y": inputs["X"] * 2}
"""

WEDGE = """
import os
import time
from pathlib import Path

from trimodal.runtime.backends.base import BatchedModel

FLAG = Path(__file__).parent / "wedge"


class TritonPythonModel(BatchedModel):
    # Echo that hangs while the flag file names the tritonserver it runs under (a wedged stage).
    concatenate = True

    def compute(self, inputs):
        if FLAG.exists() and FLAG.read_text().strip() == str(os.getppid()):
            time.sleep(3600)
        return {"Y": inputs["X"] * 2}
"""

BROKEN = """
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("deliberately broken model for the test")

    def execute(self, requests):
        return []
"""


def make_repo(root: Path, model_py: str) -> Path:
    (root / "echo" / "1").mkdir(parents=True)
    (root / "echo" / "config.pbtxt").write_text(CONFIG)
    (root / "echo" / "1" / "model.py").write_text(model_py)
    return root


def echo_config(repo: Path, work: Path, **overrides) -> ServerConfig:
    settings = dict(
        model_repository=repo, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
        model_config_name=None, work_dir=work, exit_timeout_s=10,
    )  # fmt: skip
    settings.update(overrides)
    return ServerConfig(**settings)
