"""The TensorRT doubles follow the surfaces extracted from NVIDIA's sources for their releases, and only them."""

from __future__ import annotations

import inspect
import json

import pytest
from rehearsal_support import DOUBLES, load_double

SURFACES = {"10": "surface_10_16.json", "11": "surface_11_1.json"}


def surface(major: str) -> dict:
    return json.loads((DOUBLES / "tensorrt_api" / SURFACES[major]).read_text())


def public_members(cls: type) -> set[str]:
    """Members the double's class defines itself (not inherited from object/bytes), without private helpers."""
    own = set(cls.__dict__) - {"_api", "__module__", "__doc__", "__init__", "__dict__", "__weakref__", "__qualname__",
                               "__slots__", "__hash__", "__setattr__", "Severity"}  # fmt: skip
    return {name for name in own if not name.startswith("_") or (name.startswith("__") and name.endswith("__"))}


@pytest.mark.parametrize("major", ["10", "11"])
def test_every_member_of_the_double_is_published_by_the_release(major):
    trt, api = load_double(major), surface(major)
    from trt_double import published

    for name, cls in vars(trt).items():
        if inspect.isclass(cls) and name in api["classes"]:
            exported = set(api["enums"]["Severity"]) if name in ("ILogger", "Logger") else set()  # export_values()
            allowed = published(api, name) | exported
            extra = public_members(cls) - allowed
            assert not extra, (
                f"{name} of the {major} double has {sorted(extra)}, which TensorRT {major} does not publish"
            )


@pytest.mark.parametrize("major", ["10", "11"])
def test_enums_are_the_releases_names_and_values(major):
    trt, api = load_double(major), surface(major)
    for name, members in api["enums"].items():
        enum = trt.ILogger.Severity if name == "Severity" else getattr(trt, name)
        assert {k: int(v) for k, v in enum.__members__.items()} == members, name


@pytest.mark.parametrize("major", ["10", "11"])
def test_module_names_are_published(major):
    trt, api = load_double(major), surface(major)
    published_names = set(api["classes"]) | set(api["enums"]) | set(api["functions"])
    names = {n for n in vars(trt) if not n.startswith("_")} - {"install"}
    assert names <= published_names, sorted(names - published_names)


def test_what_tensorrt_11_removed_is_gone_from_the_11_double_only():
    trt10, trt11 = load_double("10"), load_double("11")
    removed = [("BuilderFlag", "FP16"), ("BuilderFlag", "INT8"), ("BuilderFlag", "OBEY_PRECISION_CONSTRAINTS"),
               ("NetworkDefinitionCreationFlag", "EXPLICIT_BATCH"), ("ILayer", "precision"),
               ("ILayer", "precision_is_set"), ("IBuilderConfig", "int8_calibrator"),
               ("Builder", "platform_has_fast_fp16")]  # fmt: skip
    for owner, member in removed:
        assert hasattr(getattr(trt10, owner), member), f"{owner}.{member} should exist on 10.16"
        assert not hasattr(getattr(trt11, owner), member), f"{owner}.{member} should be gone on 11.1"
    assert not hasattr(trt11, "IInt8EntropyCalibrator2") and "IInt8EntropyCalibrator2" in surface("10")["classes"]
    assert int(trt10.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 1
    assert int(trt11.NetworkDefinitionCreationFlag.STRONGLY_TYPED) == 0
    assert trt11.ITensor.dtype.fset is None and trt10.ITensor.dtype.fset is not None


def test_surfaces_name_their_source_and_release():
    for major, expected in (("10", "10.16.0"), ("11", "11.1.0")):
        api = surface(major)
        assert api["tensorrt_version"] == expected
        assert api["source"].startswith("github.com/NVIDIA/TensorRT@")
        assert {"Builder", "IBuilderConfig", "INetworkDefinition", "OnnxParser", "Runtime"} <= set(api["classes"])


@pytest.mark.parametrize("major", ["10", "11"])
def test_method_arguments_have_the_bindings_names(major):
    """Every method of the double takes the arguments of one of the release's overloads (``"name"_a``)."""
    trt, api = load_double(major), surface(major)
    checked = 0
    for name, cls in vars(trt).items():
        signatures = api["classes"].get(name, {}).get("signatures", {}) if inspect.isclass(cls) else {}
        for method, overloads in signatures.items():
            function = cls.__dict__.get(method)
            if not inspect.isfunction(function) or not any(overloads):
                continue
            parameters = list(inspect.signature(function).parameters)[1:]
            assert parameters in overloads, f"{name}.{method}{tuple(parameters)}: the bindings have {overloads}"
            checked += 1
    assert checked >= 40, checked
