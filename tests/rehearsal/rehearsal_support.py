"""Helpers of the GPU-path rehearsal: the TensorRT doubles, fake driver libraries, fp16 graphs, image settings.

Nothing here is product code: the fp16 graphs are made with onnxconverter-common only so that the rehearsal
has precision graphs to build from (issue 11 owns the production graphs).
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[2]
DOUBLES = ROOT / "tests" / "doubles"
NATIVE = DOUBLES / "native"
ENGINE_MODELS = ("image_encoder", "text_encoder", "audio_encoder", "fusion_classifier")
DOUBLE_VERSIONS = {"10": "10.16.0.72", "11": "11.1.0.106"}


def load_double(major: str) -> ModuleType:
    """The TensorRT double of one major release, loaded in this process under a private name (not ``tensorrt``)."""
    if str(DOUBLES) not in sys.path:
        sys.path.insert(0, str(DOUBLES))
    name = f"tensorrt_double_{major}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, DOUBLES / f"trt{major}" / "tensorrt" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def compile_native(out_dir: Path, trt_major: str = "11") -> Path:
    """Compile the fake ``libcuda.so.1`` and ``libnvinfer.so.<major>`` into ``out_dir`` (needs a C compiler)."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        raise FileNotFoundError("no C compiler (cc/gcc) to build the fake driver libraries")
    out_dir.mkdir(parents=True, exist_ok=True)
    for source, target in (("fake_libcuda.c", "libcuda.so.1"), ("fake_libnvinfer.c", f"libnvinfer.so.{trt_major}")):
        subprocess.run([compiler, "-shared", "-fPIC", "-O1", "-o", str(out_dir / target), str(NATIVE / source)],
                       check=True)  # fmt: skip
    return out_dir


def double_env(major: str | None, libs: Path | None, **extra: str) -> dict[str, str]:
    """Environment for a subprocess: the double of ``major`` importable as ``tensorrt`` (None: no tensorrt),
    the fake driver libraries on the loader path, and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRIMODAL_", "FAKE_", "PYTHONPATH", "LD_LIB"))}
    if major is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(DOUBLES / f"trt{major}"), str(DOUBLES)])
        env["FAKE_TRT_VERSION"] = DOUBLE_VERSIONS[major]
    if libs is not None:
        env["LD_LIBRARY_PATH"] = str(libs)
    env["POLYGRAPHY_AUTOINSTALL_DEPS"] = "0"
    env.update(extra)
    return env


def make_fp16_graph(source: Path, target: Path) -> None:
    """An fp16 graph with fp32 I/O (``keep_io_types``) of ``source``, consistent enough for a strongly typed parse.

    onnxconverter-common 1.16 leaves two inconsistencies in these exports: a ``Cast(to=FLOAT)`` whose output it
    declares fp16, and value_info entries that disagree with the nodes; both are repaired, then the graph is
    re-inferred strictly (which raises if anything still disagrees).
    """
    import onnx
    from onnx import TensorProto
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = float16.convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    half = {v.name for v in model.graph.value_info if v.type.tensor_type.elem_type == TensorProto.FLOAT16}
    for node in (n for n in model.graph.node if n.op_type == "Cast" and n.output[0] in half):
        for attribute in (a for a in node.attribute if a.name == "to" and a.i == TensorProto.FLOAT):
            attribute.i = TensorProto.FLOAT16
    del model.graph.value_info[:]
    onnx.save(onnx.shape_inference.infer_shapes(model, strict_mode=True), str(target))


def copy_repository(source: Path, target: Path) -> Path:
    """A copy of the rendered repository with its graphs and tokenizer, without plans."""
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.plan", "*.plan.json", "__pycache__"))
    return target


def cli_without(blocked: tuple[str, ...], image: str) -> str:
    """``python -c`` code running the trimodal CLI where the ``blocked`` modules (and their submodules) cannot be
    imported, as in an image that does not install them."""
    return f"""
import sys
class _Blocker:
    def find_spec(self, name, path=None, target=None):
        if any(name == b or name.startswith(b + '.') for b in {blocked!r}):
            raise ImportError(f"No module named '{{name}}' (blocked: not in the {image} image)")
sys.meta_path.insert(0, _Blocker())
from trimodal.cli import run
sys.argv[0] = 'trimodal'
run()
"""


# --- Dockerfiles ------------------------------------------------------------------------------------------


def dockerfile(path: Path) -> str:
    """The Dockerfile with line continuations joined."""
    return re.sub(r"\\\n\s*", " ", path.read_text())


def image_extras(path: Path) -> str:
    """The extras the image installs: ``runtime,gpu`` from ``pip install ".[runtime,gpu]"``."""
    match = re.search(r'pip install\s+"\.\[([\w,]+)\]"', dockerfile(path))
    assert match, f"no pip install of the package with extras in {path}"
    return match.group(1)


def stage(path: Path, name: str | None = None) -> str:
    """The lines of one build stage (``FROM ... AS name``; None: the only/first stage)."""
    stages = re.split(r"^(?=FROM )", dockerfile(path), flags=re.M)
    for text in stages[1:]:
        if name is None or re.match(rf"FROM \S+ AS {name}\b", text):
            return text
    raise AssertionError(f"no stage {name} in {path}")


def image_env(path: Path, name: str | None = None) -> dict[str, str]:
    """Every ``ENV key=value`` of one stage, in order."""
    env: dict[str, str] = {}
    for line in stage(path, name).splitlines():
        if line.startswith("ENV "):
            env.update(dict(re.findall(r"(\w+)=(\S+)", line)))
    return env


def image_workdir(path: Path, name: str | None = None) -> str:
    """The last ``WORKDIR`` of one stage."""
    return re.findall(r"^WORKDIR (\S+)$", stage(path, name), re.M)[-1]


def image_cmd(path: Path, name: str | None = None) -> list[str]:
    """The ``CMD`` (exec form) of one stage."""
    match = re.search(r"^CMD (\[.*\])$", stage(path, name), re.M)
    assert match, f"no exec-form CMD in {path}"
    return json.loads(match.group(1))


def in_root(value: str, root: Path) -> str:
    """An absolute image path mapped under ``root`` (``/models`` -> ``<root>/models``); other values unchanged."""
    return str(root / value.lstrip("/")) if value.startswith("/") else value
