"""Builder side of the double: Builder, IBuilderConfig, IOptimizationProfile, and what a build checks.

Written from python/src/infer/pyCore.cpp (names, argument names, properties) and NvInfer.h (defaults: TF32
on, profiling verbosity LAYER_NAMES_ONLY; ``buildSerializedNetwork`` returns nullptr and logs an error on an
invalid network/config). What a build refuses here:

* an input with a dynamic dimension but no optimization profile, a profile that misses an input, has the
  wrong rank, a fixed dimension that differs from the network's, or min > opt > max;
* (TensorRT 10 double) precision builder flags (FP16/BF16/INT8/FP8/INT4/FP4) on a strongly typed network:
  precision comes only from type inference there. This is stricter than verified: NVIDIA's docs say such a
  network's types follow only from the graph; whether 10.x errors or ignores the flags was not observed;
* a progress monitor's ``step_complete`` returning False (the build is cancelled, as documented).

Builds succeed instantly and the "plan" is a JSON description (:mod:`.engine`); nothing runs on a GPU.
"""

from __future__ import annotations

from typing import Any

from .core import call_monitor, common_enter, common_exit, expect

PRECISION_FLAGS = ("FP16", "BF16", "INT8", "FP8", "INT4", "FP4")
DEVICE_MEMORY = 141 << 30  # what the double reports as the GPU's memory (workspace default)


class IOptimizationProfile:
    """Min/opt/max shapes per input; ``bool(profile)`` is ``isValid()``."""

    def __init__(self) -> None:
        self._shapes: dict[str, tuple[Any, Any, Any]] = {}
        self._valid = True
        self.extra_memory_target = 1.0

    def set_shape(self, input: str, min: Any, opt: Any, max: Any) -> None:
        dims = [self._api.Dims(list(s)) for s in (min, opt, max)]
        ranks = {len(d) for d in dims}
        ordered = len(ranks) == 1 and all(a <= b <= c for a, b, c in zip(*dims, strict=True))
        if not ordered:
            self._valid = False
        self._shapes[input] = tuple(dims)

    def get_shape(self, input: str) -> list[Any]:
        return list(self._shapes.get(input, (self._api.Dims([]),) * 3))

    def set_shape_input(self, input: str, min: Any, opt: Any, max: Any) -> None:
        self._shapes[input] = (min, opt, max)

    def get_shape_input(self, input: str) -> list[Any]:
        return list(self._shapes.get(input, ((), (), ())))

    def __bool__(self) -> bool:
        return self._valid

    __nonzero__ = __bool__


class IBuilderConfig:
    """Builder settings: flags, memory pools, profiles, timing cache, progress monitor and friends."""

    def __init__(self, builder: Any) -> None:
        api = self._api
        self._builder, self._profiles, self._timing_cache = builder, [], None
        self.flags = 1 << int(api.BuilderFlag.TF32)
        self._pools = {int(p): (DEVICE_MEMORY if p == api.MemoryPoolType.WORKSPACE else 0)
                       for p in api.MemoryPoolType.__members__.values()}  # fmt: skip
        self._preview: set[int] = set()
        self._tactic_sources = sum(1 << int(s) for s in api.TacticSource.__members__.values())
        self.profiling_verbosity = api.ProfilingVerbosity.LAYER_NAMES_ONLY
        self.engine_capability = api.EngineCapability.STANDARD
        self.default_device_type = api.DeviceType.GPU
        self.DLA_core = -1
        self.builder_optimization_level = 3
        self.max_aux_streams = -1
        self.avg_timing_iterations = 1
        self.hardware_compatibility_level = api.HardwareCompatibilityLevel.NONE
        self._monitor = self._calibrator = self._selector = None

    def set_flag(self, flag: Any) -> None:
        expect(flag, self._api.BuilderFlag, "set_flag")
        self.flags |= 1 << int(flag)

    def clear_flag(self, flag: Any) -> None:
        expect(flag, self._api.BuilderFlag, "clear_flag")
        self.flags &= ~(1 << int(flag))

    def get_flag(self, flag: Any) -> bool:
        expect(flag, self._api.BuilderFlag, "get_flag")
        return bool(self.flags & (1 << int(flag)))

    def set_memory_pool_limit(self, pool: Any, pool_size: int) -> None:
        expect(pool, self._api.MemoryPoolType, "set_memory_pool_limit")
        self._pools[int(pool)] = int(pool_size)

    def get_memory_pool_limit(self, pool: Any) -> int:
        expect(pool, self._api.MemoryPoolType, "get_memory_pool_limit")
        return self._pools[int(pool)]

    def add_optimization_profile(self, profile: Any) -> int:
        expect(profile, self._api.IOptimizationProfile, "add_optimization_profile")
        if not profile:
            return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    @property
    def num_optimization_profiles(self) -> int:
        return len(self._profiles)

    def set_tactic_sources(self, tactic_sources: int) -> bool:
        self._tactic_sources = int(tactic_sources)
        return True

    def get_tactic_sources(self) -> int:
        return self._tactic_sources

    def set_preview_feature(self, feature: Any, enable: bool) -> None:
        expect(feature, self._api.PreviewFeature, "set_preview_feature")
        (self._preview.add if enable else self._preview.discard)(int(feature))

    def get_preview_feature(self, feature: Any) -> bool:
        expect(feature, self._api.PreviewFeature, "get_preview_feature")
        return int(feature) in self._preview

    def create_timing_cache(self, serialized_timing_cache: bytes) -> Any:
        cache = self._api.ITimingCache._from_bytes(serialized_timing_cache, self._api.__version__)
        if cache is None:
            self._builder._log("ERROR", "ITimingCache::deserialize: the timing cache is not a valid cache")
        return cache

    def set_timing_cache(self, cache: Any, ignore_mismatch: bool) -> bool:
        expect(cache, self._api.ITimingCache, "set_timing_cache")
        if cache._version != self._api.__version__ and not ignore_mismatch:
            self._builder._log("ERROR", "setTimingCache: the cache was built by another TensorRT version")
            return False
        self._timing_cache = cache
        return True

    def get_timing_cache(self) -> Any:
        return self._timing_cache

    @property
    def progress_monitor(self) -> Any:
        return self._monitor

    @progress_monitor.setter
    def progress_monitor(self, monitor: Any) -> None:
        if monitor is not None:
            expect(monitor, self._api.IProgressMonitor, "progress_monitor")
        self._monitor = monitor

    @property
    def int8_calibrator(self) -> Any:  # TensorRT 10 only
        return self._calibrator

    @int8_calibrator.setter
    def int8_calibrator(self, calibrator: Any) -> None:
        self._calibrator = calibrator

    @property
    def algorithm_selector(self) -> Any:  # TensorRT 10 only
        return self._selector

    @algorithm_selector.setter
    def algorithm_selector(self, selector: Any) -> None:
        self._selector = selector

    def get_quantization_flag(self, flag: Any) -> bool:  # TensorRT 10 only
        return False

    def set_quantization_flag(self, flag: Any) -> None:  # TensorRT 10 only
        pass

    def clear_quantization_flag(self, flag: Any) -> None:  # TensorRT 10 only
        pass

    def get_calibration_profile(self) -> Any:  # TensorRT 10 only
        return None

    def set_calibration_profile(self, profile: Any) -> bool:  # TensorRT 10 only
        return True

    __enter__ = common_enter
    __exit__ = common_exit


class Builder:
    """``tensorrt.Builder(logger)``: networks, configs, profiles and ``build_serialized_network``."""

    def __init__(self, logger: Any) -> None:
        expect(logger, self._api.ILogger, "Builder")
        self._logger = logger
        self.max_threads = 16
        self.error_recorder = None
        self.gpu_allocator = None

    @property
    def logger(self) -> Any:
        return self._logger

    @property
    def num_DLA_cores(self) -> int:  # noqa: N802 - the bindings' name
        return 0

    @property
    def max_DLA_batch_size(self) -> int:  # noqa: N802
        return 1

    @property
    def platform_has_fast_fp16(self) -> bool:  # TensorRT 10 only
        return True

    @property
    def platform_has_fast_int8(self) -> bool:  # TensorRT 10 only
        return True

    @property
    def platform_has_tf32(self) -> bool:  # TensorRT 10 only
        return True

    def _log(self, severity: str, message: str) -> None:
        self._logger.log(getattr(self._api.ILogger.Severity, severity), message)

    def create_network(self, flags: int = 0) -> Any:
        known = sum(1 << int(f) for f in self._api.NetworkDefinitionCreationFlag.__members__.values())
        if int(flags) & ~known:
            self._log("ERROR", f"createNetworkV2: invalid NetworkDefinitionCreationFlags {flags}")
            return None
        return self._api.INetworkDefinition(self, int(flags))

    def create_builder_config(self) -> Any:
        return self._api.IBuilderConfig(self)

    def create_optimization_profile(self) -> Any:
        return self._api.IOptimizationProfile()

    def build_serialized_network(self, network: Any, config: Any) -> Any:
        from .engine import serialize_plan

        expect(network, self._api.INetworkDefinition, "build_serialized_network")
        expect(config, self._api.IBuilderConfig, "build_serialized_network")
        problem = _config_problem(self._api, network, config) or _profile_problem(network, config)
        if problem:
            self._log("ERROR", f"IBuilder::buildSerializedNetwork: Error Code 4: API Usage Error ({problem})")
            return None
        if not _run_phases(config.progress_monitor, network):
            self._log("ERROR", "IBuilder::buildSerializedNetwork: the build was cancelled by the progress monitor")
            return None
        if config.get_timing_cache() is not None:
            config.get_timing_cache()._entries += network.num_layers
        return self._api.IHostMemory(serialize_plan(self._api, network, config))

    __enter__ = common_enter
    __exit__ = common_exit


def _config_problem(api: Any, network: Any, config: Any) -> str | None:
    """Precision flags on a strongly typed network (only TensorRT 10 has them)."""
    if not network._strongly_typed:
        return None
    flags = [f for f in PRECISION_FLAGS if hasattr(api.BuilderFlag, f) and config.get_flag(getattr(api.BuilderFlag, f))]
    if flags:
        return f"precision flags {flags} are not allowed on a strongly typed network; types come from the graph"
    return None


def _profile_problem(network: Any, config: Any) -> str | None:
    """What makes the optimization profiles unusable for the network's inputs."""
    dynamic = [network.get_input(i) for i in range(network.num_inputs) if -1 in list(network.get_input(i).shape)]
    if dynamic and not config.num_optimization_profiles:
        return "Network has dynamic or shape inputs, but no optimization profile has been defined"
    for profile in config._profiles:
        for index in range(network.num_inputs):
            tensor = network.get_input(index)
            low, opt, high = profile.get_shape(tensor.name)
            if not len(low):
                return f"optimization profile is missing values for input {tensor.name}"
            if len(low) != len(tensor.shape):
                return f"input {tensor.name}: profile rank {len(low)} but the network's is {len(tensor.shape)}"
            for axis, dim in enumerate(tensor.shape):
                if dim != -1 and not low[axis] == opt[axis] == high[axis] == dim:
                    return f"input {tensor.name}: profile dimension {axis} must be {dim}"
    return None


def _run_phases(monitor: Any, network: Any) -> bool:
    """Drive the progress monitor through two nested phases; False if it cancelled the build."""
    if monitor is None:
        return True
    top, steps = "Building engine", max(1, min(network.num_layers, 4))
    call_monitor(monitor, "phase_start", top, None, 2)
    for number, phase in enumerate(("Graph optimization", "Tactic selection")):
        call_monitor(monitor, "phase_start", phase, top, steps)
        for step in range(steps):
            if not call_monitor(monitor, "step_complete", phase, step):
                return False
        call_monitor(monitor, "phase_finish", phase)
        if not call_monitor(monitor, "step_complete", top, number):
            return False
    call_monitor(monitor, "phase_finish", top)
    return True
