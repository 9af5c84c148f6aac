"""A real tritonserver serving the built model repository (CPU target) on free loopback ports."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from trimodal.triton.repository import DEFAULT_REPOSITORY, missing_artifacts
from trimodal.triton.server import ServerConfig, TritonServer, free_port
from trimodal.spec import load_spec

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def spec():
    return load_spec()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    missing = missing_artifacts(DEFAULT_REPOSITORY)
    if missing:
        pytest.skip(f"model repository not built ({missing[0]} missing): run `make build` first")
    config = ServerConfig(
        model_repository=DEFAULT_REPOSITORY, http_port=free_port(), grpc_port=free_port(),
        metrics_port=free_port(), work_dir=tmp_path_factory.mktemp("triton"), exit_timeout_s=15,
    )  # fmt: skip
    server = TritonServer(config).start(timeout_s=240)
    try:
        yield server
    finally:
        server.stop()
        assert server.shm_segments() == [], "the server left /dev/shm segments behind"


@pytest.fixture(scope="session")
def test_split(spec):
    from trimodal.training.data.dataset import load_split

    return load_split(ROOT / "build", "test")
