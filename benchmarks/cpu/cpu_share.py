"""Where the CPU goes at saturation: CPU milliseconds per request of tritonserver, each stub, and the client.

Runs the real server on the built repository, drives it closed-loop (16 in flight, the benchmark's saturation
level on 2 cores) and reads the CPU time of every process in its group from /proc before and after. Variants:
``shipped`` (the built repository), ``blas-default`` (the same with TRIMODAL_STUB_BLAS_THREADS=0: OpenBLAS's
default threads in every stub) and ``fp32-padded`` (every graph fp32, texts padded to max_tokens: the
benchmark's uncompressed variant). Each gets its own server; the variants alternate, ``--repeats`` times each,
so a busy machine hits them alike. The text encoder's CPU per request is its compute per sample.

    .venv/bin/python benchmarks/cpu/cpu_share.py --repeats 2

writes benchmarks/cpu/cpu_share.json and cpu_share.md.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
from pathlib import Path
from typing import Annotated

import typer

from trimodal.bench.baselines import triton_server
from trimodal.bench.batchcost import SERVER, measure_level
from trimodal.bench.traffic import LoadGenerator, samples_from_split
from trimodal.layout import Layout
from trimodal.runtime.backends.base import BLAS_THREADS_ENV
from trimodal.triton.processes import named_members

HERE = Path(__file__).resolve().parent


def measure(repo: Path, blas_threads: int, seconds: float, work: Path) -> dict[str, object]:
    """One server on ``repo``, ``TRIMODAL_STUB_BLAS_THREADS=blas_threads``: req/s and CPU ms per request per process."""
    os.environ[BLAS_THREADS_ENV] = str(blas_threads)
    samples = samples_from_split(Layout.default().build.root, count=128)
    with triton_server(repo, work) as server:
        load = LoadGenerator(server.config.grpc_url, samples, deadline_s=10.0)
        asyncio.run(load.closed_loop(16, 4.0))  # warm-up
        names = named_members(server.process.pid, server=SERVER)
        level = measure_level(server.config.grpc_url, names, load, 16, seconds, settle_s=0.0)
    kept = ("requests_per_s", "errors", "p50_ms", "cpu_ms_per_request")
    return {"blas_threads": blas_threads, **{key: level[key] for key in kept}}


VARIANTS = ("fp32-padded", "blas-default", "shipped")
LABELS = {"fp32-padded": "fp32, text padded (1 BLAS thread)", "blas-default": "shipped, BLAS default threads",
          "shipped": "shipped (1 BLAS thread per stub)"}  # fmt: skip


def padded_repository(repo: Path, work: Path) -> Path:
    """The benchmark's uncompressed variant of ``repo``: fp32 graphs, the text encoder's padding kept."""
    from trimodal.bench.baselines import fp32_padded_spec, render_variant
    from trimodal.spec import load_spec

    return render_variant(fp32_padded_spec(load_spec(None)), repo, work / "repo_fp32_padded", trim=False)


def _table(runs: list[dict]) -> list[str]:
    variants = [variant for variant in VARIANTS if any(run["variant"] == variant for run in runs)]
    label = LABELS
    processes = sorted({name for run in runs for name in run["cpu_ms_per_request"]},
                       key=lambda name: -max(run["cpu_ms_per_request"].get(name, 0.0) for run in runs))  # fmt: skip

    def median(variant: str, pick: object) -> float:
        return statistics.median(pick(run) for run in runs if run["variant"] == variant)  # type: ignore[operator]

    lines = ["| CPU ms per request (median of runs) | " + " | ".join(label.get(v, str(v)) for v in variants) + " |",
             "| --- |" + " ---: |" * len(variants)]  # fmt: skip
    for name in processes:
        cells = [f"{median(v, lambda run, n=name: run['cpu_ms_per_request'].get(n, 0.0)):.2f}" for v in variants]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    totals = [f"{median(v, lambda run: sum(run['cpu_ms_per_request'].values())):.2f}" for v in variants]
    lines.append("| **total** | " + " | ".join(totals) + " |")
    rates = [f"{median(v, lambda run: run['requests_per_s']):.1f}" for v in variants]
    lines.append("| requests/s at 16 in flight | " + " | ".join(rates) + " |")
    return lines


def main(
    repeats: Annotated[int, typer.Option(help="Runs of each variant (they alternate).")] = 2,
    seconds: Annotated[float, typer.Option(help="Measured seconds per run.")] = 12.0,
    repository: Annotated[Path | None, typer.Option(help="Model repository (default: the project's).")] = None,
) -> None:
    """Measure every variant, alternating, and write cpu_share.json and cpu_share.md next to this script."""
    repo = repository or Layout.default().repository.root
    work = Path(f"/tmp/trimodal-cpu-share-{os.getpid()}")
    setups = {"fp32-padded": (padded_repository(repo, work), 1), "blas-default": (repo, 0), "shipped": (repo, 1)}
    runs = []
    for repeat in range(repeats):
        for variant, (variant_repo, threads) in setups.items():
            run = {"variant": variant, **measure(variant_repo, threads, seconds, work / variant)}
            print(json.dumps(run))
            runs.append({"repeat": repeat, **run})
    (HERE / "cpu_share.json").write_text(json.dumps({"cores": os.cpu_count(), "runs": runs}, indent=2) + "\n")
    header = [f"# CPU per request at 16 in flight ({os.cpu_count()} cores, {repeats} alternating runs per variant)",
              "", "Written by `benchmarks/cpu/cpu_share.py`; raw runs in `cpu_share.json`.", ""]  # fmt: skip
    (HERE / "cpu_share.md").write_text("\n".join(header + _table(runs)) + "\n")
    print("\n".join(_table(runs)))


if __name__ == "__main__":
    typer.run(main)
