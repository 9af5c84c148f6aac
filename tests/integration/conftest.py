"""A real tritonserver serving the built model repository (CPU target) on free loopback ports."""

from collections.abc import Iterator
from pathlib import Path

import pytest

from trimodal.layout import Layout
from trimodal.spec import load_spec
from trimodal.triton.install import missing_artifacts
from trimodal.triton.server import ServerConfig, TritonServer, free_port

REPOSITORY = Layout.default().repository.root

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def spec():
    return load_spec()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    missing = missing_artifacts(REPOSITORY)
    if missing:
        pytest.skip(f"model repository not built ({missing[0]} missing): run `make build` first")
    config = ServerConfig(
        model_repository=REPOSITORY, http_port=free_port(), grpc_port=free_port(),
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

    return load_split(Layout.default().build.root, "test")
