"""Render the Triton model repository from the spec: protobuf ``ModelConfig`` objects -> text_format.

Every model folder gets a ``config.pbtxt`` (the production target: TensorRT plans on a GPU for the
encoders and the fusion head; Python-backend preprocessors on CPU). The four ONNX models also get
``configs/cpu.pbtxt`` (Python backend running the same ``model.onnx`` in ONNX Runtime), selected by
``tritonserver --model-config-name cpu``. Tensor names, dtypes and dims are identical on both targets,
so the ensemble config is shared.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from trimodal import contract
from trimodal.contract import ENCODERS, ENSEMBLE, PREPROCESSORS, ModelIO, TensorSpec
from trimodal.errors import RepositoryError
from trimodal.spec import PipelineSpec

LOGGER = logging.getLogger(__name__)

DEFAULT_REPOSITORY = Path(__file__).resolve().parent.parent / "model_repository"
CPU_CONFIG_NAME = "cpu"
HEADER = "# Rendered from pipeline.yaml by trimodal.repository; do not edit (run `trimodal render`).\n"
SHIM_TEMPLATE_MODULE = {
    "preprocess_image": "trimodal.backends.preprocess:PreprocessImage",
    "preprocess_text": "trimodal.backends.preprocess:PreprocessText",
    "preprocess_audio": "trimodal.backends.preprocess:PreprocessAudio",
    "onnx": "trimodal.backends.onnx_model:OnnxModel",
}


@dataclass(frozen=True)
class RenderedFile:
    """One file of the rendered repository, relative to the repository root."""

    path: Path
    text: str


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
    """CPU config of an encoder or the fusion head: Python backend running model.onnx in ONNX Runtime.

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
    _set_param(config, "onnx_file", "model.onnx")
    _set_param(config, "intra_op_threads", str(settings.ort_threads))
    if model == "fusion_classifier":
        masks = [contract.IMAGE_MASK, contract.TEXT_MASK, contract.AUDIO_MASK]
        _set_param(config, "require_any_of", json.dumps(masks))
    return config


def _step(model: str, io: ModelIO) -> mc.ModelEnsembling.Step:
    step = mc.ModelEnsembling.Step(model_name=model, model_version=-1)
    for tensor in io.inputs:
        step.input_map[tensor.name] = tensor.name
    for tensor in io.outputs:
        step.output_map[tensor.name] = tensor.name
    return step


def ensemble_config(spec: PipelineSpec, ios: dict[str, ModelIO]) -> mc.ModelConfig:
    """The ensemble: raw bytes -> preprocessors -> encoders -> fusion head.

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
    for model in (*PREPROCESSORS, *ENCODERS):
        config.ensemble_scheduling.step.append(_step(model, ios[model]))
    return config


def _to_text(config: mc.ModelConfig) -> str:
    return HEADER + text_format.MessageToString(config)


def _shim(target: str) -> str:
    module, cls = target.split(":")
    return (
        f'"""Triton Python-backend entry point (rendered by trimodal.repository); the code is in {module}."""\n\n'
        f"from {module} import {cls} as TritonPythonModel\n\n"
        '__all__ = ["TritonPythonModel"]\n'
    )


def render_files(spec: PipelineSpec) -> list[RenderedFile]:
    """Every committed file of the model repository, rendered from the spec.

    Args:
        spec: the pipeline spec.

    Returns:
        Files with paths relative to the repository root.
    """
    ios = contract.model_io(spec)
    labels = "".join(f"{name}\n" for name in spec.classes)
    files = []
    for model in PREPROCESSORS:
        files.append(RenderedFile(Path(model, "config.pbtxt"), _to_text(preprocess_config(spec, model, ios[model]))))
        files.append(RenderedFile(Path(model, "1", "model.py"), _shim(SHIM_TEMPLATE_MODULE[model])))
    for model in ENCODERS:
        files.append(RenderedFile(Path(model, "config.pbtxt"), _to_text(gpu_config(spec, model, ios[model]))))
        cpu_path = Path(model, "configs", f"{CPU_CONFIG_NAME}.pbtxt")
        files.append(RenderedFile(cpu_path, _to_text(cpu_config(spec, model, ios[model]))))
        files.append(RenderedFile(Path(model, "1", "model.py"), _shim(SHIM_TEMPLATE_MODULE["onnx"])))
    files.append(RenderedFile(Path("fusion_classifier", contract.LABELS_FILE), labels))
    files.append(RenderedFile(Path(ENSEMBLE, "config.pbtxt"), _to_text(ensemble_config(spec, ios))))
    files.append(RenderedFile(Path(ENSEMBLE, contract.LABELS_FILE), labels))
    files.append(RenderedFile(Path(ENSEMBLE, "1", ".gitkeep"), ""))
    return files


def render(spec: PipelineSpec, repo_dir: Path = DEFAULT_REPOSITORY) -> list[Path]:
    """Write the rendered configs into ``repo_dir`` (artifacts such as model.onnx are left alone).

    Args:
        spec: the pipeline spec.
        repo_dir: the model repository folder.

    Returns:
        The files written.
    """
    validate_ensemble(spec)
    written = []
    for rendered in render_files(spec):
        target = repo_dir / rendered.path
        target.parent.mkdir(parents=True, exist_ok=True)
        if not target.exists() or target.read_text(encoding="utf-8") != rendered.text:
            target.write_text(rendered.text, encoding="utf-8")
            written.append(target)
    LOGGER.info("rendered %d file(s) into %s (%d changed)", len(render_files(spec)), repo_dir, len(written))
    return written


def stale_files(spec: PipelineSpec, repo_dir: Path = DEFAULT_REPOSITORY) -> list[Path]:
    """Committed files that differ from a fresh render (empty when the repository is up to date).

    Args:
        spec: the pipeline spec.
        repo_dir: the model repository folder.

    Returns:
        Relative paths of missing or different files.
    """
    stale = []
    for rendered in render_files(spec):
        target = repo_dir / rendered.path
        if not target.exists() or target.read_text(encoding="utf-8") != rendered.text:
            stale.append(rendered.path)
    return stale


def load_config(path: Path) -> mc.ModelConfig:
    """Parse a config.pbtxt.

    Args:
        path: the file.

    Returns:
        The parsed config.

    Raises:
        RepositoryError: if it cannot be read or parsed.
    """
    try:
        return text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())
    except (OSError, text_format.ParseError) as exc:
        raise RepositoryError(f"cannot parse model config {path}: {exc}") from None


def _dims_compatible(a: Iterable[int], b: Iterable[int]) -> bool:
    a, b = list(a), list(b)
    return len(a) == len(b) and all(x == y or -1 in (x, y) for x, y in zip(a, b, strict=True))


def _tensor_table(tensors: Iterable[mc.ModelInput | mc.ModelOutput]) -> dict[str, tuple[int, list[int]]]:
    return {t.name: (t.data_type, list(t.dims)) for t in tensors}


def check_ensemble(ensemble: mc.ModelConfig, models: dict[str, mc.ModelConfig]) -> list[str]:
    """Check every ensemble step against the configs of the models it calls.

    Each ``input_map``/``output_map`` key must be a real input/output of the step's model, and every
    ensemble tensor must be produced (by an ensemble input or an earlier step) with the same dtype and
    compatible dims before it is consumed; every ensemble output must be produced.

    Args:
        ensemble: the ensemble config.
        models: configs of the composing models by name.

    Returns:
        One message per problem (empty when consistent).
    """
    problems: list[str] = []
    available = _tensor_table(ensemble.input)
    for step in ensemble.ensemble_scheduling.step:
        target = models.get(step.model_name)
        if target is None:
            problems.append(f"step {step.model_name}: no such model in the repository")
            continue
        inputs, outputs = _tensor_table(target.input), _tensor_table(target.output)
        for model_tensor, ensemble_tensor in step.input_map.items():
            if model_tensor not in inputs:
                problems.append(f"step {step.model_name}: input_map key {model_tensor!r} is not an input of the model")
            elif ensemble_tensor not in available:
                problems.append(f"step {step.model_name}: {ensemble_tensor!r} is consumed before it is produced")
            elif available[ensemble_tensor][0] != inputs[model_tensor][0] or not _dims_compatible(
                available[ensemble_tensor][1], inputs[model_tensor][1]
            ):
                problems.append(
                    f"step {step.model_name}: {ensemble_tensor!r} is {_describe(available[ensemble_tensor])} but input "
                    f"{model_tensor!r} expects {_describe(inputs[model_tensor])}"
                )
        missing = sorted(set(inputs) - set(step.input_map))
        if missing:
            problems.append(f"step {step.model_name}: inputs {missing} are not mapped")
        for model_tensor, ensemble_tensor in step.output_map.items():
            if model_tensor not in outputs:
                problems.append(f"step {step.model_name}: output_map key {model_tensor!r} is not a model output")
            else:
                available[ensemble_tensor] = outputs[model_tensor]
    for name, (dtype, dims) in _tensor_table(ensemble.output).items():
        if name not in available:
            problems.append(f"ensemble output {name!r} is produced by no step")
        elif available[name][0] != dtype or not _dims_compatible(available[name][1], dims):
            declared = _describe((dtype, dims))
            problems.append(f"ensemble output {name!r} is {_describe(available[name])}, declared {declared}")
    return problems


def _describe(entry: tuple[int, list[int]]) -> str:
    return f"{mc.DataType.Name(entry[0]).removeprefix('TYPE_')}{entry[1]}"


def validate_ensemble(spec: PipelineSpec) -> None:
    """Render the ensemble and the composing models' configs (both targets) and check their maps.

    Args:
        spec: the pipeline spec.

    Raises:
        RepositoryError: listing every problem.
    """
    ios = contract.model_io(spec)
    ensemble = ensemble_config(spec, ios)
    targets = {
        "gpu": {**{m: preprocess_config(spec, m, ios[m]) for m in PREPROCESSORS},
                **{m: gpu_config(spec, m, ios[m]) for m in ENCODERS}},
        "cpu": {**{m: preprocess_config(spec, m, ios[m]) for m in PREPROCESSORS},
                **{m: cpu_config(spec, m, ios[m]) for m in ENCODERS}},
    }  # fmt: skip
    problems = [f"[{target}] {p}" for target, models in targets.items() for p in check_ensemble(ensemble, models)]
    if problems:
        raise RepositoryError("inconsistent ensemble:\n  " + "\n  ".join(problems))


ARTIFACTS: dict[str, str] = {model: "model.onnx" for model in ENCODERS}


def install_artifacts(build_dir: Path, repo_dir: Path = DEFAULT_REPOSITORY, tokenizer_file: Path | None = None) -> None:
    """Copy the exported ONNX graphs and the tokenizer into the repository's version folders.

    Args:
        build_dir: the build folder holding ``onnx/<model>.onnx``.
        repo_dir: the model repository folder.
        tokenizer_file: the tokenizer.json to serve (defaults to the packaged all-MiniLM-L6-v2 one).

    Raises:
        RepositoryError: if an ONNX file is missing.
    """
    from trimodal.data.preprocess import tokenizer_path

    for model, filename in ARTIFACTS.items():
        source = build_dir / "onnx" / f"{model}.onnx"
        if not source.exists():
            raise RepositoryError(f"missing {source}: run `trimodal build` first")
        _copy_if_changed(source, repo_dir / model / "1" / filename)
    _copy_if_changed(Path(tokenizer_file or tokenizer_path()), repo_dir / "preprocess_text" / "1" / "tokenizer.json")


def _copy_if_changed(source: Path, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and target.read_bytes() == source.read_bytes():
        return
    tmp = target.with_suffix(target.suffix + ".tmp")
    shutil.copyfile(source, tmp)
    tmp.replace(target)
    LOGGER.info("installed %s", target)


def missing_artifacts(repo_dir: Path = DEFAULT_REPOSITORY) -> list[Path]:
    """Artifacts the CPU target needs that are not in the repository yet.

    Args:
        repo_dir: the model repository folder.

    Returns:
        The missing files.
    """
    needed = [repo_dir / model / "1" / filename for model, filename in ARTIFACTS.items()]
    needed.append(repo_dir / "preprocess_text" / "1" / "tokenizer.json")
    return [path for path in needed if not path.exists()]
