"""The Helm chart: renders (default and CI values), validates offline against Kubernetes/CRD schemas, invariants.

Tools come from `bash deploy/tools.sh` (helm-python-sdk renders with Helm's own Go SDK; kubernetes-validate
ships the Kubernetes API schemas; npm CRD validators for ServiceMonitor/PodMonitor/ScaledObject). Each test
skips with a reason when its tool is missing.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "trimodal"
CI_VALUES = ROOT / "deploy" / "helm" / "ci-values.yaml"
CRD_VALIDATOR = ROOT / "deploy" / "helm" / "validate-crds.mjs"
CRD_MODULES = ROOT / "build" / "tools" / "crd-validators" / "node_modules"
NAMESPACE = "inference"
RELEASE = "trimodal"
# Oldest Kubernetes the chart supports (autoscaling/v2 behavior, policy/v1 PDB) and the newest schemas shipped.
KUBE_VERSIONS = ("1.30.0", "1.37.0")
CRD_KINDS = {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ScaledObject"}
INSTALL_HINT = "run `bash deploy/tools.sh`"

helm = pytest.importorskip("helm_python", reason=f"helm-python-sdk (Helm v4 renderer) not installed: {INSTALL_HINT}")

# default values; deploy/helm/ci-values.yaml (KEDA, object store, 2 GPUs); engine-build Job without autoscaler.
VARIANTS = ("default", "ci", "job")


def _values(variant: str) -> dict[str, Any]:
    if variant == "ci":
        return yaml.safe_load(CI_VALUES.read_text())
    if variant == "job":
        return {
            "engineBuild": {"mode": "job"},
            "modelRepository": {"source": "pvc", "pvc": {"existingClaim": "trimodal-models",
                                                         "accessModes": ["ReadWriteMany"]}},
            "autoscaling": {"mode": "none"},
            "ingress": {"enabled": True},
        }  # fmt: skip
    return {}


# The CRD-backed APIs a cluster with Prometheus Operator and KEDA serves (`helm template --api-versions ...`).
CRD_APIS = (
    "monitoring.coreos.com/v1/ServiceMonitor",
    "monitoring.coreos.com/v1/PodMonitor",
    "monitoring.coreos.com/v1/PrometheusRule",
    "keda.sh/v1alpha1/ScaledObject",
)


def helm_render(values: dict[str, Any], api_versions: tuple[str, ...] = ()) -> dict[str, str]:
    """`helm template` through Helm's SDK, with the cluster's extra API versions (`.Capabilities.APIVersions`)."""
    from helm_python import _native

    opts = {"name": RELEASE, "namespace": NAMESPACE, "is_install": True, "api_versions": list(api_versions)}
    with helm.Chart.load(str(CHART)) as chart:
        return json.loads(_native.call_string("helm_render", chart._raw(), json.dumps(values), json.dumps(opts)))


@cache
def _render_cached(variant: str, overrides_json: str, api_versions: tuple[str, ...]) -> tuple[dict[str, Any], ...]:
    values = _values(variant)
    values = _deep_merge(values, json.loads(overrides_json))
    manifests = helm_render(values, api_versions)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if not path.endswith((".yaml", ".yml")):
            continue
        docs.extend(d for d in yaml.safe_load_all(text) if d)
    return tuple(docs)


def _deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def render(variant: str = "default", *, crds: bool = True, **overrides: Any) -> list[dict[str, Any]]:
    """Render the chart (like `helm template`; by default for a cluster with the Prometheus Operator and KEDA CRDs)
    and return the parsed documents."""
    return list(_render_cached(variant, json.dumps(overrides, sort_keys=True), CRD_APIS if crds else ()))


def one(docs: list[dict[str, Any]], kind: str, component: str | None = None) -> dict[str, Any]:
    found = [
        d
        for d in docs
        if d["kind"] == kind
        and (component is None or d["metadata"].get("labels", {}).get("app.kubernetes.io/component") == component)
    ]
    assert len(found) == 1, f"expected one {kind} ({component}), got {[d['metadata']['name'] for d in found]}"
    return found[0]


def kinds(docs: list[dict[str, Any]]) -> list[str]:
    return [d["kind"] for d in docs]


def triton_container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    pod = one(docs, "Deployment", "triton")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "triton")


def flag(args: list[str], name: str) -> str | None:
    for arg in args:
        if arg.startswith(f"--{name}="):
            return arg.split("=", 1)[1]
    return None


# --------------------------------------------------------------------------------------------------- rendering


@pytest.mark.parametrize("variant", VARIANTS)
def test_renders(variant: str) -> None:
    docs = render(variant)
    assert "Deployment" in kinds(docs)
    for doc in docs:
        assert doc["metadata"]["name"], doc


def test_default_renders_hpa_not_keda_and_ci_renders_keda_not_hpa() -> None:
    default, ci = kinds(render()), kinds(render("ci"))
    assert "HorizontalPodAutoscaler" in default and "ScaledObject" not in default
    assert "ScaledObject" in ci and "HorizontalPodAutoscaler" not in ci


def test_ci_values_object_store_and_gpus() -> None:
    docs = render("ci")
    c = triton_container(docs)
    assert flag(c["args"], "model-repository") == "s3://trimodal-models/repository/v1"
    assert c["resources"]["limits"]["nvidia.com/gpu"] == "2"
    assert c["envFrom"] == [{"secretRef": {"name": "trimodal-s3-credentials"}}]
    pod = one(docs, "Deployment", "triton")["spec"]["template"]["spec"]
    assert "initContainers" not in pod
    assert "PersistentVolumeClaim" not in kinds(docs)
    assert "Secret" not in kinds(docs), "existingSecret given: the chart must not create one"


def test_object_store_with_engine_build_is_refused() -> None:
    with pytest.raises(Exception, match=r"engineBuild\.mode=none"):
        render(modelRepository={"source": "objectStore", "objectStore": {"url": "s3://b/p"}})


def test_too_short_grace_period_is_refused() -> None:
    with pytest.raises(Exception, match="terminationGracePeriodSeconds"):
        render(triton={"terminationGracePeriodSeconds": 30})


def test_engine_build_job_mode() -> None:
    docs = render("job")
    job = one(docs, "Job")
    assert "pre-install" in job["metadata"]["annotations"]["helm.sh/hook"]
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == "trimodal/engine-builder:26.10"
    assert "--repository" in container["command"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    pod = one(docs, "Deployment", "triton")["spec"]["template"]["spec"]
    assert "initContainers" not in pod


# ---------------------------------------------------------------------------------------- offline validation


def _kubernetes_validate() -> Any:
    return pytest.importorskip(
        "kubernetes_validate", reason=f"kubernetes-validate (offline Kubernetes schemas) not installed: {INSTALL_HINT}"
    )


@pytest.mark.parametrize("kube_version", KUBE_VERSIONS)
@pytest.mark.parametrize("variant", VARIANTS)
def test_builtin_kinds_validate_against_kubernetes_schemas(variant: str, kube_version: str) -> None:
    kv = _kubernetes_validate()
    checked = 0
    for doc in render(variant):
        if doc["kind"] in CRD_KINDS:
            continue
        try:
            kv.validate(doc, kube_version, strict=True)
        except kv.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']} invalid for Kubernetes {kube_version}: {exc}")
        checked += 1
    assert checked >= 8


@pytest.mark.parametrize("variant", VARIANTS)
def test_custom_resources_validate_against_crd_schemas(variant: str) -> None:
    node = shutil.which("node")
    if node is None or not (CRD_MODULES / "@kubernetes-models" / "keda").is_dir():
        pytest.skip(f"node or the npm CRD validators are missing: {INSTALL_HINT}")
    crs = [d for d in render(variant) if d["kind"] in CRD_KINDS]
    assert crs, "expected a ServiceMonitor/PodMonitor and a ScaledObject in some variant"
    proc = subprocess.run(
        [node, str(CRD_VALIDATOR), str(CRD_MODULES)],
        input=json.dumps(crs),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    assert len(results) == len(crs)
    bad = [r for r in results if not r["ok"]]
    assert not bad, bad


def test_crd_validator_rejects_a_broken_resource() -> None:
    node = shutil.which("node")
    if node is None or not (CRD_MODULES / "@kubernetes-models" / "keda").is_dir():
        pytest.skip(f"node or the npm CRD validators are missing: {INSTALL_HINT}")
    broken = one(render("ci"), "ScaledObject")
    broken = json.loads(json.dumps(broken))
    broken["spec"]["minReplicaCount"] = "two"
    proc = subprocess.run(
        [node, str(CRD_VALIDATOR), str(CRD_MODULES)],
        input=json.dumps([broken]),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert not json.loads(proc.stdout)[0]["ok"]


# ------------------------------------------------------------------------------------------------ invariants


@pytest.mark.parametrize("variant", VARIANTS)
def test_grace_period_exceeds_prestop_plus_exit_timeout(variant: str) -> None:
    docs = render(variant)
    pod = one(docs, "Deployment", "triton")["spec"]["template"]["spec"]
    c = triton_container(docs)
    exit_timeout = int(flag(c["args"], "exit-timeout-secs") or 0)
    assert exit_timeout > 0
    prestop = " ".join(c["lifecycle"]["preStop"]["exec"]["command"])
    sleep = int(re.search(r"sleep (\d+)", prestop).group(1))  # type: ignore[union-attr]
    assert pod["terminationGracePeriodSeconds"] > exit_timeout
    assert pod["terminationGracePeriodSeconds"] > sleep + exit_timeout


@pytest.mark.parametrize("variant", VARIANTS)
def test_probes(variant: str) -> None:
    c = triton_container(render(variant))
    assert c["readinessProbe"]["httpGet"]["path"] == "/v2/models/multimodal/ready"
    assert c["startupProbe"]["httpGet"]["path"] == "/v2/models/multimodal/ready"
    liveness = c["livenessProbe"]
    assert liveness.get("httpGet", {}).get("path") != "/v2/health/live", "live stays true when a stub dies"
    command = liveness["exec"]["command"]
    for model in ("preprocess_image", "preprocess_text", "preprocess_audio"):
        assert model in command
    assert liveness["failureThreshold"] * liveness["periodSeconds"] <= 60
    assert liveness["timeoutSeconds"] >= 4, "the probe checks live + 3 models at 1 s each"


def test_liveness_script_is_shipped_and_checks_model_readiness() -> None:
    docs = render()
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-probe"))
    script = cm["data"]["liveness.py"]
    assert "/v2/models/{m}/ready" in script and "/v2/health/live" in script
    compile(script, "liveness.py", "exec")


@pytest.mark.parametrize("variant", VARIANTS)
def test_restricted_apis_and_control_mode(variant: str) -> None:
    docs = render(variant)
    c = triton_container(docs)
    header = "x-trimodal-admin" if variant == "ci" else "admin-key"
    for name in ("grpc-restricted-protocol", "http-restricted-api"):
        value = flag(c["args"], name)
        assert value is not None, name
        apis, key = value.split(":", 1)
        assert set(apis.split(",")) >= {"model-repository", "shared-memory", "logging", "trace"}
        assert "model-config" not in apis.split(","), "model-config read stays open (deploy/SECURITY.md)"
        assert key == f"{header}=$(TRITON_ADMIN_KEY)"
    assert flag(c["args"], "model-control-mode") == "none"
    env = {e["name"]: e for e in c["env"]}
    secret_ref = env["TRITON_ADMIN_KEY"]["valueFrom"]["secretKeyRef"]
    expected = "trimodal-admin" if variant == "ci" else "trimodal-admin-key"
    assert secret_ref["name"] == expected
    if variant == "default":
        assert one(docs, "Secret")["metadata"]["name"] == expected


@pytest.mark.parametrize("variant", VARIANTS)
def test_security_context(variant: str) -> None:
    docs = render(variant)
    for component in ("triton", "envoy"):
        pod = one(docs, "Deployment", component)["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        assert pod["automountServiceAccountToken"] is False
        for c in pod["containers"] + pod.get("initContainers", []):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["capabilities"]["drop"] == ["ALL"]
    pod = one(docs, "Deployment", "triton")["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["dshm"]["emptyDir"]["medium"] == "Memory"
    mounts = {m["mountPath"]: m for m in triton_container(docs)["volumeMounts"]}
    assert {"/tmp", "/dev/shm"} <= set(mounts)
    if "/models" in mounts:
        assert mounts["/models"]["readOnly"] is True


def test_gpu_scheduling_and_spread() -> None:
    docs = render()
    pod = one(docs, "Deployment", "triton")["spec"]["template"]["spec"]
    assert triton_container(docs)["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    keys = {t["topologyKey"] for t in pod["topologySpreadConstraints"]}
    assert "kubernetes.io/hostname" in keys
    strategy = one(docs, "Deployment", "triton")["spec"]["strategy"]["rollingUpdate"]
    assert strategy["maxUnavailable"] == 0
    pdb = next(d for d in docs if d["kind"] == "PodDisruptionBudget" and d["metadata"]["name"].endswith("-triton"))
    assert pdb["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"] == "triton"


def test_grpc_path_envoy_over_headless_service() -> None:
    docs = render()
    headless = next(d for d in docs if d["kind"] == "Service" and d["spec"].get("clusterIP") == "None")
    assert headless["spec"]["selector"]["app.kubernetes.io/component"] == "triton"
    fqdn = f"{headless['metadata']['name']}.{NAMESPACE}.svc.cluster.local"
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "envoy.yaml" in d.get("data", {}))
    envoy = yaml.safe_load(cm["data"]["envoy.yaml"])
    clusters = {c["name"]: c for c in envoy["static_resources"]["clusters"]}
    grpc = clusters["triton_grpc"]
    assert grpc["type"] == "STRICT_DNS" and grpc["lb_policy"] == "ROUND_ROBIN"
    assert "http2_protocol_options" in json.dumps(grpc["typed_extension_protocol_options"])
    address = grpc["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]["socket_address"]
    assert address == {"address": fqdn, "port_value": 8001}
    listener = next(x for x in envoy["static_resources"]["listeners"] if x["name"] == "grpc")
    filters = listener["filter_chains"][0]["filters"][0]["typed_config"]["http_filters"]
    buffer = next(f for f in filters if f["name"] == "envoy.filters.http.buffer")
    assert buffer["typed_config"]["max_request_bytes"] == 16777216, "the gRPC message size cap"
    assert envoy["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"
    client_service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == RELEASE)
    assert client_service["spec"]["selector"]["app.kubernetes.io/component"] == "envoy"


def test_network_policy_admits_envoy_only_on_serving_ports() -> None:
    policy = one(render(), "NetworkPolicy")
    serving = policy["spec"]["ingress"][0]
    assert serving["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"] == "envoy"
    assert {p["port"] for p in serving["ports"]} == {8000, 8001}


def _adapter_metric_names(docs: list[dict[str, Any]]) -> set[str]:
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-adapter-rules"))
    rules = yaml.safe_load(cm["data"]["config.yaml"])["rules"]
    for rule in rules:
        assert {"seriesQuery", "resources", "name", "metricsQuery"} <= set(rule)
        assert "<<.LabelMatchers>>" in rule["metricsQuery"] and "<<.GroupBy>>" in rule["metricsQuery"]
    return {rule["name"]["as"] for rule in rules}


@pytest.mark.parametrize(
    "scale_on", [["requestRate", "queueComputeRatio"], ["pendingRequests"], ["queueComputeRatio", "requestRate"]]
)
def test_hpa_targets_deployment_and_adapter_metrics(scale_on: list[str]) -> None:
    docs = render(autoscaling={"scaleOn": scale_on})
    hpa = one(docs, "HorizontalPodAutoscaler")
    deployment = one(docs, "Deployment", "triton")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["apiVersion"], ref["kind"], ref["name"]) == ("apps/v1", "Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    names = _adapter_metric_names(docs)
    assert len(hpa["spec"]["metrics"]) == len(scale_on)
    for spec in hpa["spec"]["metrics"]:
        assert spec["type"] == "Pods"
        assert spec["pods"]["metric"]["name"] in names, f"{spec} not defined by the adapter rules {names}"
    behavior = hpa["spec"]["behavior"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= 300, "longer than a GPU pod's start-up"
    assert hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]


def test_default_scales_on_a_proportional_and_a_queueing_metric() -> None:
    hpa = one(render(), "HorizontalPodAutoscaler")
    names = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"]}
    assert names == {"trimodal_requests_per_second", "trimodal_queue_compute_ratio"}


def test_unknown_scale_on_metric_is_refused() -> None:
    with pytest.raises(Exception, match=r"scaleOn"):  # values.schema.json, before the template's own check
        render(autoscaling={"scaleOn": ["gpuMagic"]})


def test_adapter_rules_use_triton_metrics() -> None:
    docs = render()
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-adapter-rules"))
    text = cm["data"]["config.yaml"]
    for metric in (
        "nv_inference_queue_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_pending_request_count",
        "nv_inference_request_success",
    ):
        assert metric in text
    assert 'model!~"multimodal"' in text


def test_keda_scaled_object() -> None:
    docs = render("ci")
    so = one(docs, "ScaledObject")
    deployment = one(docs, "Deployment", "triton")
    assert so["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    triggers = {t["name"]: t for t in so["spec"]["triggers"]}
    assert set(triggers) == {"trimodal_requests_per_second", "trimodal_pending_requests"}
    assert all(t["type"] == "prometheus" for t in triggers.values())
    pending = triggers["trimodal_pending_requests"]
    assert "nv_inference_pending_request_count" in pending["metadata"]["query"]
    assert float(pending["metadata"]["threshold"]) == 16
    assert 'model="multimodal"' in triggers["trimodal_requests_per_second"]["metadata"]["query"]
    assert so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    ratio = one(render("ci", autoscaling={"scaleOn": ["queueComputeRatio"]}), "ScaledObject")
    (trigger,) = ratio["spec"]["triggers"]
    assert float(trigger["metadata"]["threshold"]) == 1.0 and trigger["metricType"] == "Value"
    assert "-adapter-rules" not in json.dumps([d["metadata"]["name"] for d in docs])


def test_monitoring_and_dashboard() -> None:
    default, ci = render(), render("ci")
    sm = one(default, "ServiceMonitor", "triton")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    envoy_sm = one(default, "ServiceMonitor", "envoy")
    assert envoy_sm["spec"]["endpoints"][0] == {"port": "ops", "path": "/stats/prometheus", "interval": "15s"}
    assert "PodMonitor" in kinds(ci) and "ServiceMonitor" not in kinds(ci)
    dash = next(d for d in default if d["kind"] == "ConfigMap" and d["metadata"]["name"].endswith("-dashboard"))
    assert dash["metadata"]["labels"]["grafana_dashboard"] == "1"
    shipped = json.loads((CHART / "files" / "dashboards" / "trimodal.json").read_text())
    assert json.loads(dash["data"]["trimodal.json"]) == shipped


def test_release_matches_docker_compose() -> None:
    compose = (ROOT / "docker-compose.yml").read_text()
    match = re.search(r"TRIMODAL_NGC_RELEASE:-([0-9.]+)", compose)
    if match is None:
        pytest.skip("docker-compose.yml does not pin TRIMODAL_NGC_RELEASE")
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    assert values["release"] == match.group(1), "the chart and docker compose must pin the same NGC release"


def test_release_pinned_once() -> None:
    docs = render(release="26.11")
    c = triton_container(docs)
    assert c["image"] == "trimodal/triton:26.11"
    init = {c["name"]: c for c in one(docs, "Deployment", "triton")["spec"]["template"]["spec"]["initContainers"]}
    assert init["engine-build"]["image"] == "trimodal/engine-builder:26.11", "engines and server from one release"


# ------------------------------------------------------------------------------- issue 12: the GPU path in Helm


@pytest.mark.parametrize("variant", VARIANTS)
def test_triton_exports_latency_summaries(variant: str) -> None:
    """The dashboard's p50/p99 panels read Triton's summaries: compose and the chart both enable them."""
    assert flag(triton_container(render(variant))["args"], "metrics-config") == "summary_latencies=true"


def _engine_build_commands(docs: list[dict[str, Any]]) -> list[str]:
    commands = []
    for doc in docs:
        if doc["kind"] not in ("Deployment", "Job"):
            continue
        pod = doc["spec"]["template"]["spec"]
        for c in pod.get("initContainers", []) + (pod["containers"] if doc["kind"] == "Job" else []):
            commands.append(" ".join(c.get("command", []) + c.get("args", [])))
    return commands


PVC_VALUES = {"modelRepository": {"source": "pvc", "pvc": {"existingClaim": "models", "accessModes": ["ReadOnlyMany"]}}}
JOB_VALUES = {
    "modelRepository": {"source": "pvc", "pvc": {"existingClaim": "models", "accessModes": ["ReadWriteMany"]}},
    "engineBuild": {"mode": "job"},
}


@pytest.mark.parametrize("values", [{}, PVC_VALUES, JOB_VALUES], ids=["image", "pvc", "job"])
def test_engine_builds_never_train_or_render(values: dict[str, Any]) -> None:
    """Builds read the ONNX graphs already in the repository: `trimodal build-engines`, never `trimodal build`."""
    builds = [c for c in _engine_build_commands(render(**values)) if "trimodal" in c]
    assert builds, "expected an engine build"
    for command in builds:
        assert "trimodal build-engines" in command, command
        assert not re.search(r"trimodal (build|render)( |$)", command), command
        assert "--repository /models" in command


def test_job_mode_builds_into_an_existing_filled_claim() -> None:
    """A pre-install hook runs before the chart's own objects exist: the claim must exist (and be filled) first."""
    docs = render(**JOB_VALUES)
    job = one(docs, "Job")
    assert "pre-install" in job["metadata"]["annotations"]["helm.sh/hook"]
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"]["claimName"] == "models"
    assert "PersistentVolumeClaim" not in kinds(docs), "an empty claim created by the chart cannot feed a build"
    with pytest.raises(Exception, match="existingClaim"):
        render(modelRepository={"source": "pvc"}, engineBuild={"mode": "job"})
    with pytest.raises(Exception, match="ReadWriteMany"):
        render(modelRepository={"source": "pvc", "pvc": {"existingClaim": "m", "accessModes": ["ReadOnlyMany"]}},
               engineBuild={"mode": "job"})  # fmt: skip


@pytest.mark.parametrize("mode", [["ReadWriteOnce"], ["ReadWriteOncePod"]])
def test_single_node_claim_is_refused(mode: list[str]) -> None:
    """Several Triton pods (replicas, autoscaling, the rollout's surge pod) spread over nodes cannot attach a
    ReadWriteOnce volume (Multi-Attach error on block storage)."""
    with pytest.raises(Exception, match="Multi-Attach"):
        render(modelRepository={"source": "pvc", "pvc": {"existingClaim": "m", "accessModes": mode}})


def test_default_reads_the_models_image_into_a_pod_local_volume() -> None:
    docs = render()
    pod = one(docs, "Deployment", "triton")["spec"]["template"]["spec"]
    names = [c["name"] for c in pod["initContainers"]]
    assert names == ["fetch-models", "engine-build"]
    fetch = pod["initContainers"][0]
    assert fetch["image"].startswith("trimodal/models:")
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes["models"]
    assert "PersistentVolumeClaim" not in kinds(docs)


# -------------------------------------------------------------------------- issue 13: shutdown order (Envoy first)


def _envoy_pod(docs: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = one(docs, "Deployment", "envoy")["spec"]["template"]["spec"]
    return pod, pod["containers"][0]


@pytest.mark.parametrize("variant", VARIANTS)
def test_shutdown_order_envoy_drains_before_triton_stops(variant: str) -> None:
    """Timeline when Envoy and Triton pods terminate together (helm uninstall, node drain): Envoy fails its health
    check and drains within drainSeconds, shorter than Triton's preStop sleep, during which Triton still serves;
    only then does Triton get SIGTERM and drain within --exit-timeout-secs; no grace period cuts either short."""
    docs = render(variant)
    epod, envoy = _envoy_pod(docs)
    env = {e["name"]: e.get("value") for e in envoy["env"]}
    drain, drain_min = int(env["DRAIN_SECONDS"]), int(env["DRAIN_MIN_SECONDS"])
    assert envoy["lifecycle"]["preStop"]["exec"]["command"] == ["bash", "/etc/envoy/envoy-drain.sh", "drain"]
    args = envoy["args"]
    assert int(args[args.index("--drain-time-s") + 1]) == drain
    assert epod["terminationGracePeriodSeconds"] >= drain + 5
    assert 0 < drain_min <= drain

    tpod = one(docs, "Deployment", "triton")["spec"]["template"]["spec"]
    triton = triton_container(docs)
    sleep = int(re.search(r"sleep (\d+)", " ".join(triton["lifecycle"]["preStop"]["exec"]["command"])).group(1))  # type: ignore[union-attr]
    exit_timeout = int(flag(triton["args"], "exit-timeout-secs") or 0)
    assert drain < sleep, "Envoy must be drained before Triton stops taking requests"
    assert tpod["terminationGracePeriodSeconds"] >= sleep + exit_timeout + 5
    cm = next(d for d in docs if d["kind"] == "ConfigMap" and "envoy.yaml" in d.get("data", {}))
    assert cm["data"]["envoy-drain.sh"] == (CHART / "files" / "envoy-drain.sh").read_text()
    mounts = {m["mountPath"]: m["name"] for m in envoy["volumeMounts"]}
    assert mounts["/etc/envoy"] == "config"
    # retried on another pod when a stopping Triton refuses with UNAVAILABLE
    envoy_config = yaml.safe_load(cm["data"]["envoy.yaml"])
    grpc_listener = next(x for x in envoy_config["static_resources"]["listeners"] if x["name"] == "grpc")
    routes = grpc_listener["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]["virtual_hosts"][0]
    unary = routes["routes"][-1]["route"]
    assert "unavailable" in unary["retry_policy"]["retry_on"]


@pytest.mark.parametrize(
    ("envoy", "match"),
    [
        ({"drainSeconds": 15}, "shorter than triton.preStopSleepSeconds"),
        ({"drainSeconds": 10, "terminationGracePeriodSeconds": 12}, r"envoy\.terminationGracePeriodSeconds"),
        ({"drainMinSeconds": 11}, "drainMinSeconds"),
    ],
)
def test_bad_shutdown_timing_is_refused(envoy: dict[str, Any], match: str) -> None:
    with pytest.raises(Exception, match=match):
        render(envoy=envoy)


# --------------------------------------------------------------------- issue 14: the conventions Helm users expect


def test_chart_installs_without_operator_crds() -> None:
    """A cluster without the Prometheus Operator or KEDA: no custom resource is rendered, everything else validates."""
    kv = _kubernetes_validate()
    for variant in VARIANTS:
        docs = render(variant, crds=False)
        assert not CRD_KINDS & set(kinds(docs)), variant
        for doc in docs:
            kv.validate(doc, KUBE_VERSIONS[0], strict=True)
    keda_without_keda = one(render("ci", crds=False), "Deployment", "triton")
    assert keda_without_keda["spec"]["replicas"] == 1, "a fixed size (minReplicas) until KEDA exists"


def test_custom_resources_rendered_when_the_apis_exist() -> None:
    default, ci = kinds(render()), kinds(render("ci"))
    assert default.count("ServiceMonitor") == 2 and "PrometheusRule" in default  # Triton + Envoy
    assert ci.count("PodMonitor") == 2 and "ScaledObject" in ci


@pytest.mark.parametrize("variant", VARIANTS)
def test_helm_lint_strict(variant: str, tmp_path: Path) -> None:
    values = _values(variant)
    report = helm.lint(str(CHART), values, strict=True, namespace=NAMESPACE, kube_version="v1.30.0")
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert not problems and not report["errors"], report


def test_kube_version_constraint() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    match = re.fullmatch(r">=(\d+)\.(\d+)\.0-0", chart["kubeVersion"])
    assert match, chart["kubeVersion"]
    minimum = (int(match.group(1)), int(match.group(2)))
    assert minimum == tuple(int(x) for x in KUBE_VERSIONS[0].split(".")[:2]), "the oldest schemas validated"


def test_values_schema_accepts_the_shipped_values_and_refuses_mistakes() -> None:
    with helm.Chart.load(str(CHART)) as chart:
        assert chart.schema is not None
        for variant in VARIANTS:
            chart.validate_schema(_values(variant))
        for bad, says in (  # each refused for its own mistake, named by its path
            ({"autoscaling": {"mode": "kubernetes"}}, "at '/autoscaling/mode': value must be one of"),
            ({"modelRepository": {"source": "s3"}}, "at '/modelRepository/source': value must be one of"),
            ({"trition": {"replicas": 2}}, "additional properties 'trition' not allowed"),  # a typo is not ignored
            ({"ingress": {"host": "x"}}, "at '/ingress': additional properties 'host'"),  # now ingress.hosts[]
            ({"engineBuild": {"mode": "job", "extraArgs": "--force"}}, "at '/engineBuild/extraArgs': got string"),
            ({"metrics": {"prometheusRule": {"failureRatio": 5}}}, "at '/metrics/prometheusRule/failureRatio'"),
        ):
            with pytest.raises(Exception, match=re.escape(says)):
                chart.validate_schema(bad)


def test_chart_readme_values_table_is_current() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("values_table", ROOT / "deploy" / "helm" / "values_table.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    readme = (CHART / "README.md").read_text()
    assert readme == module.render_readme(readme), "run: python deploy/helm/values_table.py"
    text = (CHART / "values.yaml").read_text()
    undocumented = [k for k, _, d in module.rows(yaml.safe_load(text), module.descriptions(text)) if not d]
    assert not undocumented, f"values without a comment in values.yaml: {undocumented}"


def _notes(crds: bool = True, **values: Any) -> str:
    return helm_render(values, CRD_APIS if crds else ())["trimodal/templates/NOTES.txt"]


def test_notes_tell_address_admin_key_port_forward_and_infer() -> None:
    notes = _notes()
    assert "trimodal.inference.svc:8001" in notes and "trimodal.inference.svc:8000" in notes
    assert "kubectl -n inference port-forward svc/trimodal 8001:8001 8000:8000" in notes
    assert "trimodal infer --url 127.0.0.1:8001" in notes
    assert "get secret trimodal-admin-key -o jsonpath='{.data.admin-key}' | base64 -d" in notes
    assert "triton-grpc-protocol-admin-key" in notes
    assert "helm test trimodal -n inference" in notes
    assert "no Prometheus Operator" not in notes
    assert "no Prometheus Operator API" in _notes(crds=False)
    assert "WARNING: autoscaling.mode=keda" in _notes(crds=False, autoscaling={"mode": "keda"})


def test_helm_test_pod_checks_readiness_and_infers() -> None:
    docs = render()
    (pod,) = [d for d in docs if d["kind"] == "Pod"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    script = pod["spec"]["containers"][0]["command"][-1]
    assert "http://trimodal.inference.svc:8000/v2/models/multimodal/ready" in script
    assert "trimodal infer --url trimodal.inference.svc:8001" in script
    assert pod["spec"]["containers"][0]["image"] == "trimodal/triton:26.10", "the serving image carries the client"
    assert pod["spec"]["restartPolicy"] == "Never"
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    policy = one(docs, "NetworkPolicy")
    selectors = [f.get("podSelector", {}).get("matchLabels", {}) for f in policy["spec"]["ingress"][0]["from"]]
    assert any(s.get("app.kubernetes.io/component") == "test" for s in selectors)
    headless = next(d for d in render(envoy={"enabled": False}) if d["kind"] == "Pod")
    assert "trimodal-triton-headless.inference.svc:8001" in headless["spec"]["containers"][0]["command"][-1]
    assert not [d for d in render(tests={"enabled": False}) if d["kind"] == "Pod"]


def test_ingress_hosts() -> None:
    hosts = [
        {"host": "a.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]},
        {"host": "b.example.com", "paths": [{"path": "/inference.GRPCInferenceService", "pathType": "Prefix"}]},
    ]
    ingress = one(render(ingress={"enabled": True, "hosts": hosts}), "Ingress")
    rules = ingress["spec"]["rules"]
    assert [r["host"] for r in rules] == ["a.example.com", "b.example.com"]
    assert rules[1]["http"]["paths"][0]["path"] == "/inference.GRPCInferenceService"
    assert rules[0]["http"]["paths"][0]["backend"]["service"] == {"name": "trimodal", "port": {"number": 8001}}


def test_service_account() -> None:
    docs = render()
    sa = one(docs, "ServiceAccount")
    assert sa["metadata"]["name"] == "trimodal" and sa["automountServiceAccountToken"] is False
    for component in ("triton", "envoy"):
        pod = one(docs, "Deployment", component)["spec"]["template"]["spec"]
        assert pod["serviceAccountName"] == "trimodal"
    existing = render(serviceAccount={"create": False, "name": "inference-sa"})
    assert "ServiceAccount" not in kinds(existing)
    assert one(existing, "Deployment", "triton")["spec"]["template"]["spec"]["serviceAccountName"] == "inference-sa"


def test_fill_models_pod_manifest_validates() -> None:
    kv = _kubernetes_validate()
    pod = yaml.safe_load((ROOT / "deploy" / "helm" / "fill-models-pod.yaml").read_text())
    for version in KUBE_VERSIONS:
        kv.validate(pod, version, strict=True)
    assert pod["spec"]["volumes"][0]["persistentVolumeClaim"]["claimName"] == "trimodal-models"
