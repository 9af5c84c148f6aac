"""Benchmarks and load testing: workloads, baselines, perf_analyzer, reports and the capacity planner.

Nothing heavy is imported here: torch, onnxruntime, matplotlib and the load generators are imported inside
the functions that need them.
"""

from trimodal.errors import BenchError

__all__ = ["BenchError"]
