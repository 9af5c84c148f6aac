"""Validation of rendered configs: every ensemble step against the configs of the models it calls."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from trimodal import contract
from trimodal.contract import ENCODERS, POSTPROCESS, PREPROCESSORS
from trimodal.errors import RepositoryError
from trimodal.spec import PipelineSpec
from trimodal.triton.config import cpu_config, ensemble_config, gpu_config, postprocess_config, preprocess_config

LOGGER = logging.getLogger(__name__)


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
    shared = {
        **{m: preprocess_config(spec, m, ios[m]) for m in PREPROCESSORS},
        POSTPROCESS: postprocess_config(spec, ios[POSTPROCESS]),
    }
    targets = {
        "gpu": {**shared, **{m: gpu_config(spec, m, ios[m]) for m in ENCODERS}},
        "cpu": {**shared, **{m: cpu_config(spec, m, ios[m]) for m in ENCODERS}},
    }  # fmt: skip
    problems = [f"[{target}] {p}" for target, models in targets.items() for p in check_ensemble(ensemble, models)]
    if problems:
        raise RepositoryError("inconsistent ensemble:\n  " + "\n  ".join(problems))
