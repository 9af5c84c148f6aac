"""The TensorRT version and GPU of this process, and the lazy imports of TensorRT and Polygraphy.

Nothing is imported at module level: the GPU is queried through the CUDA driver (``libcuda``) with ctypes,
so no Python CUDA package is needed, and TensorRT/Polygraphy are imported only when a function needs them.
"""

from __future__ import annotations

import ctypes
import logging
from dataclasses import dataclass
from typing import Any

from trimodal.errors import EngineError

LOGGER = logging.getLogger(__name__)

_CC_MAJOR = 75  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
_CC_MINOR = 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR


@dataclass(frozen=True)
class RuntimeInfo:
    """The TensorRT version and the GPU a plan is built on or served by."""

    tensorrt_version: str
    gpu_name: str
    compute_capability: str

    @property
    def sm(self) -> str:
        """``"8.6"`` -> ``"sm86"``."""
        return "sm" + self.compute_capability.replace(".", "")


def import_tensorrt() -> Any:
    """The ``tensorrt`` module.

    Raises:
        EngineError: if it is not installed, saying where engines are built.
    """
    try:
        import tensorrt as trt
    except ImportError as exc:
        raise EngineError(
            f"tensorrt is not importable here ({exc}); TensorRT engines are built and checked inside NVIDIA's "
            "TensorRT/Triton container: `docker compose run --rm engine-builder` (see deploy/GPU.md)"
        ) from None
    return trt


def import_polygraphy_trt() -> Any:
    """The ``polygraphy.backend.trt`` module.

    Raises:
        EngineError: if Polygraphy is not installed.
    """
    try:
        from polygraphy.backend import trt as polygraphy_trt
    except ImportError as exc:
        raise EngineError(f"polygraphy is not importable ({exc}); install trimodal[gpu]") from None
    return polygraphy_trt


def _load_libcuda() -> Any:
    try:
        return ctypes.CDLL("libcuda.so.1")
    except OSError as exc:
        raise EngineError(
            f"no NVIDIA driver here (cannot load libcuda.so.1: {exc}); run this on a GPU host, in a container "
            "started with a GPU reservation"
        ) from None


def _cuda_device(index: int = 0) -> tuple[str, str]:
    """Name and compute capability of a CUDA device via the driver API (libcuda), no Python CUDA package.

    ``index`` counts the devices visible to this process (``CUDA_VISIBLE_DEVICES`` applies).
    """
    libcuda = _load_libcuda()

    def call(name: str, *args: object) -> None:
        status = getattr(libcuda, name)(*args)
        if status != 0:
            raise EngineError(f"CUDA driver call {name} failed with error {status}: is a GPU visible to this process?")

    call("cuInit", 0)
    count = ctypes.c_int()
    call("cuDeviceGetCount", ctypes.byref(count))
    if index >= count.value:
        raise EngineError(f"CUDA device {index} requested but {count.value} device(s) are visible")
    device = ctypes.c_int()
    call("cuDeviceGet", ctypes.byref(device), index)
    name = ctypes.create_string_buffer(256)
    call("cuDeviceGetName", name, 256, device)
    major, minor = ctypes.c_int(), ctypes.c_int()
    call("cuDeviceGetAttribute", ctypes.byref(major), _CC_MAJOR, device)
    call("cuDeviceGetAttribute", ctypes.byref(minor), _CC_MINOR, device)
    return name.value.decode(errors="replace"), f"{major.value}.{minor.value}"


def detect_runtime(device: int = 0) -> RuntimeInfo:
    """The running TensorRT version and the GPU this process sees.

    Args:
        device: index among the visible CUDA devices.

    Returns:
        The runtime info.

    Raises:
        EngineError: if TensorRT or a GPU is missing.
    """
    trt = import_tensorrt()
    gpu_name, cc = _cuda_device(device)
    return RuntimeInfo(tensorrt_version=str(trt.__version__), gpu_name=gpu_name, compute_capability=cc)
