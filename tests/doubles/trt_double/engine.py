"""The double's plans and engines: a JSON description of the network, and Runtime/ICudaEngine that read it back.

Like a real plan, a double plan only deserializes on the release that built it: another version (or bytes
that are not a plan) is logged as an error and ``deserialize_cuda_engine`` returns None, as documented for
``IRuntime::deserializeCudaEngine``. An engine answers the I/O questions of pyCore.cpp's ``ICudaEngine``
(``num_io_tensors``, ``get_tensor_name/mode/dtype/shape``, ``get_tensor_profile_shape``); it cannot execute
(there is no ``create_execution_context``): running a plan needs a GPU.
"""

from __future__ import annotations

import json
from typing import Any

from .core import common_enter, common_exit

MAGIC = b"TRT-DOUBLE-PLAN\n"


def serialize_plan(api: Any, network: Any, config: Any) -> bytes:
    """The plan bytes of ``network`` built with ``config``."""
    profiles = []
    for profile in config._profiles:
        profiles.append({name: [list(s) for s in shapes] for name, shapes in profile._shapes.items()})
    io = [_tensor(t, "INPUT") for t in map(network.get_input, range(network.num_inputs))]
    io += [_tensor(t, "OUTPUT") for t in map(network.get_output, range(network.num_outputs))]
    content = {
        "version": api.__version__,
        "strongly_typed": network._strongly_typed,
        "io": io,
        "profiles": profiles,
        "num_layers": network.num_layers,
        "flags": [name for name, flag in api.BuilderFlag.__members__.items() if config.get_flag(flag)],
        "workspace": config.get_memory_pool_limit(api.MemoryPoolType.WORKSPACE),
    }
    return MAGIC + json.dumps(content, sort_keys=True).encode()


def _tensor(tensor: Any, mode: str) -> dict[str, Any]:
    return {"name": tensor.name, "mode": mode, "dtype": tensor.dtype.name, "shape": list(tensor.shape)}


class ICudaEngine:
    """A deserialized double plan: I/O tensors and profiles."""

    def __init__(self, content: dict[str, Any]) -> None:
        self._content = content
        self._io = {t["name"]: t for t in content["io"]}
        self.error_recorder = None

    @property
    def num_io_tensors(self) -> int:
        return len(self._io)

    @property
    def num_layers(self) -> int:
        return int(self._content["num_layers"])

    @property
    def num_optimization_profiles(self) -> int:
        return max(1, len(self._content["profiles"]))

    @property
    def name(self) -> str:
        return "Unnamed Network 0"

    def get_tensor_name(self, index: int) -> str:
        return list(self._io)[index]

    def get_tensor_mode(self, name: str) -> Any:
        return (
            getattr(self._api.TensorIOMode, self._io[name]["mode"]) if name in self._io else self._api.TensorIOMode.NONE
        )

    def get_tensor_dtype(self, name: str) -> Any:
        return getattr(self._api.DataType, self._io[name]["dtype"])

    def get_tensor_shape(self, name: str) -> Any:
        return self._api.Dims(self._io[name]["shape"])

    def get_tensor_profile_shape(self, name: str, profile_index: int) -> list[Any]:
        shapes = self._content["profiles"][profile_index][name]
        return [self._api.Dims(s) for s in shapes]

    def serialize(self) -> Any:
        return self._api.IHostMemory(MAGIC + json.dumps(self._content, sort_keys=True).encode())

    def __del__(self) -> None:
        pass

    __enter__ = common_enter
    __exit__ = common_exit


class Runtime:
    """``tensorrt.Runtime(logger)``: deserializes plans of this release only."""

    def __init__(self, logger: Any) -> None:
        from .core import expect

        expect(logger, self._api.ILogger, "Runtime")
        self._logger = logger
        self.engine_host_code_allowed = False
        self.DLA_core = -1
        self.max_threads = 1
        self.error_recorder = None

    @property
    def logger(self) -> Any:
        return self._logger

    def _error(self, message: str) -> None:
        self._logger.log(self._api.ILogger.Severity.ERROR, message)

    def deserialize_cuda_engine(self, serialized_engine: Any) -> Any:
        data = bytes(serialized_engine)
        if not data.startswith(MAGIC):
            self._error("IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization assertion "
                        "magicTagRead == kMAGIC_TAG failed.Magic Tag does not match)")  # fmt: skip
            return None
        content = json.loads(data[len(MAGIC) :])
        if content["version"] != self._api.__version__:
            self._error(f"IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine plan file is not "
                        f"compatible with this version of TensorRT, expecting library version {self._api.__version__} "
                        f"got {content['version']}, please rebuild.)")  # fmt: skip
            return None
        return self._api.ICudaEngine(content)

    __enter__ = common_enter
    __exit__ = common_exit
