"""Exposed surface: loopback binding, restricted APIs behind a key, gRPC TLS and mTLS."""

import subprocess
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from echo_repo import ECHO, echo_config, make_repo
from tritonclient.utils import InferenceServerException

from trimodal.triton.server import ADMIN_HEADER, GRPC_ADMIN_HEADER, TlsConfig, TritonServer

pytestmark = pytest.mark.integration
KEY = "test-admin-key-0123456789"


def _echo(client: grpcclient.InferenceServerClient) -> np.ndarray:
    tensor = grpcclient.InferInput("X", [1, 2], "FP32")
    tensor.set_data_from_numpy(np.array([[1, 2]], dtype=np.float32))
    return client.infer("echo", [tensor], client_timeout=10).as_numpy("Y")


def _listening_addresses(port: int) -> set[str]:
    addresses = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.rsplit(":", 1)
            if state == "0A" and int(hex_port, 16) == port:
                addresses.add(address)
    return addresses


def _http(url: str, headers: dict[str, str] | None = None, data: bytes | None = None) -> int:
    request = urllib.request.Request(url, headers=headers or {}, data=data)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


@pytest.fixture(scope="module")
def restricted(tmp_path_factory):
    root = tmp_path_factory.mktemp("security")
    config = echo_config(make_repo(root / "repo", ECHO), root / "work", admin_key=KEY)
    with TritonServer(config).start(timeout_s=60) as server:
        yield server


def test_binds_to_loopback_only(restricted) -> None:
    for port in (restricted.config.grpc_port, restricted.config.http_port, restricted.config.metrics_port):
        # 127.0.0.1 as IPv4, or as IPv4-mapped IPv6 (::ffff:127.0.0.1, how gRPC binds it)
        loopback = {"0100007F", "0000000000000000FFFF00000100007F"}
        addresses = _listening_addresses(port)
        assert addresses and addresses <= loopback, f"port {port} listens on {addresses}, beyond 127.0.0.1"


def test_model_loading_needs_the_key(restricted) -> None:
    """Explicit model control (what lets `trimodal serve` drain): loading and unloading stay behind the key."""
    assert "--model-control-mode=explicit" in restricted.command()
    base = restricted.config.http_url
    for path in ("/v2/repository/models/echo/load", "/v2/repository/models/echo/unload"):
        assert _http(f"{base}{path}", data=b"{}") == 403
        assert _http(f"{base}{path}", {ADMIN_HEADER: "wrong"}, data=b"{}") == 403
    assert _http(f"{base}/v2/models/echo/ready") == 200, "a refused request changed the loaded models"


def test_restricted_grpc_apis_need_the_key(restricted) -> None:
    client = grpcclient.InferenceServerClient(restricted.config.grpc_url)
    np.testing.assert_allclose(_echo(client), [[2, 4]])  # inference stays open
    deadline = {"client_timeout": 10.0}  # every call has one: a wedged server fails the test instead of hanging it
    assert client.is_server_ready(**deadline)
    # model-config read is open (perf_analyzer over gRPC, Model Analyzer, tritonclient need it): no key
    assert client.get_model_config("echo", as_json=True, **deadline)["config"]["name"] == "echo"
    for call in (
        lambda **kw: client.get_model_repository_index(**deadline, **kw),
        lambda **kw: client.get_system_shared_memory_status(**deadline, **kw),
        lambda **kw: client.get_log_settings(**deadline, **kw),
        lambda **kw: client.get_trace_settings(**deadline, **kw),
    ):
        with pytest.raises(InferenceServerException) as info:
            call()
        assert "This protocol is restricted" in info.value.message(), info.value
        call(headers={GRPC_ADMIN_HEADER: KEY})  # the key unlocks it
    with pytest.raises(InferenceServerException) as wrong:
        client.get_model_repository_index(headers={GRPC_ADMIN_HEADER: "wrong"}, **deadline)
    assert "This protocol is restricted" in wrong.value.message(), wrong.value


def test_restricted_http_apis_need_the_key(restricted) -> None:
    base = restricted.config.http_url
    assert _http(f"{base}/v2/models/echo/config") == 200  # read-only config stays open (deploy/SECURITY.md)
    assert _http(f"{base}/v2/repository/index", data=b"{}") == 403
    assert _http(f"{base}/v2/repository/index", {ADMIN_HEADER: KEY}, data=b"{}") == 200
    assert _http(f"{base}/v2/logging") == 403
    assert _http(f"{base}/v2/trace/setting") == 403
    assert _http(f"{base}/v2/repository/models/echo/unload", data=b"{}") == 403
    assert _http(f"{base}/v2/systemsharedmemory/status") == 403
    assert _http(f"{base}/v2/models/echo") == 200  # metadata stays open
    assert _http(f"{base}/v2/health/ready") == 200


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _certificates(folder: Path) -> dict[str, Path]:
    """A throwaway CA, a server certificate for 127.0.0.1/localhost and a client certificate."""
    files = {name: folder / f"{name}.pem" for name in ("ca", "ca_key", "server", "server_key", "client", "client_key")}
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=trimodal-test-ca",
             "-keyout", str(files["ca_key"]), "-out", str(files["ca"]))  # fmt: skip
    for role, san in (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "subjectAltName=DNS:client")):
        csr = folder / f"{role}.csr"
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={role}", "-keyout", str(files[f"{role}_key"]),
                 "-out", str(csr))  # fmt: skip
        ext = folder / f"{role}.ext"
        ext.write_text(san + "\n")
        _openssl("x509", "-req", "-in", str(csr), "-CA", str(files["ca"]), "-CAkey", str(files["ca_key"]),
                 "-CAcreateserial", "-days", "1", "-extfile", str(ext), "-out", str(files[role]))  # fmt: skip
    return files


def test_grpc_mutual_tls(tmp_path: Path) -> None:
    certs = _certificates(tmp_path)
    tls = TlsConfig(server_cert=certs["server"], server_key=certs["server_key"], root_cert=certs["ca"], mutual=True)
    config = echo_config(make_repo(tmp_path / "repo", ECHO), tmp_path / "work", tls=tls)
    with TritonServer(config).start(timeout_s=60):
        secure = grpcclient.InferenceServerClient(
            config.grpc_url, ssl=True, root_certificates=str(certs["ca"]),
            private_key=str(certs["client_key"]), certificate_chain=str(certs["client"]),
        )  # fmt: skip
        np.testing.assert_allclose(_echo(secure), [[2, 4]])
        anonymous = grpcclient.InferenceServerClient(config.grpc_url, ssl=True, root_certificates=str(certs["ca"]))
        with pytest.raises(InferenceServerException):
            _echo(anonymous)
        plaintext = grpcclient.InferenceServerClient(config.grpc_url)
        with pytest.raises(InferenceServerException):
            _echo(plaintext)


def test_grpc_tls_without_client_certificates(tmp_path: Path) -> None:
    certs = _certificates(tmp_path)
    config = echo_config(make_repo(tmp_path / "repo", ECHO), tmp_path / "work",
                         tls=TlsConfig(server_cert=certs["server"], server_key=certs["server_key"]))  # fmt: skip
    with TritonServer(config).start(timeout_s=60):
        secure = grpcclient.InferenceServerClient(config.grpc_url, ssl=True, root_certificates=str(certs["ca"]))
        np.testing.assert_allclose(_echo(secure), [[2, 4]])
        with pytest.raises(InferenceServerException):
            _echo(grpcclient.InferenceServerClient(config.grpc_url))
