"""Torch -> ONNX export of the four served models, with dims and ONNX Runtime parity checks.

Every model is exported with :func:`torch.onnx.export` (the dynamo exporter) and ``torch.export.Dim.AUTO``
for the batch axis (and the sequence axis of the text encoder); tensor names are the contract's
(:func:`trimodal.contract.model_io`). A named ``Dim`` can silently produce a fixed-size model, so every
exported file is checked: :func:`check_dims` compares each input/output with the contract (batch and ``-1``
dims symbolic, the others fixed) and :func:`check_parity` runs ONNX Runtime against torch at two batch sizes
(and two sequence lengths for the text encoder).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trimodal.contract import ENCODERS, FUSION, NUMPY_DTYPES, ModelIO, TensorSpec, model_io
from trimodal.errors import ExportError
from trimodal.layout import BuildLayout
from trimodal.spec import PipelineSpec

if TYPE_CHECKING:
    from torch import nn

LOGGER = logging.getLogger(__name__)

PARITY_BATCHES: tuple[int, ...] = (1, 5)
TEXT_PARITY_LENGTHS: tuple[int, ...] = (8,)  # plus spec.modalities.text.max_tokens
DEFAULT_ATOL = 1e-4
DEFAULT_RTOL = 1e-3

# Triton dtype -> ONNX TensorProto elem_type.
_ONNX_TYPES = {"FP32": 1, "UINT8": 2, "INT8": 3, "INT32": 6, "INT64": 7, "BOOL": 9, "FP16": 10, "FP64": 11}
_ONNX_TYPE_NAMES = {value: key for key, value in _ONNX_TYPES.items()}


# ---------------------------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------------------------


def _describe_dims(dims: Sequence[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _graph_dims(value: Any) -> list[int | str]:
    """The dims of an ONNX value: a symbol name, a size, or ``?`` when neither is set."""
    return [
        dim.dim_param if dim.HasField("dim_param") else (dim.dim_value if dim.HasField("dim_value") else "?")
        for dim in value.type.tensor_type.shape.dim
    ]


def _tensor_problems(kind: str, tensor: TensorSpec, value: Any) -> list[str]:
    """How one graph input/output differs from its contract tensor (dtype, dims)."""
    problems = []
    elem_type = value.type.tensor_type.elem_type
    if elem_type != _ONNX_TYPES.get(tensor.dtype):
        got = _ONNX_TYPE_NAMES.get(elem_type, str(elem_type))
        problems.append(f"{kind} {tensor.name}: expected dtype {tensor.dtype}, got {got}")
    dims = _graph_dims(value)
    expected_dims: list[int | str] = ["batch", *("dynamic" if d == -1 else d for d in tensor.dims)]
    ok = len(dims) == len(expected_dims) and all(
        isinstance(got, str) if want in ("batch", "dynamic") else got == want
        for got, want in zip(dims, expected_dims, strict=True)
    )
    if not ok:
        problems.append(
            f"{kind} {tensor.name}: expected dims {_describe_dims(expected_dims)} "
            f"(batch and dynamic symbolic), got {_describe_dims(dims)}"
        )
    return problems


def _values_problems(kind: str, expected: Sequence[TensorSpec], actual: Sequence[Any]) -> list[str]:
    """How a graph's inputs or outputs differ from the contract's: names and order, then each tensor."""
    problems = []
    want_names = [tensor.name for tensor in expected]
    got_names = [value.name for value in actual]
    if want_names != got_names:
        problems.append(f"{kind} names: expected {want_names}, got {got_names}")
    by_name = {value.name: value for value in actual}
    for tensor in expected:
        if tensor.name in by_name:
            problems += _tensor_problems(kind, tensor, by_name[tensor.name])
    return problems


def check_dims(onnx_path: str | Path, io: ModelIO, *, model_name: str = "") -> None:
    """Check an exported ONNX file's inputs and outputs against the tensor contract.

    Names and order must match; dtypes must match; the first (batch) dim and every contract ``-1`` dim must be
    symbolic; every other dim must equal the contract's.

    Args:
        onnx_path: the ``.onnx`` file.
        io: the expected tensors (from :func:`trimodal.contract.model_io`; dims exclude the batch).
        model_name: for error messages.

    Raises:
        ExportError: listing every mismatching tensor with the expected and actual dims/dtype/names.
    """
    import onnx

    model = onnx.load(str(onnx_path), load_external_data=False)
    label = model_name or Path(onnx_path).stem
    initializers = {init.name for init in model.graph.initializer}
    inputs = [value for value in model.graph.input if value.name not in initializers]
    outputs = [value for value in model.graph.output if value.name not in initializers]
    problems = _values_problems("input", io.inputs, inputs) + _values_problems("output", io.outputs, outputs)
    if problems:
        raise ExportError(
            f"{label} ({onnx_path}): exported ONNX does not match the contract:\n  " + "\n  ".join(problems)
        )


def _torch_outputs(
    model: nn.Module,
    feed: Mapping[str, np.ndarray],
    input_names: Sequence[str],
    output_names: Sequence[str],
    label: str,
) -> list[np.ndarray]:
    """The torch model's outputs on one feed (inputs in the ONNX order), as numpy arrays."""
    import torch

    with torch.no_grad():
        reference = model(*(torch.from_numpy(np.ascontiguousarray(feed[name])) for name in input_names))
    if isinstance(reference, torch.Tensor):
        reference = (reference,)
    if len(reference) != len(output_names):
        raise ExportError(f"{label}: torch returned {len(reference)} outputs, expected {list(output_names)}")
    return [tensor.numpy() for tensor in reference]


def _compare(name: str, want: np.ndarray, have: np.ndarray, where: str, atol: float, rtol: float) -> tuple[float, str]:
    """Max abs difference of one output and, if it is out of tolerance, a line describing it (else ``""``)."""
    if want.shape != have.shape:
        return float("inf"), f"{name} at {where}: shape {list(have.shape)} != torch {list(want.shape)}"
    diff = np.abs(have.astype(np.float64) - want.astype(np.float64))
    nan_mismatch = bool(np.any(np.isnan(want) != np.isnan(have)))
    diff = np.where(np.isnan(diff), 0.0, diff)
    max_diff = float(diff.max()) if diff.size else 0.0
    bad = diff > atol + rtol * np.abs(np.nan_to_num(want.astype(np.float64)))
    if not nan_mismatch and not bool(bad.any()):
        return max_diff, ""
    return max_diff, (
        f"{name} at {where}: max |diff| = {max_diff:.3g} exceeds tolerance atol={atol:g} + "
        f"rtol={rtol:g}*|torch| ({int(bad.sum())} of {bad.size} elements"
        + (", NaN mismatch" if nan_mismatch else "")
        + ")"
    )


def check_parity(
    model: nn.Module,
    onnx_path: str | Path,
    feeds: Sequence[Mapping[str, np.ndarray]],
    *,
    output_names: Sequence[str],
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    model_name: str = "",
) -> dict[str, float]:
    """Compare torch and ONNX Runtime outputs on several input sets.

    An output differs when ``|onnx - torch| > atol + rtol * |torch|`` anywhere (or the shapes differ, or one
    side holds NaN where the other does not).

    Args:
        model: the torch module (put in eval mode here); called with the feeds' values in the ONNX input order.
        onnx_path: the exported file.
        feeds: input sets, each ``{input_name: array}`` (e.g. two batch sizes).
        output_names: the names of the torch outputs, in order.
        atol: absolute tolerance.
        rtol: relative tolerance.
        model_name: for messages.

    Returns:
        ``{output_name: max abs difference over all feeds}``.

    Raises:
        ExportError: listing EVERY differing output (and input set) with its max abs difference and tolerance.
    """
    from trimodal.runtime.sessions import ort_session

    label = model_name or Path(onnx_path).stem
    session = ort_session(Path(onnx_path), threads=1)
    input_names = [value.name for value in session.get_inputs()]
    model.eval()
    worst: dict[str, float] = dict.fromkeys(output_names, 0.0)
    failures: list[str] = []
    for feed in feeds:
        missing = [name for name in input_names if name not in feed]
        if missing:
            raise ExportError(f"{label}: parity feed lacks input(s) {missing}")
        where = ", ".join(f"{name}{list(feed[name].shape)}" for name in input_names)
        reference = _torch_outputs(model, feed, input_names, output_names, label)
        got = session.run(list(output_names), {name: feed[name] for name in input_names})
        for name, want, have in zip(output_names, reference, got, strict=True):
            max_diff, failure = _compare(name, want, have, where, atol, rtol)
            worst[name] = max(worst[name], max_diff)
            failures += [failure] if failure else []
    if failures:
        raise ExportError(f"{label}: ONNX Runtime output differs from torch:\n  " + "\n  ".join(failures))
    return worst


# ---------------------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------------------


def export_onnx(
    model: nn.Module,
    example: Mapping[str, np.ndarray],
    path: str | Path,
    io: ModelIO,
    *,
    dynamic: Mapping[str, Sequence[int]] | None = None,
) -> Path:
    """Export ``model`` to ONNX with the contract's tensor names and dynamic axes.

    Args:
        model: the torch module; its forward takes the inputs in ``io.inputs`` order.
        example: example inputs ``{name: array}`` (use a batch > 1 and, for dynamic dims, sizes > 1).
        path: destination ``.onnx`` (a single file, no external data).
        io: the contract tensors of this model.
        dynamic: axes to export as dynamic per input name (default: axis 0 of every input, plus every axis
            whose contract dim is ``-1``).

    Returns:
        The written path.

    Raises:
        ExportError: if torch fails to export.
    """
    import torch
    from torch.export import Dim

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if dynamic is None:
        dynamic = {tensor.name: [0, *(i + 1 for i, d in enumerate(tensor.dims) if d == -1)] for tensor in io.inputs}
    args = tuple(torch.from_numpy(np.ascontiguousarray(example[tensor.name])) for tensor in io.inputs)
    shapes = tuple({axis: Dim.AUTO for axis in dynamic.get(tensor.name, ())} for tensor in io.inputs)
    model.eval()
    try:
        program = torch.onnx.export(
            model,
            args,
            None,
            dynamo=True,
            input_names=[tensor.name for tensor in io.inputs],
            output_names=[tensor.name for tensor in io.outputs],
            dynamic_shapes=shapes,
            external_data=False,
            verbose=False,
        )
        program.save(str(path), external_data=False)
    except Exception as exc:
        raise ExportError(f"{path.stem}: torch.onnx.export failed: {type(exc).__name__}: {exc}") from exc
    return path


def random_feeds(
    io: ModelIO,
    batch: int,
    *,
    seq_len: int = 8,
    rng: np.random.Generator,
    vocab_size: int = 30522,
) -> dict[str, np.ndarray]:
    """Random inputs matching a model's contract (masks in {0, 1}, token ids with padding).

    Args:
        io: the model's tensors.
        batch: batch size.
        seq_len: size of every ``-1`` dim.
        rng: random generator.
        vocab_size: upper bound of token ids.

    Returns:
        ``{input_name: array}``.
    """
    feeds: dict[str, np.ndarray] = {}
    lengths = rng.integers(1, seq_len + 1, size=batch)
    lengths[0] = seq_len
    if batch > 2:
        lengths[-1] = 0  # an absent (all-padding) text
    for tensor in io.inputs:
        shape = (batch, *(seq_len if d == -1 else d for d in tensor.dims))
        if tensor.name.endswith("_MASK") and tensor.dims == (1,):
            value = (rng.random(shape) < 0.7).astype(np.float32)
            value[0] = 1.0
        elif tensor.name == "ATTENTION_MASK":
            value = (np.arange(seq_len)[None, :] < lengths[:, None]).astype(np.int64)
        elif tensor.name == "INPUT_IDS":
            value = rng.integers(1000, vocab_size, size=shape, dtype=np.int64)
            value[:, 0] = 101  # [CLS]
            value[np.arange(seq_len)[None, :] >= lengths[:, None]] = 0
        else:
            value = rng.standard_normal(shape).astype(NUMPY_DTYPES[tensor.dtype])
        feeds[tensor.name] = value
    return feeds


def _load_weights(model: nn.Module, name: str, path: Path) -> nn.Module:
    """Load the ``state_dict`` of checkpoint ``path`` into ``model`` (eval mode)."""
    import torch

    if not path.is_file():
        raise ExportError(f"checkpoint {path} not found: run training first (trimodal.training.train.train_all)")
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(checkpoint["state_dict"])
    except RuntimeError as exc:
        raise ExportError(f"{name}: checkpoint {path} does not fit the spec: {exc}") from None
    return model.eval()


def load_models(spec: PipelineSpec, build_dir: Path) -> dict[str, nn.Module]:
    """The four served torch models, in eval mode: trained encoders and served fusion head from the checkpoints.

    Args:
        spec: the pipeline spec (the served head is ``spec.fusion.strategy``'s, trained multi-task or not as
            ``spec.multitask.auxiliary_losses`` says).
        build_dir: the build folder holding ``checkpoints/``.

    Returns:
        ``{model name: module}`` for every model of :data:`trimodal.contract.ENCODERS`.

    Raises:
        ExportError: if a checkpoint is missing or does not fit the spec.
    """
    from trimodal.training.heads import head_name
    from trimodal.training.models import TRAINED_MODALITIES, build_encoder, build_fusion, encoder_name

    build = BuildLayout(Path(build_dir))
    models: dict[str, nn.Module] = {}
    for name in ENCODERS:
        if name == FUSION:
            checkpoint = build.checkpoint(head_name(spec.fusion.strategy, spec.multitask.auxiliary_losses))
            models[name] = _load_weights(build_fusion(spec), name, checkpoint)
        elif name in {encoder_name(modality) for modality in TRAINED_MODALITIES}:
            models[name] = _load_weights(build_encoder(name, spec), name, build.checkpoint(name))
        else:  # pretrained and frozen (the text encoder)
            models[name] = build_encoder(name, spec).eval()
    return models


def export_and_check(
    name: str,
    model: nn.Module,
    io: ModelIO,
    path: Path,
    *,
    seq_lens: Sequence[int] = (8,),
    batches: Sequence[int] = PARITY_BATCHES,
    atol: float = DEFAULT_ATOL,
    rtol: float = DEFAULT_RTOL,
    seed: int = 0,
) -> dict[str, Any]:
    """Export one model, check its dims against the contract and its parity with torch.

    Args:
        name: model name (messages).
        model: the torch module.
        io: its contract tensors.
        path: destination ``.onnx``.
        seq_lens: sizes of the dynamic (``-1``) dims to check parity at (only used if the model has one).
        batches: batch sizes to check parity at.
        atol: absolute tolerance.
        rtol: relative tolerance.
        seed: random seed of the parity inputs.

    Returns:
        ``{"path", "max_abs_diff", "seconds"}``.

    Raises:
        ExportError: on export failure, contract mismatch or parity failure.
    """
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    has_seq = any(-1 in tensor.dims for tensor in io.inputs)
    lengths = list(seq_lens) if has_seq else [1]
    example = random_feeds(io, 3, seq_len=max(lengths) if has_seq else 1, rng=rng)
    export_onnx(model, example, path, io)
    check_dims(path, io, model_name=name)
    feeds = [random_feeds(io, batch, seq_len=length, rng=rng) for batch in batches for length in lengths]
    diffs = check_parity(
        model, path, feeds, output_names=[t.name for t in io.outputs], atol=atol, rtol=rtol, model_name=name
    )
    seconds = time.perf_counter() - started
    size_mb = path.stat().st_size / 1e6
    checked = f"batch {list(batches)}" + (f" x seq {lengths}" if has_seq else "")
    LOGGER.info(
        "%s -> %s (%.1f MB): dims ok, parity ok at %s, max |diff| %s, %.1fs",
        name,
        path,
        size_mb,
        checked,
        ", ".join(f"{k}={v:.2g}" for k, v in diffs.items()),
        seconds,
    )
    return {"path": path, "max_abs_diff": diffs, "seconds": round(seconds, 1)}


def export_all(spec: PipelineSpec, build_dir: Path) -> dict[str, Path]:
    """Export the image, text and audio encoders and the served fusion head to ``build_dir/onnx``.

    Reads ``build_dir/checkpoints`` (written by :func:`trimodal.training.train.train_all`); the text encoder is the
    pretrained all-MiniLM-L6-v2. Every file is checked against :func:`trimodal.contract.model_io` and against
    torch with ONNX Runtime at batch sizes 1 and 5 (and sequence lengths 8 and ``max_tokens`` for the text
    encoder).

    Args:
        spec: the pipeline spec.
        build_dir: build folder.

    Returns:
        ``{model_name: onnx path}`` for the four models.

    Raises:
        ExportError: missing checkpoint, export failure, contract mismatch or parity failure.
    """
    import torch

    from trimodal.training.loop import TORCH_THREADS

    torch.set_num_threads(TORCH_THREADS)
    build = BuildLayout(Path(build_dir))
    ios = model_io(spec)
    models = load_models(spec, build.root)
    lengths = sorted({*TEXT_PARITY_LENGTHS, spec.modalities.text.max_tokens})
    paths: dict[str, Path] = {}
    for name in ENCODERS:
        result = export_and_check(
            name, models[name], ios[name], build.onnx_file(name), seq_lens=lengths, seed=spec.seed
        )
        paths[name] = result["path"]
    return paths


__all__ = [
    "check_dims",
    "check_parity",
    "export_all",
    "export_and_check",
    "export_onnx",
    "load_models",
    "random_feeds",
]
