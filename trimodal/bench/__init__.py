"""Benchmarks and load testing: workloads, baselines, perf_analyzer, reports and the capacity planner.

Nothing heavy is imported here: torch, onnxruntime, matplotlib and the load generators are imported inside
the functions that need them.
"""

from trimodal.errors import TrimodalError


class BenchError(TrimodalError):
    """A benchmark could not run (missing tool, server that does not start, invalid setting or result)."""


__all__ = ["BenchError"]
