"""What a stage execution costs apart from its samples: CPU per request split into per-sample and per-execution.

Runs the real server on the built repository and drives it closed-loop at several concurrencies (every request
carries all three modalities, so every stage does real work). At each level it reads the CPU time of every
process of the server's group and of the client from /proc, and the executions and requests of every model from
the statistics API; :mod:`trimodal.bench.batchcost` then fits, per process, CPU ms per request = per request +
per execution x executions per request (1 / the stage's average batch). The per-execution part is what smaller
batches cost more of: it is why an open-loop level at 70% of the closed-loop saturation rate keeps more than 70%
of the cores busy (the benchmark report's "CPU ms/answer"). The levels alternate direction over ``--repeats``
passes, so a drifting machine hits them alike.

    .venv/bin/python benchmarks/cpu/batch_cost.py --repeats 2

writes benchmarks/cpu/batch_cost.json and batch_cost.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import platform
from pathlib import Path
from typing import Annotated

import typer

from trimodal.bench.baselines import triton_server
from trimodal.bench.batchcost import SERVER, measure_level, table
from trimodal.bench.run import git_commit
from trimodal.bench.traffic import LoadGenerator, samples_from_split
from trimodal.layout import Layout
from trimodal.machine import cpu_model
from trimodal.triton.processes import named_members

HERE = Path(__file__).resolve().parent
CONCURRENCIES = (1, 2, 4, 8, 16, 32)


def main(
    repeats: Annotated[int, typer.Option(help="Passes over the concurrencies (they alternate).")] = 2,
    seconds: Annotated[float, typer.Option(help="Measured seconds per level.")] = 6.0,
    repository: Annotated[Path | None, typer.Option(help="Model repository (default: the project's).")] = None,
) -> None:
    """Measure every concurrency ``repeats`` times on one server; write batch_cost.json and batch_cost.md here."""
    repo = repository or Layout.default().repository.root
    samples = samples_from_split(Layout.default().build.root, count=128)
    runs: list[dict] = []
    with triton_server(repo, Path(f"/tmp/trimodal-batch-cost-{os.getpid()}")) as server:
        url = server.config.grpc_url
        load = LoadGenerator(url, samples, deadline_s=10.0)
        asyncio.run(load.closed_loop(16, 4.0))  # warm-up
        names = named_members(server.process.pid, server=SERVER)
        for repeat in range(repeats):
            for concurrency in CONCURRENCIES if repeat % 2 == 0 else CONCURRENCIES[::-1]:
                run = {"repeat": repeat, **measure_level(url, names, load, concurrency, seconds)}
                print(json.dumps({k: run[k] for k in ("repeat", "concurrency", "requests_per_s", "errors")}))
                runs.append(run)
    meta = {"cores": os.cpu_count(), "cpu": cpu_model(), "python": platform.python_version(), "repeats": repeats,
            "seconds": seconds, "commit": git_commit()}  # fmt: skip
    (HERE / "batch_cost.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=2) + "\n")
    header = [f"# CPU per request: per sample and per stage execution ({os.cpu_count()} cores, {meta['cpu']}, commit "
              f"{meta['commit']})", "",
              "Written by `benchmarks/cpu/batch_cost.py` (closed loop at c=" + ",".join(map(str, CONCURRENCIES)) +
              f", {repeats} passes of {seconds:g} s, requests with all three modalities); raw levels in "
              "`batch_cost.json`. Per stub: CPU ms per request = per request + per execution x executions per "
              "request, fitted over the levels.", ""]  # fmt: skip
    (HERE / "batch_cost.md").write_text("\n".join(header + table(runs)) + "\n")
    print("\n".join(table(runs)))


if __name__ == "__main__":
    typer.run(main)
