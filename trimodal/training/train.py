"""Training: image and audio encoders, frozen text embeddings, one fusion head per strategy.

Pipeline of :func:`train_all`:

1. generate the dataset if missing, load the train/val/test splits;
2. preprocess every split once with :mod:`trimodal.runtime.preprocess` (the exact server-side code) and cache the
   arrays under ``build_dir/features``;
3. pretrain the image and the audio encoder, each with a temporary linear head (cross-entropy, early stop on
   validation accuracy);
4. embed every text once with the frozen text encoder (batched, cached);
5. train one :class:`~trimodal.training.models.fusion.FusionClassifier` per strategy on the encoders' features, with
   modality dropout (each modality masked with probability ``spec.fusion.modality_dropout``, never all three);
6. evaluate every non-empty modality subset on the test split exactly as the server sees it (an absent
   modality's encoder runs on what its preprocessor emits for an empty element, and its mask is 0) and
   write ``metrics.json`` / ``metrics.md``.

Everything is seeded and runs on the CPU.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from trimodal.errors import DataError
from trimodal.spec import MODALITIES, PipelineSpec

if TYPE_CHECKING:
    import torch
    from torch import nn

LOGGER = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
FEATURES_DIR = "features"
CHECKPOINTS_DIR = "checkpoints"
TORCH_THREADS = int(os.environ.get("TRIMODAL_TORCH_THREADS", "1"))
"""torch CPU threads for training. 1 by default: on a shared 2-core machine a second thread made the small
training steps 3-10x SLOWER (OpenMP spinning against other processes); set TRIMODAL_TORCH_THREADS on an idle,
bigger machine."""
PREPROCESS_CHUNK = 256
TEXT_BATCH = 128
ENCODER_PATIENCE = 3
FUSION_PATIENCE = 8
WEIGHT_DECAY = 1e-4

# Keys of a cached split: the preprocessed tensors exactly as the server's preprocessors emit them.
ARRAY_KEYS: tuple[str, ...] = (
    "image",
    "image_mask",
    "input_ids",
    "attention_mask",
    "text_mask",
    "audio",
    "audio_mask",
    "labels",
)


def modality_subsets() -> list[tuple[str, ...]]:
    """Every non-empty subset of the three modalities, singles first, then pairs, then all three.

    Returns:
        Seven tuples of modality names, in :data:`~trimodal.spec.MODALITIES` order.
    """
    return [combo for size in (1, 2, 3) for combo in itertools.combinations(MODALITIES, size)]


def subset_name(subset: Sequence[str]) -> str:
    """Row name of a modality subset, e.g. ``image+audio``."""
    return "+".join(subset)


# ---------------------------------------------------------------------------------------------------------
# Data and caching
# ---------------------------------------------------------------------------------------------------------


def _fingerprint(spec: PipelineSpec, *extra: str) -> str:
    """Hash of everything the cached arrays depend on (dataset, modalities, seed)."""
    payload = json.dumps(
        {
            "seed": spec.seed,
            "dataset": spec.dataset.model_dump(),
            "modalities": spec.modalities.model_dump(),
            "classes": spec.classes,
            "extra": list(extra),
        },
        sort_keys=True,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _prune_cache(cache_dir: Path, pattern: str, keep: set[Path]) -> None:
    """Delete stale cache files (other fingerprints) matching ``pattern``."""
    for path in cache_dir.glob(pattern):
        if path not in keep:
            LOGGER.info("removing stale cache %s", path)
            path.unlink(missing_ok=True)


def _preprocess_split(split: Any, spec: PipelineSpec, name: str, progress: bool) -> dict[str, np.ndarray]:
    """Run the server-side preprocessing over one split, in chunks."""
    from tqdm.auto import tqdm

    from trimodal.layout import tokenizer_source
    from trimodal.runtime.preprocess import TextPreprocessor, preprocess_audio, preprocess_images

    text_pre = TextPreprocessor(spec.modalities.text, tokenizer_source())
    count = len(split.labels)
    parts: dict[str, list[np.ndarray]] = {key: [] for key in ARRAY_KEYS if key != "labels"}
    for start in tqdm(range(0, count, PREPROCESS_CHUNK), desc=f"preprocess {name}", disable=not progress):
        stop = min(start + PREPROCESS_CHUNK, count)
        image, image_mask = preprocess_images(split.images[start:stop], spec.modalities.image)
        ids, attention, text_mask = text_pre(split.texts[start:stop])
        audio, audio_mask = preprocess_audio(split.audio[start:stop], spec.modalities.audio)
        for key, value in (
            ("image", image),
            ("image_mask", image_mask),
            ("input_ids", ids),
            ("attention_mask", attention),
            ("text_mask", text_mask),
            ("audio", audio),
            ("audio_mask", audio_mask),
        ):
            parts[key].append(np.asarray(value))
    arrays = {key: np.concatenate(values) for key, values in parts.items()}
    arrays["labels"] = np.asarray(split.labels, dtype=np.int64)
    arrays["corrupted"] = np.asarray(getattr(split, "corrupted", np.zeros((count, 3), dtype=bool)), dtype=bool)
    return arrays


def load_features(
    spec: PipelineSpec, build_dir: Path, *, data_dir: Path | None = None, progress: bool = True
) -> dict[str, dict[str, np.ndarray]]:
    """Preprocessed arrays of every split, from the cache or computed once (generating the dataset if missing).

    Args:
        spec: the pipeline spec.
        build_dir: build folder; arrays are cached in ``build_dir/features``.
        data_dir: dataset root (the folder given to ``generate_dataset``); defaults to ``build_dir``.
        progress: show progress bars.

    Returns:
        ``{split: {key: array}}`` with the keys of :data:`ARRAY_KEYS` plus ``corrupted`` (N, 3).

    Raises:
        DataError: if the dataset cannot be generated or read.
    """
    cache_dir = build_dir / FEATURES_DIR
    cache_dir.mkdir(parents=True, exist_ok=True)
    from trimodal.training.data.dataset import dataset_hash

    key = _fingerprint(spec, "preprocess-v1", dataset_hash(spec))
    paths = {split: cache_dir / f"{split}-{key}.npz" for split in SPLITS}
    if all(path.is_file() for path in paths.values()):
        LOGGER.info("using cached preprocessed arrays in %s", cache_dir)
        return {split: dict(np.load(path)) for split, path in paths.items()}

    from trimodal.training.data.dataset import generate_dataset, load_split

    root = Path(data_dir) if data_dir is not None else build_dir
    generate_dataset(spec, root, progress=progress)
    result: dict[str, dict[str, np.ndarray]] = {}
    for split in SPLITS:
        data = load_split(root, split)
        if len(data.labels) == 0:
            raise DataError(f"dataset split {split!r} in {root} is empty")
        arrays = _preprocess_split(data, spec, split, progress)
        tmp = paths[split].with_suffix(".tmp.npz")
        np.savez(tmp, **arrays)
        tmp.replace(paths[split])
        result[split] = arrays
    for split in SPLITS:
        _prune_cache(cache_dir, f"{split}-*.npz", {paths[split]})
    return result


# ---------------------------------------------------------------------------------------------------------
# Torch helpers
# ---------------------------------------------------------------------------------------------------------


def _setup_torch(seed: int) -> None:
    import torch

    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def _predict(fn: Callable[..., torch.Tensor], arrays: Sequence[np.ndarray], batch_size: int = 512) -> np.ndarray:
    """Run ``fn`` over aligned arrays in batches under ``no_grad``; concatenate the results."""
    import torch

    outputs = []
    count = len(arrays[0])
    with torch.no_grad():
        for start in range(0, count, batch_size):
            batch = [torch.from_numpy(np.ascontiguousarray(a[start : start + batch_size])) for a in arrays]
            outputs.append(fn(*batch).numpy())
    return np.concatenate(outputs)


def _accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    return float((logits.argmax(axis=1) == labels).mean()) if len(labels) else float("nan")


def train_encoder(
    encoder: nn.Module,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    spec: PipelineSpec,
    *,
    name: str,
    progress: bool = True,
) -> dict[str, Any]:
    """Pretrain one encoder with a temporary linear head (cross-entropy, early stop on validation accuracy).

    The encoder is left in eval mode with the weights of the best validation epoch.

    Args:
        encoder: the module, ``(B, ...) -> (B, feature_dim)``; must have a ``feature_dim`` attribute.
        train: ``(inputs, labels)`` of the present training samples.
        val: ``(inputs, labels)`` of the present validation samples.
        spec: the pipeline spec (``training`` hyper-parameters, ``seed``, classes).
        name: for logs and progress bars.
        progress: show a progress bar.

    Returns:
        ``{"best_epoch", "epochs", "val_accuracy", "train_accuracy", "seconds"}``.
    """
    import torch
    from torch import nn
    from tqdm.auto import tqdm

    started = time.perf_counter()
    cfg = spec.training
    head = nn.Linear(encoder.feature_dim, spec.num_classes)
    model = nn.Sequential(encoder, head)
    params = list(model.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=WEIGHT_DECAY)
    x_train, y_train = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    steps_per_epoch = max(1, -(-len(y_train) // cfg.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.learning_rate, total_steps=cfg.encoder_epochs * steps_per_epoch, pct_start=0.2
    )
    generator = torch.Generator().manual_seed(spec.seed)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=0.05)
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
    history = []
    bar = tqdm(range(cfg.encoder_epochs), desc=f"train {name}", disable=not progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(len(y_train), generator=generator)
        total = 0.0
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            loss = loss_fn(model(x_train[idx]), y_train[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss) * len(idx)
        model.eval()
        val_acc = _accuracy(_predict(model, [val[0]]), val[1])
        history.append({"epoch": epoch + 1, "loss": total / len(order), "val_accuracy": val_acc})
        bar.set_postfix(loss=f"{total / len(order):.3f}", val=f"{val_acc:.3f}")
        if val_acc > best[0]:
            best = (val_acc, epoch + 1, copy.deepcopy(model.state_dict()))
        elif epoch + 1 - best[1] >= ENCODER_PATIENCE:
            LOGGER.info("%s: early stop after epoch %d (best %d)", name, epoch + 1, best[1])
            break
    model.load_state_dict(best[2])
    model.eval()
    train_acc = _accuracy(_predict(model, [train[0]]), train[1])
    result = {
        "best_epoch": best[1],
        "epochs": len(history),
        "val_accuracy": best[0],
        "train_accuracy": train_acc,
        "history": history,
        "seconds": round(time.perf_counter() - started, 1),
    }
    LOGGER.info(
        "%s: val accuracy %.4f (epoch %d), train accuracy %.4f, %.1fs",
        name,
        best[0],
        best[1],
        train_acc,
        result["seconds"],
    )
    return result


def embed_texts(
    input_ids: np.ndarray, attention_mask: np.ndarray, encoder: nn.Module, *, progress: bool = True, desc: str = ""
) -> np.ndarray:
    """Frozen text embeddings, batched; each batch is cut to its longest sequence (same result, less work).

    Args:
        input_ids: int64 (N, T).
        attention_mask: int64 (N, T).
        encoder: the :class:`~trimodal.training.models.text.TextEncoder`.
        progress: show a progress bar.
        desc: progress bar label.

    Returns:
        float32 (N, feature_dim).
    """
    import torch
    from tqdm.auto import tqdm

    lengths = attention_mask.sum(axis=1)
    order = np.argsort(-lengths, kind="stable")
    out = np.zeros((len(order), encoder.feature_dim), dtype=np.float32)
    encoder.eval()
    with torch.no_grad():
        for start in tqdm(range(0, len(order), TEXT_BATCH), desc=f"embed text {desc}", disable=not progress):
            idx = order[start : start + TEXT_BATCH]
            width = max(1, int(lengths[idx].max()))
            ids = torch.from_numpy(np.ascontiguousarray(input_ids[idx, :width]))
            att = torch.from_numpy(np.ascontiguousarray(attention_mask[idx, :width]))
            out[idx] = encoder(ids, att).numpy()
    return out


def modality_dropout(present: torch.Tensor, prob: float, generator: torch.Generator) -> torch.Tensor:
    """Randomly drop modalities, never all of a sample's present ones.

    Each present modality is dropped independently with probability ``prob``; a sample that would lose all
    of them keeps one of its present modalities, chosen uniformly.

    Args:
        present: float (B, 3), 1 where the modality is present.
        prob: drop probability per modality.
        generator: torch random generator (determinism).

    Returns:
        float (B, 3) masks, a subset of ``present``, non-empty wherever ``present`` is.
    """
    import torch

    keep = (torch.rand(present.shape, generator=generator) >= prob) & (present > 0.5)
    empty = (keep.sum(dim=1) == 0) & ((present > 0.5).sum(dim=1) > 0)
    if bool(empty.any()):
        noise = torch.rand(present.shape, generator=generator) * (present > 0.5)
        rescue = torch.zeros_like(keep)
        rescue[torch.arange(len(present)), noise.argmax(dim=1)] = True
        keep = keep | (rescue & empty.unsqueeze(1))
    return keep.to(present.dtype)


def train_fusion(
    strategy: str,
    train: dict[str, np.ndarray],
    val: dict[str, np.ndarray],
    spec: PipelineSpec,
    *,
    progress: bool = True,
) -> tuple[nn.Module, dict[str, Any]]:
    """Train one fusion head on encoder features with modality dropout.

    Early stopping selects the epoch with the best mean validation accuracy over the seven modality subsets.

    Args:
        strategy: fusion strategy.
        train: ``{"image", "text", "audio"}`` features, ``{"image_mask", ...}`` (N, 1) masks and ``labels``.
        val: same for the validation split, with absent-modality features already as the server sees them.
        spec: the pipeline spec.
        progress: show a progress bar.

    Returns:
        The trained head (eval mode) and ``{"best_epoch", "epochs", "val_mean_subset_accuracy", "seconds"}``.
    """
    import torch
    from torch import nn
    from tqdm.auto import tqdm

    from trimodal.training.models import build_fusion

    started = time.perf_counter()
    torch.manual_seed(spec.seed)
    cfg = spec.training
    model = build_fusion(spec, strategy)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=WEIGHT_DECAY)
    feats = [torch.from_numpy(train[m]) for m in MODALITIES]
    present = torch.from_numpy(np.concatenate([train[f"{m}_mask"] for m in MODALITIES], axis=1))
    labels = torch.from_numpy(train["labels"])
    steps_per_epoch = max(1, -(-len(labels) // cfg.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.learning_rate, total_steps=cfg.fusion_epochs * steps_per_epoch, pct_start=0.1
    )
    generator = torch.Generator().manual_seed(spec.seed + 1)
    loss_fn = nn.CrossEntropyLoss()
    best = (-1.0, 0, copy.deepcopy(model.state_dict()))
    epochs = 0
    bar = tqdm(range(cfg.fusion_epochs), desc=f"train fusion {strategy}", disable=not progress)
    for epoch in bar:
        epochs = epoch + 1
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), cfg.batch_size):
            idx = order[start : start + cfg.batch_size]
            masks = modality_dropout(present[idx], spec.fusion.modality_dropout, generator)
            logits = model.logits(*(f[idx] for f in feats), masks[:, 0:1], masks[:, 1:2], masks[:, 2:3])
            loss = loss_fn(logits, labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
        model.eval()
        scores = evaluate_subsets(model, val)
        mean = float(np.mean(list(scores.values())))
        bar.set_postfix(val_mean=f"{mean:.3f}", val_all=f"{scores['image+text+audio']:.3f}")
        if mean > best[0]:
            best = (mean, epochs, copy.deepcopy(model.state_dict()))
        elif epochs - best[1] >= FUSION_PATIENCE:
            break
    model.load_state_dict(best[2])
    model.eval()
    info = {
        "best_epoch": best[1],
        "epochs": epochs,
        "val_mean_subset_accuracy": best[0],
        "seconds": round(time.perf_counter() - started, 1),
    }
    LOGGER.info("fusion %s: val mean subset accuracy %.4f (epoch %d)", strategy, best[0], best[1])
    return model, info


def evaluate_subsets(model: nn.Module, data: dict[str, np.ndarray]) -> dict[str, float]:
    """Accuracy of a fusion head for every non-empty modality subset.

    For a subset, the modalities outside it get mask 0 and the features their encoder emits for the
    preprocessor's output of an empty element, which ``data`` must hold as ``absent_<modality>`` (1, D)
    arrays; present modalities keep their real masks.

    Args:
        model: a :class:`~trimodal.training.models.fusion.FusionClassifier` in eval mode.
        data: features, masks (N, 1), ``labels`` and ``absent_<modality>`` rows.

    Returns:
        ``{subset_name: accuracy}`` for the seven subsets.
    """
    results = {}
    for subset in modality_subsets():
        feats, masks = [], []
        for modality in MODALITIES:
            if modality in subset:
                feats.append(data[modality])
                masks.append(data[f"{modality}_mask"])
            else:
                count = len(data["labels"])
                feats.append(np.repeat(data[f"absent_{modality}"], count, axis=0))
                masks.append(np.zeros((count, 1), dtype=np.float32))
        probs = _predict(lambda *t: model(*t)[0], [*feats, *masks])
        results[subset_name(subset)] = _accuracy(probs, data["labels"])
    return results


# ---------------------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------------------


def check_targets(test: dict[str, dict[str, float]], strategy: str) -> dict[str, bool]:
    """The acceptance targets for one strategy's test accuracies.

    Args:
        test: ``{strategy: {subset_name: accuracy}}``.
        strategy: the strategy to check.

    Returns:
        ``{target description: met}``.
    """
    acc = test[strategy]
    singles = {m: acc[m] for m in MODALITIES}
    best_single = max(singles.values())
    full = acc[subset_name(MODALITIES)]
    targets = {
        "all three modalities >= 97%": full >= 0.97,
        "every single modality alone <= 85%": all(v <= 0.85 for v in singles.values()),
        "all three beat the best single modality by >= 10 points": full - best_single >= 0.10,
    }
    for pair in itertools.combinations(MODALITIES, 2):
        targets[f"{subset_name(pair)} beats its best member"] = acc[subset_name(pair)] > max(acc[m] for m in pair)
    return targets


def metrics_markdown(metrics: dict[str, Any]) -> str:
    """Render the test accuracy table (subset rows x strategy columns) and the targets of the served strategy.

    Args:
        metrics: the dictionary written to ``metrics.json``.

    Returns:
        Markdown text.
    """
    test = metrics["test_accuracy"]
    served = metrics["served_strategy"]
    strategies = list(test)
    header = [f"{s} (served)" if s == served else s for s in strategies]
    lines = [
        "# Test accuracy per modality subset",
        "",
        f"Served fusion strategy: **{served}** (`fusion.strategy` in pipeline.yaml). Absent modalities are sent",
        "exactly as the server sees them (encoder run on the preprocessed empty element, mask 0). "
        f"Test samples: {metrics['samples']['test']}.",
        "",
        "| modalities | " + " | ".join(header) + " |",
        "|---|" + "---:|" * len(strategies),
    ]
    for subset in modality_subsets():
        name = subset_name(subset)
        lines.append(f"| {name} | " + " | ".join(f"{100 * test[s][name]:.1f}%" for s in strategies) + " |")
    lines += ["", f"## Targets ({served})", ""]
    for target, met in metrics["targets"][served].items():
        lines.append(f"- [{'x' if met else ' '}] {target}")
    enc = metrics["encoders"]
    lines += [
        "",
        "## Encoders (temporary linear head, validation accuracy)",
        "",
        f"- image: {100 * enc['image']['val_accuracy']:.1f}% (train {100 * enc['image']['train_accuracy']:.1f}%)",
        f"- audio: {100 * enc['audio']['val_accuracy']:.1f}% (train {100 * enc['audio']['train_accuracy']:.1f}%)",
        "",
        f"Training wall time: {metrics['seconds']['total']:.0f} s with {metrics['torch_threads']} torch CPU thread(s).",
        "",
    ]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------------------


def _cached_text_embeddings(
    spec: PipelineSpec, build_dir: Path, arrays: dict[str, dict[str, np.ndarray]], progress: bool
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """Text embeddings of every split plus the embedding of an absent (empty) text, cached."""
    from trimodal.training.data.dataset import dataset_hash

    key = _fingerprint(spec, "preprocess-v1", dataset_hash(spec), "text-v2")
    path = build_dir / FEATURES_DIR / f"text-embeddings-{key}.npz"
    if path.is_file():
        cached = dict(np.load(path))
        return {split: cached[split] for split in SPLITS}, cached["absent"]
    from trimodal.training.models import build_encoder

    encoder = build_encoder("text_encoder", spec)
    result = {
        split: embed_texts(
            arrays[split]["input_ids"], arrays[split]["attention_mask"], encoder, progress=progress, desc=split
        )
        for split in SPLITS
    }
    # What the server's preprocessor emits for an absent (empty) text.
    from trimodal.layout import tokenizer_source
    from trimodal.runtime.preprocess import TextPreprocessor

    absent_ids, absent_attention, _ = TextPreprocessor(spec.modalities.text, tokenizer_source())([b""])
    absent = _predict(encoder, [absent_ids, absent_attention])
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, absent=absent, **result)
    tmp.replace(path)
    _prune_cache(path.parent, "text-embeddings-*.npz", {path})
    return result, absent


def train_all(
    spec: PipelineSpec, build_dir: Path, *, progress: bool = True, data_dir: Path | None = None
) -> dict[str, Any]:
    """Train everything and write checkpoints and metrics.

    Writes ``build_dir/checkpoints/{image_encoder,audio_encoder,fusion_<strategy>}.pt`` (each a dict with
    ``state_dict`` and ``config``), ``build_dir/metrics.json`` and ``build_dir/metrics.md``.

    Args:
        spec: the pipeline spec.
        build_dir: build folder.
        progress: show tqdm progress bars.
        data_dir: dataset root (the folder given to ``generate_dataset``, which keeps the data in its
            ``data/`` subfolder); defaults to ``build_dir``. Generated there if missing.

    Returns:
        The metrics dictionary (also written to ``metrics.json``).

    Raises:
        DataError: if the dataset cannot be generated or read.
    """
    import torch

    from trimodal.training.models import build_encoder

    started = time.perf_counter()
    build_dir = Path(build_dir)
    _setup_torch(spec.seed)
    seconds: dict[str, float] = {}

    arrays = load_features(spec, build_dir, data_dir=data_dir, progress=progress)
    seconds["data"] = round(time.perf_counter() - started, 1)

    ckpt_dir = build_dir / CHECKPOINTS_DIR
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    features: dict[str, dict[str, np.ndarray]] = {split: {} for split in SPLITS}
    encoder_info: dict[str, Any] = {}
    for modality in ("image", "audio"):
        mark = time.perf_counter()
        torch.manual_seed(spec.seed)
        encoder = build_encoder(f"{modality}_encoder", spec)

        def present(split: str, modality: str = modality) -> tuple[np.ndarray, np.ndarray]:
            keep = arrays[split][f"{modality}_mask"][:, 0] > 0.5
            return arrays[split][modality][keep], arrays[split]["labels"][keep]

        info = train_encoder(
            encoder, present("train"), present("val"), spec, name=f"{modality}_encoder", progress=progress
        )
        encoder.eval()
        for split in SPLITS:
            features[split][modality] = _predict(encoder, [arrays[split][modality]])
            features[split][f"absent_{modality}"] = _predict(encoder, [_absent_input(modality, spec)])
        encoder_info[modality] = info
        torch.save(
            {"state_dict": encoder.state_dict(), "config": _encoder_config(modality, spec), "metrics": info},
            ckpt_dir / f"{modality}_encoder.pt",
        )
        seconds[f"{modality}_encoder"] = round(time.perf_counter() - mark, 1)

    mark = time.perf_counter()
    text, absent_text = _cached_text_embeddings(spec, build_dir, arrays, progress)
    for split in SPLITS:
        features[split]["text"] = text[split]
        features[split]["absent_text"] = absent_text
    seconds["text_embeddings"] = round(time.perf_counter() - mark, 1)

    for split in SPLITS:
        for modality in MODALITIES:
            features[split][f"{modality}_mask"] = arrays[split][f"{modality}_mask"].astype(np.float32)
        features[split]["labels"] = arrays[split]["labels"]

    test_acc: dict[str, dict[str, float]] = {}
    val_acc: dict[str, dict[str, float]] = {}
    fusion_info: dict[str, Any] = {}
    for strategy in spec.fusion.train_strategies:
        mark = time.perf_counter()
        model, info = train_fusion(strategy, features["train"], features["val"], spec, progress=progress)
        val_acc[strategy] = evaluate_subsets(model, features["val"])
        test_acc[strategy] = evaluate_subsets(model, features["test"])
        fusion_info[strategy] = info
        torch.save(
            {
                "state_dict": model.state_dict(),
                "config": {
                    "strategy": strategy,
                    "feature_dims": list(model.feature_dims),
                    "hidden_dim": model.hidden_dim,
                    "num_classes": model.num_classes,
                },
                "metrics": {"val": val_acc[strategy], "test": test_acc[strategy]},
            },
            ckpt_dir / f"fusion_{strategy}.pt",
        )
        seconds[f"fusion_{strategy}"] = round(time.perf_counter() - mark, 1)
    seconds["total"] = round(time.perf_counter() - started, 1)

    metrics: dict[str, Any] = {
        "served_strategy": spec.fusion.strategy,
        "test_accuracy": test_acc,
        "val_accuracy": val_acc,
        "targets": {strategy: check_targets(test_acc, strategy) for strategy in test_acc},
        "encoders": encoder_info,
        "fusion": fusion_info,
        "samples": {split: len(arrays[split]["labels"]) for split in SPLITS},
        "seconds": seconds,
        "seed": spec.seed,
        "torch_threads": TORCH_THREADS,
    }
    (build_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    (build_dir / "metrics.md").write_text(metrics_markdown(metrics), encoding="utf-8")
    served = metrics["targets"][spec.fusion.strategy]
    missed = [target for target, met in served.items() if not met]
    LOGGER.info("training done in %.0f s; served strategy %s", seconds["total"], spec.fusion.strategy)
    if missed:
        LOGGER.warning("acceptance targets missed by %s: %s", spec.fusion.strategy, "; ".join(missed))
    return metrics


def _absent_input(modality: str, spec: PipelineSpec) -> np.ndarray:
    """The tensor the server's preprocessor emits for an empty (absent) image or audio element."""
    from trimodal.runtime.preprocess import preprocess_audio, preprocess_images

    if modality == "image":
        return np.asarray(preprocess_images([b""], spec.modalities.image)[0], dtype=np.float32)
    return np.asarray(preprocess_audio([b""], spec.modalities.audio)[0], dtype=np.float32)


def _encoder_config(modality: str, spec: PipelineSpec) -> dict[str, Any]:
    if modality == "image":
        return {"size": spec.modalities.image.size, "feature_dim": spec.modalities.image.feature_dim}
    audio = spec.modalities.audio
    return {"n_mels": audio.n_mels, "n_frames": audio.n_frames, "feature_dim": audio.feature_dim}
