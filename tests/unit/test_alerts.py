"""Alert rules and the Prometheus configuration, checked and unit-tested by promtool (Debian's `prometheus` package,
2.42; `bash deploy/tools.sh` installs it): compose's deploy/prometheus/alerts.yml and the Helm chart's
PrometheusRule, which must carry the same alerts with the same expressions and thresholds.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool not installed: `bash deploy/tools.sh` (apt-get install prometheus)"
)
MIN_REPLICAS = 2
TRITON_POD = 'namespace="inference",pod="trimodal-triton-6f7c9d-abcde"'
ENVOY_POD = 'namespace="inference",pod="trimodal-envoy-5b8d4f-fghij"'


def compose_rules(minimum: int = MIN_REPLICAS) -> str:
    """deploy/prometheus/alerts.yml as the prometheus service's start command writes it."""
    return (PROMETHEUS / "alerts.yml").read_text().replace("TRIMODAL_MIN_REPLICAS", str(minimum))


def helm_rule(**values: Any) -> dict[str, Any]:
    from test_helm import CRD_APIS, helm_render

    texts = [t for path, t in helm_render(values, CRD_APIS).items() if path.endswith(".yaml")]
    docs = [d for t in texts for d in yaml.safe_load_all(t) if d]
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    return rule


def promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)


def alerts(groups: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}


def normalize(expr: str) -> str:
    """An expression with the Kubernetes selectors of the chart written as compose's job selectors."""
    expr = re.sub(r'namespace="inference",pod=~"trimodal-triton-\.\*"', 'job="triton"', expr)
    expr = re.sub(r'namespace="inference",pod=~"trimodal-envoy-\.\*"', 'job="envoy"', expr)
    return " ".join(expr.split())


@needs_promtool
def test_compose_rules_and_config_check(tmp_path: Path) -> None:
    rules = tmp_path / "alerts.yml"
    rules.write_text(compose_rules())
    proc = promtool("check", "rules", str(rules), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["/etc/prometheus/rules/alerts.yml"]
    config["rule_files"] = [str(rules)]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    proc = promtool("check", "config", str(tmp_path / "prometheus.yml"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert {j["job_name"] for j in config["scrape_configs"]} >= {"triton", "envoy"}
    envoy = next(j for j in config["scrape_configs"] if j["job_name"] == "envoy")
    assert envoy["metrics_path"] == "/stats/prometheus"
    assert envoy["static_configs"][0]["targets"] == ["lb:9902"]


@needs_promtool
def test_compose_alerts_fire_as_specified(tmp_path: Path) -> None:
    (tmp_path / "alerts.yml").write_text(compose_rules())
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path / "alerts_test.yml")
    proc = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@needs_promtool
def test_promtool_tests_can_fail(tmp_path: Path) -> None:
    """A rule that never fires (threshold out of reach) fails the unit tests."""
    (tmp_path / "alerts.yml").write_text(compose_rules().replace("> 0.01\n", "> 0.99\n", 1))
    shutil.copy(PROMETHEUS / "alerts_test.yml", tmp_path / "alerts_test.yml")
    assert promtool("test", "rules", "alerts_test.yml", cwd=tmp_path).returncode != 0


def test_compose_alerts_cover_what_operators_expect() -> None:
    names = set(alerts(yaml.safe_load(compose_rules())["groups"]))
    assert names == {
        "TrimodalHighFailureRate",
        "TrimodalP99OverTarget",
        "TrimodalQueueGrowing",
        "TrimodalReplicasBelowMinimum",
        "TrimodalPreprocessStubFailing",
        "TrimodalEnvoyUpstreamErrors",
    }
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    prom = compose["services"]["prometheus"]
    assert "./deploy/prometheus/alerts.yml:/etc/prometheus/alerts.yml:ro" in prom["volumes"]
    assert "TRIMODAL_MIN_REPLICAS" in prom["command"][0] and "/etc/prometheus/rules/alerts.yml" in prom["command"][0]


def test_helm_rule_matches_compose() -> None:
    """Same alerts, same expressions and thresholds; the chart adds container restarts (kube-state-metrics)."""
    compose = alerts(yaml.safe_load(compose_rules(minimum=2))["groups"])
    helm = alerts(helm_rule()["spec"]["groups"])
    assert set(helm) == set(compose) | {"TrimodalTritonRestarts"}
    for name, rule in compose.items():
        assert normalize(helm[name]["expr"]) == normalize(rule["expr"]), name
        assert helm[name].get("for") == rule.get("for"), name
        assert helm[name]["labels"] == rule["labels"], name


def test_helm_rule_thresholds_follow_values() -> None:
    rule = alerts(helm_rule(metrics={"prometheusRule": {"p99TargetMs": 80, "failureRatio": 0.05}},
                            autoscaling={"minReplicas": 3})["spec"]["groups"])  # fmt: skip
    assert rule["TrimodalP99OverTarget"]["expr"].rstrip().endswith("> 80")
    assert "> 0.05" in rule["TrimodalHighFailureRate"]["expr"]
    assert rule["TrimodalReplicasBelowMinimum"]["expr"].rstrip().endswith("< 3")


def helm_tests(source: dict[str, Any]) -> dict[str, Any]:
    """The compose unit tests with their series labelled as the Prometheus Operator scrapes this release's pods."""
    text = yaml.safe_dump(source)
    text = text.replace('job="triton",instance="a"', TRITON_POD.replace("abcde", "aaaaa"))
    text = text.replace('job="triton",instance="b"', TRITON_POD.replace("abcde", "bbbbb"))
    text = text.replace('job="triton"', TRITON_POD).replace('job="envoy"', ENVOY_POD)
    tests = yaml.safe_load(text)
    tests["tests"].append({
        "name": "a Triton container restarted (liveness probe after a dead stub)",
        "interval": "1m",
        "input_series": [
            {"series": f'up{{{TRITON_POD.replace("abcde", "aaaaa")}}}', "values": "1x30"},
            {"series": f'up{{{TRITON_POD.replace("abcde", "bbbbb")}}}', "values": "1x30"},
            {"series": f'kube_pod_container_status_restarts_total{{{TRITON_POD},container="triton"}}',
             "values": "0x10 1x20"},
        ],
        "promql_expr_test": [{
            "expr": 'ALERTS{alertstate="firing"}', "eval_time": "15m",
            "exp_samples": [{"labels": 'ALERTS{alertname="TrimodalTritonRestarts",alertstate="firing",'
                                       'pod="trimodal-triton-6f7c9d-abcde",severity="warning"}', "value": 1}],
        }],
    })  # fmt: skip
    return tests


@needs_promtool
def test_helm_alerts_fire_on_kubernetes_series(tmp_path: Path) -> None:
    (tmp_path / "alerts.yml").write_text(yaml.safe_dump({"groups": helm_rule()["spec"]["groups"]}))
    proc = promtool("check", "rules", "alerts.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    source = yaml.safe_load((PROMETHEUS / "alerts_test.yml").read_text())
    (tmp_path / "alerts_test.yml").write_text(yaml.safe_dump(helm_tests(source)))
    proc = promtool("test", "rules", "alerts_test.yml", cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
