"""Triton model configs as protobuf ``ModelConfig`` objects, built from the spec (never from text templates).

Every model gets a production config (TensorRT plans on a GPU for the encoders and the fusion head;
Python-backend preprocessors and postprocess on CPU). The four ONNX models also get a CPU config (Python
backend running the same ``model.onnx`` in ONNX Runtime), selected by ``tritonserver --model-config-name cpu``.
Tensor names, dtypes and dims are identical on both targets, so the ensemble config is shared.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from tritonclient.grpc import model_config_pb2 as mc

from trimodal import contract
from trimodal.contract import ENCODERS, ENSEMBLE, POSTPROCESS, PREPROCESSORS, ModelIO, TensorSpec
from trimodal.layout import onnx_filename
from trimodal.spec import PipelineSpec

LOGGER = logging.getLogger(__name__)

CPU_CONFIG_NAME = "cpu"


def _dtype(name: str) -> int:
    """KServe dtype name (``FP32``, ``BYTES``) -> model_config DataType (``BYTES`` is ``TYPE_STRING``)."""
    return mc.DataType.Value("TYPE_STRING" if name == "BYTES" else f"TYPE_{name}")


def _add_inputs(config: mc.ModelConfig, tensors: Iterable[TensorSpec]) -> None:
    for tensor in tensors:
        config.input.add(name=tensor.name, data_type=_dtype(tensor.dtype), dims=list(tensor.dims))


def _add_outputs(config: mc.ModelConfig, tensors: Iterable[TensorSpec]) -> None:
    for tensor in tensors:
        out = config.output.add(name=tensor.name, data_type=_dtype(tensor.dtype), dims=list(tensor.dims))
        if tensor.label_file:
            out.label_filename = contract.LABELS_FILE


def _dynamic_batching(spec: PipelineSpec, model: str) -> mc.ModelDynamicBatching:
    settings = spec.serving.resolved(model)
    batching = mc.ModelDynamicBatching(
        preferred_batch_size=settings.preferred_batch_sizes,
        max_queue_delay_microseconds=settings.max_queue_delay_us,
    )
    if settings.max_queue_size or settings.queue_timeout_us:
        batching.default_queue_policy.CopyFrom(
            mc.ModelQueuePolicy(
                timeout_action=mc.ModelQueuePolicy.REJECT,
                default_timeout_microseconds=settings.queue_timeout_us,
                allow_timeout_override=True,
                max_queue_size=settings.max_queue_size,
            )
        )
    return batching


def _base_config(spec: PipelineSpec, model: str, io: ModelIO) -> mc.ModelConfig:
    config = mc.ModelConfig(name=model, max_batch_size=spec.serving.resolved(model).max_batch_size)
    _add_inputs(config, io.inputs)
    _add_outputs(config, io.outputs)
    config.dynamic_batching.CopyFrom(_dynamic_batching(spec, model))
    config.version_policy.latest.num_versions = 1
    return config


def _set_param(config: mc.ModelConfig, key: str, value: str) -> None:
    config.parameters[key].string_value = value


def preprocess_config(spec: PipelineSpec, model: str, io: ModelIO) -> mc.ModelConfig:
    """Config of a Python-backend preprocessor (same on both targets: it always runs on CPU).

    Args:
        spec: the pipeline spec.
        model: one of :data:`trimodal.contract.PREPROCESSORS`.
        io: the model's tensors.

    Returns:
        The model config.
    """
    config = _base_config(spec, model, io)
    config.backend = "python"
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=spec.serving.resolved(model).cpu_instances)
    modality = model.removeprefix("preprocess_")
    _set_param(config, "modality_spec", getattr(spec.modalities, modality).model_dump_json())
    return config


def postprocess_config(spec: PipelineSpec, io: ModelIO) -> mc.ModelConfig:
    """Config of the postprocess model (same on both targets: Python backend on CPU).

    It refuses samples with every modality empty and computes the agreement outputs; the class names and the
    conflict threshold are model parameters, and its ``LABEL`` output carries the labels file.

    Args:
        spec: the pipeline spec.
        io: the model's tensors.

    Returns:
        The model config.
    """
    config = _base_config(spec, POSTPROCESS, io)
    config.backend = "python"
    count = spec.serving.resolved(POSTPROCESS).cpu_instances
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=count)
    _set_param(config, "classes", json.dumps(list(spec.classes)))
    _set_param(config, "conflict_threshold", repr(spec.multitask.conflict_threshold))
    return config


def _warmup(spec: PipelineSpec, model: str, io: ModelIO) -> list[mc.ModelWarmup]:
    max_batch = spec.serving.resolved(model).max_batch_size
    warmups = []
    for batch in sorted({1, max_batch}):
        warmup = mc.ModelWarmup(name=f"zeros_batch_{batch}", batch_size=batch)
        for tensor in io.inputs:
            dims = [spec.modalities.text.max_tokens if dim == -1 else dim for dim in tensor.dims]
            warmup.inputs[tensor.name].CopyFrom(
                mc.ModelWarmup.Input(data_type=_dtype(tensor.dtype), dims=dims, zero_data=True)
            )
        warmups.append(warmup)
    return warmups


def plan_filename(compute_capability: str | None = None) -> str:
    """File name of a TensorRT plan in a model's version folder.

    Args:
        compute_capability: ``"8.6"``-style GPU architecture, or None for the single default plan.

    Returns:
        ``model.plan`` or ``model_sm86.plan``.
    """
    if compute_capability is None:
        return "model.plan"
    return f"model_sm{compute_capability.replace('.', '')}.plan"


def gpu_config(spec: PipelineSpec, model: str, io: ModelIO) -> mc.ModelConfig:
    """Production (GPU) config of an encoder or the fusion head: a TensorRT plan on KIND_GPU.

    Args:
        spec: the pipeline spec.
        model: one of :data:`trimodal.contract.ENCODERS`.
        io: the model's tensors.

    Returns:
        The model config.
    """
    config = _base_config(spec, model, io)
    config.platform = "tensorrt_plan"
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_GPU, count=spec.serving.resolved(model).gpu_instances)
    if spec.engines.compute_capabilities:
        for cc in spec.engines.compute_capabilities:
            config.cc_model_filenames[cc] = plan_filename(cc)
    else:
        config.default_model_filename = plan_filename()
    config.model_warmup.extend(_warmup(spec, model, io))
    return config


def cpu_config(spec: PipelineSpec, model: str, io: ModelIO) -> mc.ModelConfig:
    """CPU config of an encoder or the fusion head: Python backend running one precision graph in ONNX Runtime.

    ``onnx_file`` is the graph of the precision pipeline.yaml serves on the CPU target; a model with an
    ``ATTENTION_MASK`` input (the text encoder) gets ``trim_padding`` (all-padding token columns are cut before
    each run, which is exact).

    Args:
        spec: the pipeline spec.
        model: one of :data:`trimodal.contract.ENCODERS`.
        io: the model's tensors.

    Returns:
        The model config.
    """
    settings = spec.serving.resolved(model)
    config = _base_config(spec, model, io)
    config.backend = "python"
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=settings.cpu_instances)
    _set_param(config, "onnx_file", onnx_filename(spec.precision.of(model, "cpu")))
    if any(tensor.name == contract.ATTENTION_MASK for tensor in io.inputs):
        _set_param(config, "trim_padding", "true")
    _set_param(config, "intra_op_threads", str(settings.ort_threads))
    return config


def _step(model: str, io: ModelIO) -> mc.ModelEnsembling.Step:
    step = mc.ModelEnsembling.Step(model_name=model, model_version=-1)
    for tensor in io.inputs:
        step.input_map[tensor.name] = tensor.name
    for tensor in io.outputs:
        step.output_map[tensor.name] = tensor.name
    return step


def ensemble_config(spec: PipelineSpec, ios: dict[str, ModelIO]) -> mc.ModelConfig:
    """The ensemble: raw bytes -> preprocessors -> encoders -> fusion head -> postprocess.

    Args:
        spec: the pipeline spec.
        ios: every model's tensors (from :func:`trimodal.contract.model_io`).

    Returns:
        The ensemble config.
    """
    io = ios[ENSEMBLE]
    config = mc.ModelConfig(name=ENSEMBLE, platform="ensemble", max_batch_size=spec.serving.ensemble_max_batch_size)
    _add_inputs(config, io.inputs)
    _add_outputs(config, io.outputs)
    for model in (*PREPROCESSORS, *ENCODERS, POSTPROCESS):
        config.ensemble_scheduling.step.append(_step(model, ios[model]))
    return config


def drain_config(ensemble: mc.ModelConfig) -> mc.ModelConfig:
    """The stand-in for an ensemble while the server drains: same name and tensors, every request refused.

    A Python-backend model (``trimodal.runtime.backends.drain``) with the ensemble's inputs, outputs and
    max_batch_size, without label files (it never answers with data).

    Args:
        ensemble: the served ensemble's config.

    Returns:
        The stand-in's config.
    """
    config = mc.ModelConfig(name=ensemble.name, max_batch_size=ensemble.max_batch_size, backend="python")
    config.input.extend(ensemble.input)
    config.output.extend(ensemble.output)
    for output in config.output:
        output.label_filename = ""
    config.instance_group.add(kind=mc.ModelInstanceGroup.KIND_CPU, count=1)
    return config
