"""Python stubs run numpy/scipy with one BLAS thread (benchmarks/cpu/: 3.9 -> 1.1 ms CPU per request for audio)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

PROBE = """
import json
from threadpoolctl import threadpool_info
from trimodal.runtime.backends.base import limit_blas_threads
before = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
applied = limit_blas_threads()
after = [pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"]
print(json.dumps({"before": before, "applied": applied, "after": after}))
"""


def _probe(env_value: str | None) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS")}
    env.pop("TRIMODAL_STUB_BLAS_THREADS", None)
    if env_value is not None:
        env["TRIMODAL_STUB_BLAS_THREADS"] = env_value
    out = subprocess.run([sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="one core: BLAS has one thread anyway")
def test_stub_limits_blas_to_one_thread() -> None:
    probe = _probe(None)
    assert probe["before"] and max(probe["before"]) > 1, probe  # numpy's BLAS starts multi-threaded here
    assert probe["applied"] == 1 and probe["after"] == [1] * len(probe["after"]), probe


def test_zero_keeps_the_library_default() -> None:
    probe = _probe("0")
    assert probe["applied"] is None and probe["after"] == probe["before"], probe
