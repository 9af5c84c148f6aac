"""The command line's conventions: --version, help on every option, enum choices, --json, the bench's ETA."""

import json
import logging
from pathlib import Path

import click
import pytest
import typer
from typer.testing import CliRunner

from trimodal.bench.run import FULL, QUICK, BenchSettings, eta_s, log_progress, stage_estimates
from trimodal.cli import app

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "benchmarks/results/20261129T091905Z"


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    found = []
    for name, command in group.commands.items():
        found.append((f"{prefix}{name}", command))
        if isinstance(command, click.Group):
            found += _commands(command, f"{prefix}{name} ")
    return found


def test_version() -> None:
    result = CliRunner().invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("trimodal ")


def test_every_option_of_every_command_has_help() -> None:
    root = typer.main.get_command(app)
    commands = _commands(root)
    assert {"serve", "infer", "plan", "bench", "check", "render", "build-engines", "protoset"} <= {
        n for n, _ in commands
    }
    undocumented = [
        f"{name} {param.opts[0]}"
        for name, command in [("", root), *commands]
        for param in command.params
        if isinstance(param, click.Option) and not param.hidden and not (param.help or "").strip()
    ]
    assert not undocumented, f"options without help text: {undocumented}"
    assert all((command.help or "").strip() for _, command in commands)


@pytest.mark.parametrize(("command", "option", "choices"), [("build-engines", "precision", ["fp32", "fp16", "int8"]),
                                                             ("build", "target", ["cpu", "gpu"])])  # fmt: skip
def test_enum_options_list_their_choices(monkeypatch, command: str, option: str, choices: list[str]) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    shown = CliRunner().invoke(app, [command, "--help"]).output
    assert f"<{'|'.join(choices)}>" in shown, shown
    refused = CliRunner().invoke(app, [command, f"--{option}", "fp8"])
    assert refused.exit_code == 2 and "'fp8' is not one of" in refused.output


def test_admin_key_help_names_the_http_header_and_the_grpc_metadata_key(monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    result = CliRunner().invoke(app, ["serve", "--help"])
    assert "admin-key" in result.output and "triton-grpc-protocol-admin-key" in result.output


def test_plan_json(tmp_path: Path) -> None:
    from trimodal.bench.loadgen import LevelResult
    from trimodal.bench.results import BenchMeta, BenchResults

    busy = {"text_encoder": {"utilization": 0.5}}
    levels = [LevelResult("triton", 0, 500, 0, 5.0, rate * 0.99, 20, 30, p99, 25, mode="rate", rate=rate,
                          breakdown=busy, repetition=1, achieved_rps=rate * 0.99)
              for rate, p99 in ((50.0, 80.0), (100.0, 400.0), (150.0, 2000.0))]  # fmt: skip
    BenchResults(meta=BenchMeta(timestamp="T"), levels=levels).save(tmp_path)
    result = CliRunner().invoke(app, ["plan", "--rps", "500", "--p99-ms", "1000", "--results", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    payload = json.loads(result.output)
    assert payload["replicas"] == 7 and payload["instances"] and any("ceil(" in line for line in payload["arithmetic"])
    assert payload["capacity_rps"] == 100 and payload["hpa_request_rate_target"] == 70
    assert payload["level"]["mode"] == "rate" and payload["level"]["throughput"] > 0


def test_render_check_json() -> None:
    result = CliRunner().invoke(app, ["render", "--check", "--json"])
    assert json.loads(result.output) == {"repository": str(ROOT / "model_repository"), "up_to_date": True, "stale": []}
    assert result.exit_code == 0


def test_render_check_json_reports_stale_files(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["render", "--check", "--json", "--repository", str(tmp_path)])
    payload = json.loads(result.output)
    assert result.exit_code == 1 and not payload["up_to_date"] and payload["stale"]


def test_check_json_reports_missing_plans() -> None:
    """The CPU checkout has no TensorRT plans: `check --json` says so in JSON and exits 1."""
    result = CliRunner().invoke(app, ["check", "--json", "--no-accuracy"])
    payload = json.loads(result.output)
    assert result.exit_code == 1 and payload["engines_ok"] is False
    assert payload["problems"] and all(p["severity"] in ("error", "warning") for p in payload["problems"])


def _settings(preset, **overrides) -> BenchSettings:
    values = dict(out=Path("out"), build_dir=Path("b"), repo_dir=Path("r"),
                  baselines=("inprocess", "naive", "triton_nobatch", "triton"),
                  concurrencies=tuple(int(c) for c in preset.concurrency.split(",")), duration_s=preset.duration_s,
                  warmup_s=preset.warmup_s, samples=preset.samples, mix="", rates=(0.7,),
                  pa_concurrencies=(1, 16), pa_window_ms=preset.pa_window_ms)  # fmt: skip
    values.update(overrides)
    return BenchSettings(**values)


def test_stage_estimates_follow_the_settings() -> None:
    from trimodal.bench.baselines import BASELINES

    quick = stage_estimates(_settings(QUICK, quick=True, repetitions=QUICK.repetitions))
    assert list(quick) == ["servers", "schedule", "perf"] and quick["perf"] > 0
    assert quick["schedule"] > QUICK.repetitions * 2 * 4 * (QUICK.warmup_s + QUICK.duration_s)
    full = stage_estimates(_settings(FULL, baselines=BASELINES, rates=(0.3, 0.5, 0.6, 0.7, 0.8, 0.9),
                                     rate_duration_s=FULL.rate_duration_s, repetitions=FULL.repetitions))  # fmt: skip
    assert sum(full.values()) > 3 * sum(quick.values())
    assert sum(full.values()) < 18 * 60, "the full run must fit the 20-minute budget on 2 cores"
    assert stage_estimates(_settings(QUICK, baselines=("naive",)))["perf"] == 0, "perf_analyzer needs triton"


def test_eta_scales_with_the_pace_so_far(caplog) -> None:
    planned = {"a": 10.0, "b": 30.0}
    assert eta_s(planned, [], 0.0) == 40.0
    assert eta_s(planned, ["a"], 10.0) == 30.0
    assert eta_s(planned, ["a"], 20.0) == 60.0, "twice as slow as planned: twice the time left"
    assert eta_s(planned, ["a", "b"], 50.0) == 0.0
    with caplog.at_level(logging.INFO, logger="trimodal.bench.run"):
        line = log_progress(planned, ["a"], 20.0)
    assert line == "bench: 1/2 stages done (a), 20 s elapsed, about 60 s left" and line in caplog.text


def test_client_docstrings_name_files_that_exist() -> None:
    """Every path under clients/ named in the examples' usage text exists (globs must match something)."""
    import ast
    import re

    named = []
    for script in sorted((ROOT / "clients").glob("*.py")):
        named += re.findall(r"clients/[\w./*-]+", ast.get_docstring(ast.parse(script.read_text())) or "")
    named += re.findall(r"clients/[\w./*-]+", (ROOT / "clients/node/infer.js").read_text().split('"use strict"')[0])
    assert len(named) >= 5
    missing = [path for path in named if not list(ROOT.glob(path.rstrip(".")))]
    assert not missing, f"named in the clients' usage text but absent: {missing}"
