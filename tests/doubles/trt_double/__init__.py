"""A test double of NVIDIA's ``tensorrt`` Python module, one per release, for rehearsing the GPU build here.

``tests/doubles/trt11/tensorrt`` and ``tests/doubles/trt10/tensorrt`` are importable as ``tensorrt`` (put the
folder first on ``PYTHONPATH``); each calls :func:`install` with the surface extracted from NVIDIA's public
sources for its release (``tests/doubles/tensorrt_api/surface_*.json``, made by ``extract.py`` from the
pybind11 bindings and C++ headers at the release tag). :func:`install`:

* creates every enum of the release with the header values (``BuilderFlag``, ``DataType``, ...), so e.g.
  ``BuilderFlag.FP16`` exists on 10.16 and not on 11.1, and ``NetworkDefinitionCreationFlag.STRONGLY_TYPED`` is
  1 on 10.16 and 0 on 11.1;
* copies into the release's module only the members of each implemented class that the release publishes
  (plus the Python-level additions of ``bindings_wheel/tensorrt/__init__.py``), so ``ILayer.precision``,
  ``IBuilderConfig.int8_calibrator`` or ``IInt8EntropyCalibrator2`` are AttributeErrors on 11.1, as there.

What it is: enough of TensorRT for Polygraphy and trimodal's builder to run a whole build: parse a real ONNX
file into a strongly typed network, configure, "build" and deserialize a plan, with the failures a rehearsal
can check (see the modules). What it is not: TensorRT. No kernel is selected, nothing runs on a GPU, the plan
is a JSON description, and the layer counts approximate a real parse. ``tests/unit/test_tensorrt_double.py``
checks the double against the extracted surfaces.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import builder, core, engine, network
from .enums import make_enum

SURFACES = Path(__file__).resolve().parent.parent / "tensorrt_api"

# public name -> (implementation, base class name or builtin base)
IMPLEMENTATIONS: dict[str, tuple[type, Any]] = {
    "ILogger": (core.ILogger, None),
    "Logger": (core.Logger, "ILogger"),
    "Dims": (core.Dims, None),
    "IHostMemory": (core.IHostMemory, bytes),
    "ITimingCache": (core.ITimingCache, None),
    "IProgressMonitor": (core.IProgressMonitor, None),
    "ITensor": (network.ITensor, None),
    "ILayer": (network.ILayer, None),
    "INetworkDefinition": (network.INetworkDefinition, None),
    "ParserError": (network.ParserError, None),
    "OnnxParser": (network.OnnxParser, None),
    "IOptimizationProfile": (builder.IOptimizationProfile, None),
    "IBuilderConfig": (builder.IBuilderConfig, None),
    "Builder": (builder.Builder, None),
    "ICudaEngine": (engine.ICudaEngine, None),
    "Runtime": (engine.Runtime, None),
}
FUNCTIONS = {"init_libnvinfer_plugins": core.init_libnvinfer_plugins}
# bindings_wheel/tensorrt/__init__.py adds these in Python.
PYTHON_LEVEL = {
    name: {"__enter__", "__exit__"}
    for name in ("ILogger", "ICudaEngine", "Runtime", "IHostMemory", "Builder", "INetworkDefinition", "OnnxParser",
                 "IBuilderConfig")
}  # fmt: skip
# Dunders of the implementations that are protocol methods: kept only where the release publishes them.
PROTOCOL = {"__len__", "__getitem__", "__setitem__", "__bool__", "__nonzero__", "__eq__", "__del__", "__enter__",
            "__exit__", "__iter__", "__str__", "__repr__"}  # fmt: skip
KEEP = {"__init__", "__module__", "__doc__", "__qualname__", "__slots__", "__hash__"}


def published(surface: dict[str, Any], name: str) -> set[str]:
    """The member names a release publishes for class ``name`` (bindings plus Python-level additions)."""
    entry = surface["classes"].get(name, {})
    names = {member for kind in ("methods", "properties", "readonly", "static") for member in entry.get(kind, [])}
    return names | PYTHON_LEVEL.get(name, set())


def _members(impl: type, allowed: set[str], readonly: set[str]) -> dict[str, Any]:
    """The implementation's members this release has: published ones, private helpers and Python plumbing.

    A property the release publishes read-only loses its setter (``ITensor.dtype`` on 11).
    """
    kept = {}
    for key, value in impl.__dict__.items():
        dunder = key.startswith("__") and key.endswith("__")
        if key in allowed or key in KEEP or (dunder and key not in PROTOCOL) or (key.startswith("_") and not dunder):
            kept[key] = property(value.fget) if key in readonly and isinstance(value, property) else value
    return kept


def _make_class(name: str, namespace: dict[str, Any], surface: dict[str, Any], api: Any) -> type:
    impl, base = IMPLEMENTATIONS[name]
    bases = (namespace[base],) if isinstance(base, str) else (base,) if base is not None else (object,)
    readonly = set(surface["classes"].get(name, {}).get("readonly", []))
    members = _members(impl, published(surface, name), readonly)
    members.pop("__dict__", None)
    members.pop("__weakref__", None)
    allowed = published(surface, name)

    def __setattr__(self: Any, key: str, value: Any) -> None:  # noqa: N807 - pybind objects have no __dict__
        if type(self) is cls and not key.startswith("_") and key not in allowed:
            raise AttributeError(f"'tensorrt.{name}' object has no attribute '{key}'")
        object.__setattr__(self, key, value)

    if base is not bytes:
        members["__setattr__"] = __setattr__
    cls = type(name, bases, members)
    cls.__module__ = "tensorrt"
    cls._api = api
    return cls


class _Api:
    """Attribute access to the release's module namespace (``self._api.DataType``)."""

    def __init__(self, namespace: dict[str, Any]) -> None:
        object.__setattr__(self, "_namespace", namespace)

    def __getattr__(self, name: str) -> Any:
        try:
            return self._namespace[name]
        except KeyError:
            raise AttributeError(f"module 'tensorrt' has no attribute '{name}'") from None


def install(namespace: dict[str, Any], version: str, surface_file: str) -> None:
    """Fill a ``tensorrt`` module's namespace with the double of one release.

    Args:
        namespace: the module's ``globals()``.
        version: ``tensorrt.__version__`` (``MAJOR.MINOR.PATCH.BUILD``, from NvInferVersion.h).
        surface_file: the surface JSON of the release, in ``tests/doubles/tensorrt_api/``.
    """
    surface = json.loads((SURFACES / surface_file).read_text())
    api = _Api(namespace)
    namespace["__version__"] = version
    namespace["_SURFACE"] = surface
    namespace["_STRONGLY_TYPED_ALWAYS"] = int(version.split(".")[0]) >= 11  # NvInfer.h 11: always strongly typed
    for name, members in surface["enums"].items():
        if name != "Severity":  # nested: ILogger.Severity
            namespace[name] = make_enum(name, members)
    for name in IMPLEMENTATIONS:
        if name in surface["classes"] or name == "ILogger":
            namespace[name] = _make_class(name, namespace, surface, api)
    severity = make_enum("Severity", surface["enums"]["Severity"])
    namespace["ILogger"].Severity = severity
    namespace["Logger"].Severity = severity
    for member_name, member in severity.__members__.items():
        setattr(namespace["ILogger"], member_name, member)  # pyCore.cpp: Severity ... .export_values()
        setattr(namespace["Logger"], member_name, member)  # bindings_wheel/tensorrt/__init__.py
    for name, function in FUNCTIONS.items():
        if name in surface["functions"]:
            namespace[name] = function
