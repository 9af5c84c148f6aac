"""The torch training loop shared by the encoders and the fusion heads: seeding, batched inference, one fit loop.

:func:`fit` is the one epoch loop: AdamW with a one-cycle learning rate, a seeded shuffle every epoch, a
validation score after every epoch and early stopping that keeps the weights of the best epoch. Everything is
seeded and runs on the CPU.
"""

from __future__ import annotations

import copy
import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import torch
    from torch import nn

LOGGER = logging.getLogger(__name__)

TORCH_THREADS = int(os.environ.get("TRIMODAL_TORCH_THREADS", "1"))
"""torch CPU threads for training. 1 by default: on a shared 2-core machine a second thread made the small
training steps 3-10x SLOWER (OpenMP spinning against other processes); set TRIMODAL_TORCH_THREADS on an idle,
bigger machine."""
WEIGHT_DECAY = 1e-4
PREDICT_BATCH = 512


@dataclass(frozen=True)
class Schedule:
    """How one model is fitted.

    Attributes:
        epochs: the most epochs to run.
        batch_size: samples per optimizer step.
        learning_rate: the one-cycle schedule's peak learning rate.
        pct_start: share of the steps spent warming up.
        patience: epochs without a better validation score before stopping.
    """

    epochs: int
    batch_size: int
    learning_rate: float
    pct_start: float
    patience: int


@dataclass
class FitResult:
    """What :func:`fit` found: the best validation score, its epoch and one history row per epoch run."""

    best_score: float = -1.0
    best_epoch: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


def setup_torch(seed: int) -> None:
    """Seed torch, make it deterministic and set its CPU threads (:data:`TORCH_THREADS`).

    Args:
        seed: the global torch seed.
    """
    import torch

    torch.set_num_threads(TORCH_THREADS)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)


def predict(
    fn: Callable[..., torch.Tensor], arrays: Sequence[np.ndarray], batch_size: int = PREDICT_BATCH
) -> np.ndarray:
    """Run ``fn`` over aligned arrays in batches under ``no_grad``; concatenate the results.

    Args:
        fn: a module or function of one batch of every array, in order.
        arrays: the inputs, aligned on their first axis.
        batch_size: samples per call.

    Returns:
        The outputs of every batch, concatenated.
    """
    import torch

    outputs = []
    count = len(arrays[0])
    with torch.no_grad():
        for start in range(0, count, batch_size):
            batch = [torch.from_numpy(np.ascontiguousarray(a[start : start + batch_size])) for a in arrays]
            outputs.append(fn(*batch).numpy())
    return np.concatenate(outputs)


def accuracy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Share of rows whose argmax is the label (NaN without samples)."""
    return float((logits.argmax(axis=1) == labels).mean()) if len(labels) else float("nan")


def seconds_since(started: float) -> float:
    """Seconds since a ``time.perf_counter()`` mark, rounded to 0.1 s."""
    return round(time.perf_counter() - started, 1)


@contextmanager
def timed(seconds: dict[str, float], key: str) -> Iterator[None]:
    """Record the wall time of the block in ``seconds[key]`` (rounded to 0.1 s)."""
    started = time.perf_counter()
    yield
    seconds[key] = seconds_since(started)


def _one_cycle(model: nn.Module, schedule: Schedule, count: int) -> tuple[Any, Any]:
    """AdamW over every parameter and its one-cycle learning-rate schedule."""
    import torch

    optimizer = torch.optim.AdamW(list(model.parameters()), lr=schedule.learning_rate, weight_decay=WEIGHT_DECAY)
    steps_per_epoch = max(1, -(-count // schedule.batch_size))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer,
        max_lr=schedule.learning_rate,
        total_steps=schedule.epochs * steps_per_epoch,
        pct_start=schedule.pct_start,
    )
    return optimizer, scheduler


def _run_epoch(
    order: torch.Tensor,
    batch_size: int,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    optimizer: Any,
    scheduler: Any,
) -> float:
    """One pass over ``order`` in batches; returns the mean training loss."""
    total = 0.0
    for start in range(0, len(order), batch_size):
        idx = order[start : start + batch_size]
        loss = batch_loss(idx)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        total += float(loss) * len(idx)
    return total / len(order)


def fit(
    model: nn.Module,
    batch_loss: Callable[[torch.Tensor], torch.Tensor],
    count: int,
    validate: Callable[[], float],
    schedule: Schedule,
    *,
    generator: torch.Generator,
    desc: str,
    progress: bool = True,
) -> FitResult:
    """Fit ``model`` with early stopping; leaves it in eval mode with the weights of its best validation epoch.

    Args:
        model: the module whose parameters are optimized.
        batch_loss: the loss of the training samples at the given indices (may draw from ``generator``).
        count: the number of training samples.
        validate: the validation score of the model (called in eval mode after every epoch; higher is better).
        schedule: epochs, batch size, learning rate and patience.
        generator: the random generator of the shuffles.
        desc: name for logs and the progress bar.
        progress: show a progress bar.

    Returns:
        The best score and epoch, and ``{"epoch", "loss", "score"}`` per epoch run.
    """
    import torch
    from tqdm.auto import tqdm

    optimizer, scheduler = _one_cycle(model, schedule, count)
    result = FitResult()
    best_state = copy.deepcopy(model.state_dict())
    bar = tqdm(range(schedule.epochs), desc=desc, disable=not progress)
    for epoch in bar:
        model.train()
        order = torch.randperm(count, generator=generator)
        loss = _run_epoch(order, schedule.batch_size, batch_loss, optimizer, scheduler)
        model.eval()
        score = validate()
        result.history.append({"epoch": epoch + 1, "loss": loss, "score": score})
        bar.set_postfix(loss=f"{loss:.3f}", val=f"{score:.3f}")
        if score > result.best_score:
            result.best_score, result.best_epoch = score, epoch + 1
            best_state = copy.deepcopy(model.state_dict())
        elif epoch + 1 - result.best_epoch >= schedule.patience:
            LOGGER.info("%s: early stop after epoch %d (best %d)", desc, epoch + 1, result.best_epoch)
            break
    model.load_state_dict(best_state)
    model.eval()
    return result
