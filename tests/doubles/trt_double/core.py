"""Foundational types of the double: loggers, Dims, IHostMemory, ITimingCache, IProgressMonitor.

Written from python/src/infer/pyCore.cpp and pyFoundationalTypes.cpp (bindings), NvInferRuntime.h /
NvInferRuntimeBase.h (semantics) and python/packaging/bindings_wheel/tensorrt/__init__.py (the Python-level
additions: ``Logger.<SEVERITY>`` attributes, ``__enter__``/``__exit__`` on builders, networks, parsers...).
Every class here is an *implementation*: :func:`trt_double.install` copies the members a release publishes
into that release's module, so a member the release does not have is an AttributeError, as on the real one.
Implementations therefore reach other classes through ``self._api`` (the release's module) and never use
zero-argument ``super()``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any


def expect(value: object, cls: type, what: str) -> None:
    """pybind11's argument check: a wrong type is a TypeError naming the expected type."""
    if not isinstance(value, cls):
        raise TypeError(
            f"{what}(): incompatible function arguments; expected {cls.__name__}, got {type(value).__name__}"
        )


def common_enter(this: Any) -> Any:
    """bindings_wheel/tensorrt/__init__.py: ``with builder as b:``."""
    return this


def common_exit(this: Any, exc_type: object, exc_value: object, traceback: object) -> None:
    """bindings_wheel/tensorrt/__init__.py (the real one also deletes the object)."""


class ILogger:
    """Base of loggers; a Python subclass calls ``ILogger.__init__(self)`` and overrides ``log(severity, msg)``."""

    def __init__(self) -> None:
        pass

    def log(self, severity: Any, msg: str) -> None:
        raise RuntimeError('Tried to call pure virtual function "ILogger::log"')

    __enter__ = common_enter

    def __exit__(self, exc_type: object, exc_value: object, traceback: object) -> None:
        return None


class Logger(ILogger):
    """``tensorrt.Logger(min_severity=Logger.WARNING)``: prints messages at or above ``min_severity``."""

    def __init__(self, min_severity: Any = None) -> None:
        self._api.ILogger.__init__(self)
        self.min_severity = min_severity if min_severity is not None else self._api.ILogger.Severity.WARNING

    def log(self, severity: Any, msg: str) -> None:
        if int(severity) <= int(self.min_severity):
            print(f"[TRT] [{str(severity).rsplit('.', 1)[-1][0]}] {msg}")


class Dims:
    """``tensorrt.Dims``: a sequence of int64 dimensions (-1 = dynamic), comparable with lists and tuples."""

    _MAX_DIMS = 8  # Dims::MAX_DIMS

    def __init__(self, shape: Iterable[int] = ()) -> None:
        self._d = [int(d) for d in shape]
        if len(self._d) > self._MAX_DIMS:
            raise ValueError(f"Dims can have at most {self._MAX_DIMS} dimensions, got {len(self._d)}")

    def __len__(self) -> int:
        return len(self._d)

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return tuple(self._d[index])
        if not -len(self._d) <= index < len(self._d):
            raise IndexError(index)
        return self._d[index]

    def __setitem__(self, index: int, value: int) -> None:
        self._d[index] = int(value)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, type(self) | list | tuple):
            return list(self) == [int(d) for d in other]
        return NotImplemented

    def __str__(self) -> str:
        return "(" + ", ".join(str(d) for d in self._d) + ("," if len(self._d) == 1 else "") + ")"

    __repr__ = __str__


class IHostMemory(bytes):
    """Serialized data owned by TensorRT: buffer protocol, ``nbytes``, ``dtype`` (a bytes subclass here)."""

    @property
    def nbytes(self) -> int:
        return len(self)

    @property
    def dtype(self) -> Any:
        return self._api.DataType.UINT8

    def __del__(self) -> None:
        pass

    __enter__ = common_enter
    __exit__ = common_exit


class ITimingCache:
    """``IBuilderConfig.create_timing_cache``: tactic timings, serialized as this release's format."""

    _MAGIC = "trt-double-timing-cache"

    def __init__(self, version: str, entries: int = 0) -> None:
        self._version, self._entries = version, entries

    @classmethod
    def _from_bytes(cls, data: bytes, version: str) -> ITimingCache | None:
        if not data:
            return cls(version)
        try:
            content = json.loads(bytes(data).decode())
        except (UnicodeDecodeError, ValueError):
            return None
        if content.get("magic") != cls._MAGIC:
            return None
        return cls(content["version"], int(content["entries"]))

    def serialize(self) -> Any:
        content = {"magic": self._MAGIC, "version": self._version, "entries": self._entries}
        return self._api.IHostMemory(json.dumps(content).encode())

    def combine(self, input_cache: ITimingCache, ignore_mismatch: bool) -> bool:
        expect(input_cache, self._api.ITimingCache, "combine")
        if input_cache._version != self._version and not ignore_mismatch:
            return False
        self._entries = max(self._entries, input_cache._entries)
        return True

    def reset(self) -> bool:
        self._entries = 0
        return True


class IProgressMonitor:
    """Base of progress monitors; the builder calls the overrides as the bindings' trampoline does.

    pyCore.cpp ``PyProgressMonitor``: ``phase_start(phase_name, parent_phase, num_steps)`` positionally,
    ``step_complete(phase_name, step) -> bool`` (False cancels the build), ``phase_finish(phase_name)``; an
    exception in an override is printed as ``[ERROR] Exception caught in ...`` and swallowed, and one in
    ``step_complete`` counts as False.
    """

    def __init__(self) -> None:
        pass

    def phase_start(self, phase_name: str, parent_phase: str | None, num_steps: int) -> None:
        raise RuntimeError('Tried to call pure virtual function "IProgressMonitor::phaseStart"')

    def step_complete(self, phase_name: str, step: int) -> bool:
        raise RuntimeError('Tried to call pure virtual function "IProgressMonitor::stepComplete"')

    def phase_finish(self, phase_name: str) -> None:
        raise RuntimeError('Tried to call pure virtual function "IProgressMonitor::phaseFinish"')


def call_monitor(monitor: Any, method: str, *args: Any) -> Any:
    """Call a monitor override the way the trampoline does: exceptions are printed and swallowed."""
    import sys

    try:
        return getattr(monitor, method)(*args)
    except Exception as exc:
        print(f"[ERROR] Exception caught in {method}(): {exc}", file=sys.stderr)
        return False if method == "step_complete" else None


def init_libnvinfer_plugins(logger: Any, namespace: str) -> bool:
    """Register the standard plugins (nothing to register in the double)."""
    return True
