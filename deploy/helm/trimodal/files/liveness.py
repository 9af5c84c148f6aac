"""Liveness probe for Triton: fails when a Python backend stub has died.

Triton's /v2/health/live stays true when a Python backend stub process dies, and Triton 2.51 (measured in
this repo, tests/integration/test_selfheal.py) even keeps reporting the model READY while every request to
it fails with "Stub process ... is not healthy". Readiness alone therefore cannot catch it. This probe:
1. checks /v2/health/live and the readiness of each named model, then
2. sends one tiny real inference through the ensemble (text only: "zero"; the empty image and audio
   elements still run through every preprocessor and encoder), which fails when any stub is dead.
It exits 1 on any failure, so the kubelet restarts the container after failureThreshold failures.
Standard library only: it runs with the image's python3.
"""

import json
import sys
import urllib.error
import urllib.request

PROBE_REQUEST = {
    "inputs": [
        {"name": "IMAGE", "shape": [1, 1], "datatype": "BYTES", "data": [""]},
        {"name": "TEXT", "shape": [1, 1], "datatype": "BYTES", "data": ["zero"]},
        {"name": "AUDIO", "shape": [1, 1], "datatype": "BYTES", "data": [""]},
    ],
    "outputs": [{"name": "PROBABILITIES"}],
}


def ready(url: str, timeout: float) -> bool:
    """Whether GET url answers 200 within timeout seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def infer_ok(base: str, model: str, timeout: float) -> str | None:
    """Send the probe request; None when it succeeded, else the reason."""
    request = urllib.request.Request(
        f"{base}/v2/models/{model}/infer",
        data=json.dumps(PROBE_REQUEST).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            body = json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code}: {exc.read()[:300].decode(errors='replace')}"
    except (urllib.error.URLError, OSError, ValueError) as exc:
        return str(exc)
    outputs = {output["name"]: output for output in body.get("outputs", [])}
    if "PROBABILITIES" not in outputs:
        return f"no PROBABILITIES in the answer: {body}"
    return None


def main(argv: list[str]) -> int:
    """Check liveness, readiness of the named models and one real inference; 0 when all are fine."""
    port, ensemble, timeout = "8000", "multimodal", 3.0
    models = []
    for arg in argv:
        if arg.startswith("--port="):
            port = arg.split("=", 1)[1]
        elif arg.startswith("--ensemble="):
            ensemble = arg.split("=", 1)[1]
        elif arg.startswith("--timeout="):
            timeout = float(arg.split("=", 1)[1])
        else:
            models.append(arg)
    base = f"http://127.0.0.1:{port}"
    if not ready(f"{base}/v2/health/live", timeout):
        print("triton not live", file=sys.stderr)
        return 1
    not_ready = [m for m in models if not ready(f"{base}/v2/models/{m}/ready", timeout)]
    if not_ready:
        print("models not ready: " + ", ".join(not_ready), file=sys.stderr)
        return 1
    problem = infer_ok(base, ensemble, timeout)
    if problem is not None:
        print(f"probe inference through {ensemble} failed (dead Python backend stub?): {problem}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
