"""Liveness probe for Triton: fails when a Python backend stub has died.

Triton's /v2/health/live stays true when a Python backend stub process dies: the model turns UNAVAILABLE and
nothing restarts it. This probe asks each named model's readiness endpoint (unrestricted "health" API) and exits 1
when the server is not live or any model is not ready, so the kubelet restarts the container after
failureThreshold consecutive failures. Standard library only: it runs with the image's python3.
"""

import sys
import urllib.error
import urllib.request


def ready(url: str, timeout: float) -> bool:
    """Whether GET url answers 200 within timeout seconds."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def main(argv: list[str]) -> int:
    """Check server liveness and each model's readiness; 0 when all are fine."""
    port = "8000"
    models = []
    for arg in argv:
        if arg.startswith("--port="):
            port = arg.split("=", 1)[1]
        else:
            models.append(arg)
    base = f"http://127.0.0.1:{port}"
    if not ready(f"{base}/v2/health/live", 1.0):
        print("triton not live", file=sys.stderr)
        return 1
    dead = [m for m in models if not ready(f"{base}/v2/models/{m}/ready", 1.0)]
    if dead:
        print("models not ready (dead Python backend stub?): " + ", ".join(dead), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
