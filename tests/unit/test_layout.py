"""The package tree: the runtime never imports training or TensorRT code; paths are declared once in layout."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from trimodal import contract
from trimodal.layout import BuildLayout, Layout, RepositoryLayout, project_root

ROOT = Path(__file__).resolve().parents[2]

# Run in a fresh interpreter where torch, tensorrt and polygraphy cannot be imported (a None entry in
# sys.modules makes `import x` raise ImportError), import every runtime module, run the in-process
# preprocessing on one sample, and report what got imported.
ISOLATION_SCRIPT = textwrap.dedent(
    """
    import importlib, json, pkgutil, sys
    for blocked in ("torch", "tensorrt", "polygraphy", "transformers", "sklearn"):
        sys.modules[blocked] = None
    import trimodal.runtime
    names = [m.name for m in pkgutil.walk_packages(trimodal.runtime.__path__, "trimodal.runtime.")]
    for name in names:
        importlib.import_module(name)
    from trimodal.layout import Layout, tokenizer_source
    from trimodal.runtime.pipeline import Preprocessor, refuse_all_empty
    from trimodal.spec import load_spec
    tensors = Preprocessor(load_spec(), tokenizer_source())([b""], [b"seven"], [b""])
    refuse_all_empty(tensors)
    loaded = sorted(m for m in sys.modules if m.startswith("trimodal"))
    print(json.dumps({"modules": names, "loaded": loaded, "tensors": sorted(tensors)}))
    """
)


def test_runtime_never_imports_training_or_tensorrt() -> None:
    result = subprocess.run(
        [sys.executable, "-c", ISOLATION_SCRIPT], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert "trimodal.runtime.pipeline" in report["modules"]
    assert "trimodal.runtime.backends.onnx_model" in report["modules"]
    leaked = [m for m in report["loaded"] if m.startswith(("trimodal.training", "trimodal.tensorrt", "trimodal.bench"))]
    assert leaked == [], f"the runtime imported {leaked}"
    assert report["tensors"] == sorted(
        [contract.IMAGE_TENSOR, contract.IMAGE_MASK, contract.INPUT_IDS, contract.ATTENTION_MASK,
         contract.TEXT_MASK, contract.AUDIO_TENSOR, contract.AUDIO_MASK]
    )  # fmt: skip


def test_blocked_import_really_fails() -> None:
    """The isolation above is meaningful: with torch blocked, training code cannot be imported."""
    script = "import sys; sys.modules['torch'] = None; import trimodal.training.models.image"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "import of torch halted" in result.stderr


def test_default_layout_is_the_checkout(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("TRIMODAL_HOME", "TRIMODAL_BUILD_DIR", "TRIMODAL_REPOSITORY", "TRIMODAL_SPEC"):
        monkeypatch.delenv(var, raising=False)
    layout = Layout.default()
    assert layout.root == ROOT
    assert layout.build.root == ROOT / "build"
    assert layout.repository.root == ROOT / "model_repository"
    assert layout.spec == ROOT / "pipeline.yaml"
    assert layout.samples == ROOT / "clients" / "samples"
    assert layout.results == ROOT / "benchmarks" / "results"


def test_environment_and_arguments_move_folders(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TRIMODAL_HOME", str(tmp_path))
    monkeypatch.setenv("TRIMODAL_BUILD_DIR", str(tmp_path / "b"))
    monkeypatch.delenv("TRIMODAL_REPOSITORY", raising=False)
    monkeypatch.delenv("TRIMODAL_SPEC", raising=False)
    layout = Layout.default(repository=tmp_path / "r")
    assert project_root() == tmp_path
    assert layout.build.root == tmp_path / "b"
    assert layout.repository.root == tmp_path / "r"
    assert layout.spec == tmp_path / "pipeline.yaml"


def test_installed_wheel_finds_the_project_from_the_working_directory(tmp_path: Path) -> None:
    """Outside a checkout (as from a wheel), the project is the nearest folder above cwd with pipeline.yaml."""
    project = tmp_path / "project"
    (project / "sub" / "dir").mkdir(parents=True)
    (project / "pipeline.yaml").write_text("name: x\n")
    script = textwrap.dedent(
        """
        import importlib.util, sys, pathlib
        spec = importlib.util.spec_from_file_location("layout_copy", sys.argv[1])
        module = importlib.util.module_from_spec(spec)
        sys.modules["layout_copy"] = module
        spec.loader.exec_module(module)
        print(module.project_root())
        """
    )
    copy = tmp_path / "site" / "trimodal" / "layout.py"  # a package dir with no pipeline.yaml above it
    copy.parent.mkdir(parents=True)
    copy.write_text((ROOT / "trimodal" / "layout.py").read_text())
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, "-c", script, str(copy)], cwd=project / "sub" / "dir", capture_output=True, text=True,
        env=env, timeout=60,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert Path(result.stdout.strip()) == project


def test_build_and_repository_paths() -> None:
    build = BuildLayout(Path("/b"))
    assert build.onnx_file("text_encoder") == Path("/b/onnx/text_encoder.onnx")
    assert build.checkpoint("fusion_attention") == Path("/b/checkpoints/fusion_attention.pt")
    repository = RepositoryLayout(Path("/r"))
    assert repository.onnx_file("image_encoder") == Path("/r/image_encoder/1/model.onnx")
    assert repository.tokenizer == Path("/r/preprocess_text/1/tokenizer.json")


def test_model_names_are_declared_once() -> None:
    """No module but contract.py spells out the list of model names."""
    offenders = []
    for path in (ROOT / "trimodal").rglob("*.py"):
        if path.name == "contract.py":
            continue
        text = path.read_text(encoding="utf-8")
        if '"image_encoder", "text_encoder"' in text or "'image_encoder', 'text_encoder'" in text:
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def test_no_module_derives_the_repository_root_from_its_file() -> None:
    offenders = []
    for path in (ROOT / "trimodal").rglob("*.py"):
        if path.name == "layout.py":
            continue
        text = path.read_text(encoding="utf-8")
        if "Path(__file__)" in text and (".parent.parent" in text or "parents[" in text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []
