"""One training loop for every model family (anything with ``loss(x, *, generator)``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from ._feed import NonFiniteLossError
from ._loop import HeldOut, check_inputs
from ._training_loop import TrainingLoop, TrainResult
from .config import TrainConfig
from .distributed import DistInfo, setup, teardown
from .evaluate import default_evaluate

__all__ = ["NonFiniteLossError", "TrainResult", "train"]

Evaluate = Callable[..., dict[str, float]]
"""``evaluate(model, eval_data)``, or ``evaluate(model, eval_data, eval_labels)`` when the
trainer has held-out labels; the keywords ``fast`` (a periodic evaluation) and ``progress``
are passed when it takes them."""


def train(
    model: nn.Module,
    data: Tensor,
    config: TrainConfig,
    run_dir: str | Path,
    *,
    eval_data: Tensor | None = None,
    evaluate: Evaluate | None = None,
    resume: bool = False,
    extra_state: dict[str, Any] | None = None,
    progress: bool = True,
    labels: Tensor | None = None,
    eval_labels: Tensor | None = None,
    transform: Callable[[Tensor, torch.Generator], Tensor] | None = None,
) -> TrainResult:
    """Train ``model`` on the rows of ``data`` by minimising ``model.loss``.

    Each step draws a mini-batch (a seeded shuffle per epoch), calls
    ``model.loss(x, generator=g)``, clips the gradient norm, takes an Adam/AdamW step at
    the scheduled learning rate (:func:`~probpath.train.config.lr_factor`) and updates the
    EMA weights. Every ``log_every`` steps a record goes to ``run_dir/metrics.jsonl``.
    ``evaluate(model, eval_data)`` (default: :func:`~.evaluate.default_evaluate`, the
    held-out NLL) runs on the EMA weights at the end on all rows, and every ``eval_every``
    steps on a fixed subsample of ``eval_rows`` rows, with ``fast=True`` where it takes
    that keyword and skipped when periodic evaluations would take more than
    ``eval_budget`` of the training time. Every ``checkpoint_every`` steps (and at the
    end) a checkpoint goes to ``run_dir/checkpoints`` (see :mod:`.checkpoint`), holding
    also ``extra_state`` (JSON, e.g. the data standardisation and class names).

    ``labels`` (integer, one per row of ``data``) make the run conditional: each batch's
    labels go along as ``model.loss(x, y=y, generator=g)`` (a conditional network, which
    drops them itself with probability ``p_uncond``, or a classifier); ``eval_labels``
    go to ``evaluate(model, eval_data, eval_labels)``.

    ``transform(batch, generator)`` maps each batch to the model's space after the step's
    generator is seeded and before the loss draws from it: e.g. fresh dequantization noise
    for integer ``data`` (then kept on its integer dtype in memory), which a resumed run
    draws again exactly.

    ``resume=True`` continues from the newest checkpoint: a resumed run reproduces the
    uninterrupted run's losses exactly (same device, single process). A NaN/inf loss or
    gradient raises :class:`NonFiniteLossError` and leaves the last checkpoint as it was;
    Ctrl-C finishes the current step, writes a checkpoint and raises ``KeyboardInterrupt``.

    Under ``torchrun`` the model is wrapped in DistributedDataParallel, each process takes
    ``batch_size / world_size`` rows of every batch, and only rank 0 logs and checkpoints;
    held-out evaluations are sharded across the ranks (:class:`._loop.HeldOut`). Training
    runs on the model's device, in ``config.precision``, with ``config.compile`` (docs/gpu.md).

    Example:
        >>> import math, tempfile
        >>> class Gauss(torch.nn.Module):  # learns the mean of unit-variance data
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.mu = torch.nn.Parameter(torch.zeros(2))
        ...     def loss(self, x, *, generator=None):
        ...         return 0.5 * (x - self.mu).pow(2).sum(-1).mean(), {}
        ...     def log_prob(self, x):
        ...         return -0.5 * (x - self.mu).pow(2).sum(-1) - math.log(2 * math.pi)
        >>> data = torch.randn(512, 2, generator=torch.Generator().manual_seed(0)) + 3
        >>> cfg = TrainConfig(steps=300, batch_size=64, lr=0.05, ema_decay=0.0)
        >>> out = train(Gauss(), data, cfg, tempfile.mkdtemp(), progress=False)
        >>> out.step, out.losses[-1] < 1.5 < out.losses[0]
        (300, True)
    """
    check_inputs(data, labels, eval_data, eval_labels, integer=transform is not None)
    params = _trainable_parameters(model)
    info = setup(params[0].device)
    held_out = _held_out(evaluate, eval_data, eval_labels, config, progress and info.is_main, info)
    try:
        loop = TrainingLoop(
            model, params, config, Path(run_dir), info, resume, extra_state, held_out, transform
        )
        result = loop.run(data, labels, progress=progress)
        if info.distributed:  # rank 0 may still write its checkpoint: leave together
            dist.barrier()
        return result
    finally:
        teardown(info)


def _trainable_parameters(model: nn.Module) -> list[nn.Parameter]:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    return params


def _held_out(
    evaluate: Evaluate | None,
    eval_data: Tensor | None,
    eval_labels: Tensor | None,
    config: TrainConfig,
    show: bool,
    info: DistInfo,
) -> HeldOut:
    """The held-out evaluations of the run: ``evaluate`` (default: the held-out NLL) on
    ``eval_data`` and, when given, ``eval_labels``."""
    eval_args = tuple(a for a in (eval_data, eval_labels) if a is not None)
    return HeldOut(evaluate or default_evaluate, eval_args, config, show, info)
