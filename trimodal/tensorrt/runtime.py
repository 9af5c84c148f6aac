"""The TensorRT version and GPU of this process, and the lazy imports of TensorRT and Polygraphy.

Nothing is imported at module level. The GPU is queried through the CUDA driver (``libcuda``) with ctypes, so
no Python CUDA package is needed; the TensorRT version comes from the Python ``tensorrt`` module where it is
installed (the engine builder image) and otherwise from the TensorRT library itself (``libnvinfer``, through
ctypes: ``getInferLibMajorVersion`` & co. of NvInferRuntime.h), which is how ``trimodal check`` sees the
TensorRT of the serving image, where Triton's TensorRT backend has the library but Python has no bindings.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
from dataclasses import dataclass
from typing import Any

from trimodal.errors import EngineError

LOGGER = logging.getLogger(__name__)

_CC_MAJOR = 75  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
_CC_MINOR = 76  # CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
LIBNVINFER_ENV = "TRIMODAL_LIBNVINFER"
# SONAMEs of TensorRT 11 and 10 (libnvinfer.so.<major>), newest first; then the unversioned development link.
LIBNVINFER_NAMES = ("libnvinfer.so.11", "libnvinfer.so.10", "libnvinfer.so")


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


def _load_libnvinfer() -> tuple[Any, str]:
    """The TensorRT library and the name it was loaded by (``TRIMODAL_LIBNVINFER`` first, then the SONAMEs).

    Raises:
        EngineError: if no libnvinfer can be loaded.
    """
    explicit = os.environ.get(LIBNVINFER_ENV)
    found = ctypes.util.find_library("nvinfer")
    names = [explicit] if explicit else [*LIBNVINFER_NAMES, *([found] if found else [])]
    errors = []
    for name in names:
        try:
            return ctypes.CDLL(name), name
        except OSError as exc:
            errors.append(str(exc))
    raise EngineError(
        f"no TensorRT library here (tried {', '.join(names)}: {'; '.join(errors)}); run this inside the serving "
        f"or engine-builder container, or set {LIBNVINFER_ENV} to the libnvinfer.so.<major> to use"
    )


def libnvinfer_version() -> str:
    """The version of the TensorRT library this process can load, as ``tensorrt.__version__`` writes it.

    ``MAJOR.MINOR.PATCH.BUILD`` from ``getInferLibMajorVersion``/``Minor``/``Patch``/``Build`` (TensorRT >= 10),
    else ``MAJOR.MINOR.PATCH`` decoded from ``getInferLibVersion`` ((MAJOR * 100 + MINOR) * 100 + PATCH).

    Raises:
        EngineError: if no libnvinfer can be loaded or it exports neither function.
    """
    library, name = _load_libnvinfer()
    parts = []
    for part in ("Major", "Minor", "Patch", "Build"):
        function = getattr(library, f"getInferLib{part}Version", None)
        if function is None:
            break
        function.restype = ctypes.c_int32
        parts.append(str(function()))
    if len(parts) == 4:
        return ".".join(parts)
    function = getattr(library, "getInferLibVersion", None)
    if function is None:
        raise EngineError(f"{name} exports no getInferLibVersion: is it TensorRT's libnvinfer?")
    function.restype = ctypes.c_int32
    value = int(function())
    return f"{value // 10000}.{value // 100 % 100}.{value % 100}"


def tensorrt_version() -> str:
    """The TensorRT version of this process: the Python bindings' where importable, else libnvinfer's.

    Raises:
        EngineError: if neither the bindings nor the library are present.
    """
    try:
        import tensorrt as trt
    except ImportError:
        return libnvinfer_version()
    return str(trt.__version__)


def same_tensorrt_version(built: str, running: str) -> bool:
    """Whether two TensorRT versions are the same release (a version without a build number matches any build)."""
    a, b = built.split("."), running.split(".")
    common = min(len(a), len(b), 4)
    return a[:common] == b[:common] and min(len(a), len(b)) >= 3


def detect_runtime(device: int = 0) -> RuntimeInfo:
    """The running TensorRT version and the GPU this process sees.

    Args:
        device: index among the visible CUDA devices.

    Returns:
        The runtime info.

    Raises:
        EngineError: if TensorRT (bindings or library) or a GPU is missing.
    """
    version = tensorrt_version()
    gpu_name, cc = _cuda_device(device)
    return RuntimeInfo(tensorrt_version=version, gpu_name=gpu_name, compute_capability=cc)
