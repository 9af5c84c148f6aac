"""The README's evidence regions, each rendered from committed artifacts (``trimodal evidence --write``).

A renderer returns a region's whole body: the figures and the sentence around them, so a figure cannot
drift from its artifact without ``tests/unit/test_evidence.py`` failing. Percentages are printed as
``98.7%``, seconds as ``13.4 s``, probability differences as ``3.0e-08``.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import inspect
import re
import sys
import textwrap
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from trimodal import contract
from trimodal.errors import EvidenceError
from trimodal.evidence import artifacts
from trimodal.evidence.gates import ALL_THREE_MIN, FULL, SINGLE_MAX, served_accuracy
from trimodal.layout import Layout
from trimodal.spec import MODALITIES

WIDTH = 116
CODE_SPAN = re.compile(r"`[^`]*`")
NBSP = "\x00"
INDENT = "  "
DOCUMENTS = ("README.md", "deploy/KUBERNETES.md", "benchmarks/accuracy/README.md")
"""The documents whose evidence regions are rendered (relative to the project root)."""
AUTOSCALE = Path("deploy") / "autoscale" / "simulate.py"


def pct(value: float) -> str:
    """A fraction as a percentage with one decimal, e.g. ``98.7%``."""
    return f"{100 * value:.1f}%"


def span(values: Iterable[float]) -> str:
    """Integer counts as ``lo-hi`` (or one number when they are equal)."""
    numbers = sorted(int(value) for value in values)
    return str(numbers[0]) if numbers[0] == numbers[-1] else f"{numbers[0]}-{numbers[-1]}"


def bullet(text: str, *blocks: list[str]) -> str:
    """A Markdown list item: ``text`` wrapped at the README's width, then indented blocks (tables, paragraphs).

    Args:
        text: the item's first paragraph (one line; wrapped here).
        *blocks: further paragraphs or tables as lines; a table (lines starting with ``|``) is kept as is,
            other lines are wrapped.

    Returns:
        The item, ending with a newline.
    """
    lines = _wrap(text, "- ")
    for block in blocks:
        lines.append("")
        if block and block[0].startswith("|"):
            lines += [INDENT + line for line in block]
        else:
            lines += _wrap(" ".join(block), INDENT)
    return "\n".join(lines) + "\n"


def paragraph(text: str) -> str:
    """A Markdown paragraph: ``text`` wrapped at the documents' width, ending with a newline."""
    return "\n".join(_wrap(text, "", "")) + "\n"


def _wrap(text: str, first: str, indent: str = INDENT) -> list[str]:
    """Wrapped lines; an inline code span (`` `make build` ``) is never split."""
    joined = CODE_SPAN.sub(lambda match: match.group().replace(" ", NBSP), text)
    lines = textwrap.wrap(joined, WIDTH, initial_indent=first, subsequent_indent=indent, break_long_words=False,
                          break_on_hyphens=False)  # fmt: skip
    return [line.replace(NBSP, " ") for line in lines]


def _link(name: str) -> str:
    path = artifacts.BY_NAME[name].committed
    return f"[{path}]({path})"


# --- build -------------------------------------------------------------------------------------------------


def build_timings(layout: Layout) -> str:
    """The fresh-clone-to-serving figures: each build stage's seconds when it last ran (``build/timings.json``)."""
    timings = artifacts.load("timings", layout)
    samples = artifacts.load("metrics", layout)["samples"]
    stages = timings["stages"]
    last = {name: row["last_run_seconds"] if row["last_run_seconds"] is not None else row["seconds"]
            for name, row in stages.items()}  # fmt: skip
    text = (
        "**Fresh clone to serving** (each stage's time the last time it ran on this machine, recorded by "
        f"`trimodal build` in `build/timings.json`, committed as {_link('timings')}): dataset {last['dataset']:.1f} s "
        f"({sum(samples.values())} samples), training {last['train']:.1f} s (encoders, multi-task fusion heads, "
        f"the single-task comparison), ONNX export + parity {last['export']:.1f} s, precision graphs "
        f"{last['precision']:.1f} s, model repository {last['repository']:.1f} s: `make build` done in **about "
        f"{sum(last.values()) / 60:.1f} minutes** after the venv install and preflight (plus apt where "
        "espeak-ng/sox/libb64 are missing)."
    )
    if not any(row["ran"] for row in stages.values()):
        text += (
            " A second `make build` (or `make run`) reuses everything (stamps hash the model-defining spec fields "
            f"and the code): the recorded build reused every stage, {timings['total_seconds']:.1f} s in all (plus the "
            "command's own start-up)."
        )
    return bullet(text)


# --- accuracy ----------------------------------------------------------------------------------------------


def _gate_sentence(accuracy: Mapping[str, float]) -> str:
    singles = {modality: accuracy[modality] for modality in MODALITIES}
    full, best = accuracy[FULL], max(singles.values())
    pairs = [name for name in accuracy if name.count("+") == 1]
    floor = f"{ALL_THREE_MIN:.0%}"
    parts = [
        f"All three >= {floor}" if full >= ALL_THREE_MIN else f"All three {pct(full)} < {floor}",
        f"every single modality <= {SINGLE_MAX:.0%}" if best <= SINGLE_MAX else f"best single modality {pct(best)}",
        f"fusion beats the best single modality by {100 * (full - best):.1f} points",
        "every pair beats its best member"
        if all(accuracy[pair] > max(accuracy[m] for m in pair.split("+")) for pair in pairs)
        else "not every pair beats its best member",
    ]
    return "; ".join(parts) + "."


def accuracy(layout: Layout) -> str:
    """The accuracy table of every modality subset and variant, and the gates (``build/metrics.json``)."""
    from trimodal.training.report import accuracy_table

    metrics = artifacts.load("metrics", layout)
    mode = "multi-task" if metrics["auxiliary_losses"] else "single-task"
    text = (
        f"**Accuracy** (test split, {metrics['samples']['test']} samples, `build/metrics.md`, committed as "
        f"{_link('metrics-md')}; served: `{metrics['served_strategy']}`, {mode}):"
    )
    table = [line for line in accuracy_table(metrics) if line.startswith("|")]
    return bullet(text, table, [_gate_sentence(served_accuracy(metrics))])


def _conflict_extremes(quality: Mapping[str, Any]) -> tuple[float, float]:
    """(lowest flagged share of a mismatched test set, highest of a matched one)."""
    rows = quality["conflict"]["test"].values()
    return (min(row["flagged"] for row in rows if row["mismatched"]),
            max(row["flagged"] for row in rows if not row["mismatched"]))  # fmt: skip


def multitask(layout: Layout) -> str:
    """Multi-task vs single-task, conflict detection and image robustness of the served model (metrics.json)."""
    metrics = artifacts.load("metrics", layout)
    strategy = metrics["served_strategy"]
    multi, single = f"{strategy}-multitask", f"{strategy}-single"
    val = {v: metrics["fusion"][v]["val_mean_subset_accuracy"] for v in (multi, single)}
    flagged = {v: _conflict_extremes(metrics["quality"][v]) for v in (multi, single)}
    robust = metrics["quality"][metrics["served_variant"]]["robustness"]
    drop = max(robust["clean"]["image"] - row["image"] for row in robust.values())
    worst_full = min(row[FULL] for row in robust.values())
    gap = val[multi] - val[single]
    better = "better" if gap >= 0.001 else "worse" if gap <= -0.001 else "level with single-task"
    text = (
        "**Multi-task heads, agreement, robustness** ([benchmarks/accuracy/README.md](benchmarks/accuracy/README.md)): "
        "each modality also has its own classification head, trained jointly with the fusion head (one loss per "
        "task, weights in `pipeline.yaml`); the ensemble returns each present modality's probabilities (NaN rows "
        "for absent ones) and whether they agree (`AGREEMENT`, `CONFLICT_SCORE`, `CONFLICT`; `trimodal infer` "
        f'prints "image says ..., audio says ...: conflict"). With the same seeds, multi-task learning is {better} '
        f"on the validation split ({100 * val[multi]:.2f}% vs {100 * val[single]:.2f}% mean over the subsets); its "
        "modality "
        f"heads flag {pct(flagged[multi][0])} of the least-flagged set of deliberately mismatched test samples vs "
        f"{pct(flagged[single][0])} single-task (genuine samples flagged at most {pct(flagged[multi][1])} vs "
        f"{pct(flagged[single][1])}); it is the default (`multitask.auxiliary_losses`), and on the test split the "
        "fused accuracy is within noise (table above). Images are normalised on the server (alpha flattened, "
        "polarity from the border, content cropped and centred, aspect kept) and the image encoder is trained with "
        "augmentation: on a held-out robustness set built from the test split (inverted, 12-20 px and 96-192 px, "
        "wide canvas, RGB, RGBA, off-centre, thick and thin strokes) image alone stays within "
        f"{100 * drop:.1f} points of the clean split and all three modalities at >= {pct(worst_full)} on every variant."
    )
    return bullet(text)


# --- served == offline, batching ---------------------------------------------------------------------------


def _agreement_outputs(report: Mapping[str, Any]) -> str:
    identical = (report["absent_rows_same"] and max(report["max_abs_diff"].values()) == 0
                 and min(report["same"].values()) == 1)  # fmt: skip
    if identical:
        return f"the agreement outputs are identical too ({report['samples']} mixed samples, `parity_agreement.json`)"
    same, diff = min(report["same"].values()), max(report["max_abs_diff"].values())
    equal = "every sample" if same == 1 else f">= {pct(same)}"
    return (f"the agreement outputs: labels and flags equal on {equal}, max difference {diff:.1e} "
            f"({report['samples']} mixed samples, `parity_agreement.json`)")  # fmt: skip


def parity(layout: Layout) -> str:
    """Served == offline over the whole test split, per modality subset (``build/parity.json``)."""
    report = artifacts.load("parity", layout)
    subsets = report.get("subsets") or {FULL: report}
    agreement = min(row["agreement"] for row in subsets.values())
    max_diff = max(row["max_abs_diff"] for row in subsets.values())
    samples = sum(row["samples"] for row in subsets.values())
    through = ", ".join(f"{name} {pct(row['accuracy_through_triton'])}" for name, row in subsets.items())
    text = (
        f"**Through Triton equals offline**: the whole test split in each of the {len(subsets)} modality subsets "
        f"(absent modalities sent as empty elements; {samples} requests) through the ensemble (gRPC, 16 in flight) "
        "vs the same graphs in-process (`trimodal.runtime.pipeline.LocalPipeline`): "
        f"**{pct(agreement)} same prediction in every subset, max |p - p'| = {max_diff:.1e}** (`build/parity.json`, "
        f"committed in `benchmarks/accuracy/`); accuracy through Triton: {through}; "
        f"{_agreement_outputs(artifacts.load('parity-agreement', layout))}."
    )
    return bullet(text)


def batching(layout: Layout) -> str:
    """Executions per composing model for one burst of concurrent requests (``build/batching.json``)."""
    counts = artifacts.load("batching", layout)
    executions = {model: row["executions"] for model, row in counts.items()}
    inferences = span(row["inferences"] for row in counts.values())
    encoders = span(executions[model] for model in contract.ENCODERS if model != contract.FUSION)
    batched = span(executions[model] for model in (*contract.PREPROCESSORS, *contract.ENCODERS))
    text = (
        f"**Dynamic batching**: {inferences} concurrent requests -> {batched} executions of each preprocessor and "
        f"ONNX model for {inferences} inferences (preprocessors {span(executions[m] for m in contract.PREPROCESSORS)}, "
        f"encoders {encoders}, fusion {span([executions[contract.FUSION]])}), "
        f"{span([executions[contract.POSTPROCESS]])} of the postprocess "
        f"step (no queue delay, by design) (`build/batching.json`, committed as {_link('batching')}, read from the "
        "metrics endpoint by `tests/integration/test_pipeline.py`)."
    )
    return bullet(text)


# --- benchmark ---------------------------------------------------------------------------------------------


def _targets_table(report: Path) -> list[str]:
    """The rows of the ``## Targets`` table of a benchmark report.md (empty when it has none)."""
    if not report.is_file():
        return []
    section = re.search(r"^## Targets\n(.*?)(?=^#)", report.read_text(encoding="utf-8") + "\n#", re.M | re.S)
    return [line for line in section.group(1).splitlines() if line.startswith("|")] if section else []


def _level_rows(results: Mapping[str, Any], concurrency: int) -> list[str]:
    """Every baseline (and setting) at one closed-loop concurrency: median [min-max] over its repetitions."""
    from trimodal.bench.aggregate import rows
    from trimodal.bench.loadgen import LevelResult

    levels = [LevelResult.from_dict(level) for level in results.get("levels", [])]
    selected = [row for row in rows(levels)
                if row.mode == "concurrency" and row.concurrency == concurrency]  # fmt: skip
    lines = [f"| {row.baseline} ({row.tool}) | {row.throughput.text()} | {row.p50.text()} | {row.p99.text()} | "
             f"{row.errors} |" for row in selected]  # fmt: skip
    header = [f"| baseline (setting), c={concurrency}, median [min-max] | throughput/s | p50 ms | p99 ms | errors |",
              "| --- | ---: | ---: | ---: | ---: |"]  # fmt: skip
    return header + lines if lines else []


def benchmark(layout: Layout) -> str:
    """The latest committed benchmark run: its targets table, the c=16 level of every baseline, config variants."""
    folder = artifacts.latest_results(layout)
    results = artifacts.read_json(folder / artifacts.RESULTS_FILE)
    meta = results.get("meta", {})
    relative = folder.relative_to(layout.root).as_posix()
    text = f"**Benchmarks** (`{relative}/`, one run, same requests for every baseline"
    if "saturation_rps" in meta:
        source = meta.get("saturation_source")
        text += f"; Triton saturation {meta['saturation_rps']:.1f} req/s" + (f" ({source})" if source else "")
    text += f"). Details: [{relative}/report.md]({relative}/report.md), [benchmarks/README.md](benchmarks/README.md)."
    blocks = [block for block in (_targets_table(folder / "report.md"), _level_rows(results, 16)) if block]
    variants = [f"{row['name']}: {row['summary']}" for row in results.get("tuning", []) if row.get("summary")]
    if variants:
        blocks.append(["Config variants tried in the same run: " + "; ".join(variants) + "."])
    return bullet(text, *blocks)


# --- precision, reliability --------------------------------------------------------------------------------


def precision(layout: Layout) -> str:
    """Accuracy per precision (``build/precision.json``) and the text encoder's costs (``text_encoder_costs.json``)."""
    from trimodal.training.precision import precision_markdown

    report = artifacts.load("precision", layout)
    costs = artifacts.read_json(layout.root / artifacts.TEXT_COSTS)
    ms, speedup = costs["ms_per_sample"], costs["speedup_vs_fp32_padded"]
    served = report["served"]["cpu"]
    text = (
        "**Precision** (`trimodal build` writes every ONNX model at fp32, fp16, int8 and int8-cpu; tables copied "
        "from the build into `benchmarks/precision/`, checked against the build by `tests/unit/test_precision.py`): "
        "fp16 graphs come from ONNX Runtime's `convert_float_to_float16` (fp32 inputs/outputs), int8 graphs from "
        "ONNX Runtime's `quantize_static` (QDQ, symmetric int8 activations and per-channel weights, "
        f"{report['calibration_samples']} training samples; attention's products of two activations stay in "
        "float), the form TensorRT builds strongly typed, and int8-cpu graphs (CPU only) from the same "
        "`quantize_static` and calibration with asymmetric uint8 activations and 7-bit weights (QDQ U8S8), the form "
        "ONNX Runtime's CPU kernels run fastest, which 7-bit weights keep from saturating on x86 CPUs without VNNI. "
        "Test-split accuracy, in process (tests fail beyond -0.5 points on all three or -1.5 on one modality "
        "against fp32; int8 graphs run as ONNX defines Q/DQ, as TensorRT computes them, outside the served-cpu "
        "column, everything else as ONNX Runtime serves it on the build's CPU; "
        "`benchmarks/precision/int8_kernels.md` shows how far ONNX Runtime's fused kernels land from each int8 "
        "graph's definition there):"
    )
    table = [line for line in precision_markdown(report).splitlines() if line.startswith("|")]
    after = (
        "The CPU text encoder cuts the all-padding token columns of each batch (exact: equal to the padded run within "
        f"1e-5): {ms['fp32 padded']:.2f} -> {ms['fp32 cut']:.2f} ms per sample ({speedup['fp32 cut']:.1f}x, "
        "`benchmarks/precision/text_encoder_costs.md`, one side-by-side run on "
        f"{costs['machine'].split(', ', 1)[-1]}). On top of that cut, ONNX Runtime's offline transformer optimizer "
        f"gives {ms['fp32 cut + ORT transformer optimizer']:.2f} ms (it finds only the fusions the session already "
        f"applies), fp16 {ms['fp16 cut']:.2f}, int8 Q/DQ {ms['int8 (Q/DQ, the TensorRT form) cut']:.2f} and "
        f"int8-cpu {ms['int8-cpu cut']:.2f} ms ({speedup['int8-cpu cut']:.1f}x the fp32 padded run). "
        f"The CPU target serves the text encoder at {served['text_encoder']}, the fastest whose accuracy holds, and "
        f"the other models at {', '.join(sorted({p for m, p in served.items() if m != 'text_encoder'}))} "
        "(`precision.cpu` in pipeline.yaml); the GPU target builds fp16 plans (TensorRT takes int8 with zero point 0 "
        "only, so the spec refuses int8-cpu there)."
    )
    return bullet(text, table, [after])


def cpu(layout: Layout) -> str:
    """CPU per request of every process at 16 in flight, three variants (``benchmarks/cpu/cpu_share.json``)."""
    import statistics

    runs = artifacts.read_json(layout.root / artifacts.CPU_SHARE)["runs"]

    def median(variant: str, pick: Callable[[Mapping[str, Any]], float]) -> float:
        return statistics.median(pick(run) for run in runs if run["variant"] == variant)

    def process(variant: str, name: str) -> float:
        return median(variant, lambda run: run["cpu_ms_per_request"].get(name, 0.0))

    def total(variant: str) -> float:
        return median(variant, lambda run: sum(run["cpu_ms_per_request"].values()))

    def rate(variant: str) -> float:
        return median(variant, lambda run: run["requests_per_s"])

    names = sorted(runs[0]["cpu_ms_per_request"], key=lambda name: -process("shipped", name))
    top, second = names[0], names[1]
    text_before, text_after = process("fp32-padded", "text_encoder"), process("shipped", "text_encoder")
    text = (
        "**Where the CPU goes** (`benchmarks/cpu/cpu_share.md`, written by `benchmarks/cpu/cpu_share.py`: CPU time "
        f"of every process per request at 16 in flight, {sum(run['variant'] == 'shipped' for run in runs)} "
        "alternating runs per variant): the text encoder takes "
        f"{text_before:.2f} ms of CPU per request fp32 with padded texts and {text_after:.2f} ms as shipped "
        f"({text_before / text_after:.1f}x less). With the padding cut, the audio preprocessor was the largest "
        f"consumer, {process('blas-default', 'preprocess_audio'):.2f} ms per request, most of it OpenBLAS waking "
        "and spinning threads for one clip's filterbank product. Each Python stub now runs numpy with one BLAS "
        f"thread (`threadpoolctl`, `TRIMODAL_STUB_BLAS_THREADS`): {process('shipped', 'preprocess_audio'):.2f} ms; "
        f"all processes {total('blas-default'):.2f} -> {total('shipped'):.2f} ms of CPU per request, "
        f"{rate('blas-default'):.1f} -> {rate('shipped'):.1f} req/s at 16 in flight ({total('fp32-padded'):.2f} ms "
        f"and {rate('fp32-padded'):.1f} req/s uncompressed). Largest now: {top} {process('shipped', top):.2f} ms, "
        f"{second} {process('shipped', second):.2f} ms (of {total('shipped'):.2f})."
    )
    return bullet(text)


def batch_cost(layout: Layout) -> str:
    """Per-request and per-stage-execution CPU, fitted over closed-loop levels (``benchmarks/cpu/batch_cost.json``)."""
    from trimodal.bench.batchcost import SERVER, ends, fits, stage_execution_ms

    data = artifacts.read_json(layout.root / artifacts.BATCH_COST)
    levels, meta = data["runs"], data["meta"]
    costs = fits(levels)
    stubs = {name: cost for name, cost in costs.items() if name != SERVER and cost.per_execution_ms > 0}
    ranked = sorted(stubs, key=lambda name: stubs[name].per_execution_ms)
    cheapest, dearest = ranked[0], ranked[-1]
    concurrencies = sorted({level["concurrency"] for level in levels})
    low, high = ends(levels)
    total_low, total_high = (sum(level["cpu_ms_per_request"].values()) for level in (low, high))
    per_request = sum(cost.per_request_ms for cost in costs.values())
    client_low, client_high = (level["cpu_ms_per_request"]["client"] for level in (low, high))
    text = (
        "**What a stage execution costs** (`benchmarks/cpu/batch_cost.md`, written by `benchmarks/cpu/batch_cost.py`"
        f" on {meta['cores']} cores, {meta['cpu']}: CPU of every process per request, closed loop at c="
        f"{','.join(map(str, concurrencies))}, fitted as per request + per execution x executions per request): one "
        f"execution of every stage costs {stage_execution_ms(costs):.2f} ms of CPU in the Python stubs (from "
        f"{stubs[cheapest].per_execution_ms:.2f} ms, {cheapest}, to {stubs[dearest].per_execution_ms:.2f} ms, "
        f"{dearest}) and tritonserver {costs[SERVER].per_execution_ms:.2f} ms per stage execution, however many "
        f"requests share it; the work that does not shrink with batching is {per_request:.2f} ms per request "
        f"(client included). A request costs {total_low:.2f} ms of CPU at c={low['concurrency']} and "
        f"{total_high:.2f} ms at c={high['concurrency']} ({total_low / total_high:.1f}x): at lower loads batches are "
        "smaller and each request pays more of the fixed part, so a Poisson level at a given fraction of the "
        "closed-loop saturation rate keeps a larger fraction of the cores busy (a benchmark report shows the CPU "
        f"ms/answer per level where the run recorded its CPU). Every stage execution costs at least "
        f"{stubs[cheapest].per_execution_ms:.2f} ms in its stub and {costs[SERVER].per_execution_ms:.2f} ms in "
        "tritonserver, so fewer Python-backend stages per request is what shrinks that part. A caveat on the fit: "
        "executions per request fall as the load rises, and so does the wall time per request, so a cost per unit "
        "of time (wake-ups, polling) lands on the per-execution coefficient too; the client, which never batches, "
        f"also costs less per request at higher load ({client_low:.2f} ms at c={low['concurrency']}, "
        f"{client_high:.2f} at c={high['concurrency']})."
    )
    return bullet(text)


def reliability(layout: Layout) -> str:
    """Overload, shutdown, kill and cancellation figures (``benchmarks/reliability/*.json``)."""
    files = artifacts.load("reliability", layout)
    overload, sigkill, flood = files["overload"], files["sigkill"], files["cancel-50ms"]
    runs = files.get("sigterm-full", files["sigterm"])["runs"]
    refused = sum(sum(run["after_sigterm"].values()) - run["after_sigterm"].get("OK", 0) for run in runs)
    unavailable = sum(run["after_sigterm"].get("UNAVAILABLE", 0) for run in runs)
    shed = overload["statuses"].get("UNAVAILABLE", 0)
    other = overload["requests"] - shed - overload["statuses"].get("OK", 0)
    left = sigkill["left"]["processes"] or sigkill["left"]["shm"]
    text = (
        "**Reliability and security**: [benchmarks/RELIABILITY.md](benchmarks/RELIABILITY.md) (figures in "
        f"`benchmarks/reliability/`) and [deploy/SECURITY.md](deploy/SECURITY.md): overload at "
        f"{overload['offered_rps'] / overload['capacity_rps']:.1f}x capacity sheds with UNAVAILABLE ({shed} of "
        f"{overload['requests']} requests, {other} other errors), SIGTERM with 32 requests in flight loses "
        f"{sum(run['lost_count'] for run in runs)} of {sum(run['ok_before_sigterm'] for run in runs)} accepted "
        f"requests in {len(runs)} runs and refuses {unavailable} of {refused} later requests with UNAVAILABLE "
        "(Triton 2.51 alone does not drain ensembles; `trimodal serve` does, then closes its ports), a killed "
        f"`serve` leaves {'something' if left else 'no process and no held port'} ({sigkill['gone_s']:.2f} s after "
        f"the kill), a flood of {flood['flood']['requests']} client-cancelled requests is survived with "
        f"{len(flood['restarts'])} restarts and {flood['after_flood']['statuses'].get('OK', 0)} of "
        f"{flood['after_flood']['requests']} later requests OK (every client call also sends a server-side timeout; "
        "the supervisor restores a wedged server), and the deployments drain at the load balancer before Triton stops."
    )
    return bullet(text)


# --- deployment --------------------------------------------------------------------------------------------


def _simulation(layout: Layout) -> ModuleType:
    """deploy/autoscale/simulate.py (a script folder, not a package), loaded from the layout's checkout."""
    path = layout.root / AUTOSCALE
    name = f"trimodal_evidence_autoscale_{abs(hash(str(path)))}"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, path)
        if spec is None or spec.loader is None:
            raise EvidenceError(f"{path}: cannot be loaded")
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while the file runs
        spec.loader.exec_module(module)
    return sys.modules[name]


def autoscale(layout: Layout) -> str:
    """The chart's autoscaling policy on the synthetic day (deploy/autoscale/simulate.py, deterministic)."""
    sim = _simulation(layout)
    results = artifacts.latest_results(layout) / artifacts.RESULTS_FILE
    policy, service = sim.ScalingPolicy.from_chart_values(sim.CHART_VALUES), sim.capacity_from_benchmark(results)
    spike = inspect.signature(sim.synthetic_load).parameters["spike_rps"].default
    chart = sim.simulate(sim.synthetic_load(), 86400.0, policy, service).summary()
    ratio_only = dataclasses.replace(policy, metrics=tuple(m for m in policy.metrics if m[0] == "queueComputeRatio"))
    ratio = sim.simulate(sim.synthetic_load(), 86400.0, ratio_only, service).summary()
    return paragraph(
        f"With {service.capacity_rps:.0f} req/s per replica and an unloaded p99 of {service.base_p99_ms:.0f} ms (the "
        f"saturation and concurrency-1 p99 of `{results.parent.relative_to(layout.root).as_posix()}`, the run the "
        f"chart's request-rate target comes from) and a {policy.startup_delay_s:.0f} s start-up (rendered by "
        "`trimodal evidence --write`), the default policy follows the day in "
        f"{chart['scale_events']:.0f} scale events and absorbs the +{spike:.0f} req/s spike with the estimated p99 at "
        f"most {chart['p99_max_ms']:.0f} ms. Scaling on the queue/compute ratio alone (as a first draft of this chart "
        f"did; here the chart's own ratio target without the request rate) gives {ratio['scale_events']:.0f} scale "
        f"events on the same day and p99 up to {ratio['p99_max_ms']:.0f} ms: the ratio stays near 0 until a pool is "
        "close to saturation, so the HPA's proportional rule drops to the minimum and then overshoots. That is why a "
        "proportional metric sizes the pool and the queueing metric is only a guard."
    )


RENDERERS: dict[str, Callable[[Layout], str]] = {
    "build-timings": build_timings,
    "accuracy": accuracy,
    "multitask": multitask,
    "parity": parity,
    "batching": batching,
    "benchmark": benchmark,
    "precision": precision,
    "cpu": cpu,
    "batch-cost": batch_cost,
    "reliability": reliability,
    "autoscale": autoscale,
}


def render_all(layout: Layout | None = None) -> dict[str, str]:
    """Every region's body, rendered from the committed artifacts."""
    layout = layout or Layout.default()
    return {name: renderer(layout) for name, renderer in RENDERERS.items()}
