"""Private pieces of the training loop: seeds, Ctrl-C handling, the JSONL log, checks and
the held-out evaluations."""

from __future__ import annotations

import inspect
import json
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from .config import TrainConfig
from .distributed import DistInfo, mean_over_ranks, shard

__all__ = ["HeldOut", "JsonlLogger", "accepts", "check_inputs", "deferred_sigint", "loss_seed"]


def loss_seed(seed: int, rank: int, step: int) -> int:
    # The loss's generator is re-seeded every step from (seed, rank, step) (a "fold-in"
    # in JAX terms): resuming needs no generator state, and ranks draw independent noise.
    return (seed * 1_000_003 + rank * 7_919 + step) % (2**63 - 1)


@contextmanager
def deferred_sigint() -> Iterator[dict[str, bool]]:
    """Turn the first Ctrl-C into a flag checked between steps (a second one aborts)."""
    flag = {"set": False}
    if threading.current_thread() is not threading.main_thread():
        yield flag
        return

    def handler(signum: int, frame: Any) -> None:
        if flag["set"]:
            raise KeyboardInterrupt
        flag["set"] = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield flag
    finally:
        signal.signal(signal.SIGINT, previous)


class JsonlLogger:
    """``metrics.jsonl`` writer (rank 0 only); on resume, drops records after the step."""

    def __init__(self, run_dir: Path, enabled: bool, resume_step: int | None) -> None:
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        if not enabled:
            return
        keep: list[str] = []
        if resume_step is not None and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    if json.loads(line)["step"] <= resume_step:
                        keep.append(line)
                except (ValueError, KeyError, TypeError):
                    continue
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


def check_label_rows(labels: Tensor, data: Tensor, name: str) -> None:
    """Class labels: an integer tensor (n,), one per row of ``data``, all >= 0."""
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"{name} must be an integer tensor of class indices, got {labels!r:.80}")
    if labels.shape != (len(data),):
        raise ValueError(
            f"{name} must have shape ({len(data)},), one label per row, got {tuple(labels.shape)}"
        )
    if labels.numel() and int(labels.min()) < 0:
        raise ValueError(
            f"{name} holds negative labels (first: row {int((labels < 0).nonzero()[0])})"
        )


def check_data(data: Tensor, name: str, integer: bool = False) -> None:
    """Finite rows (n, ...): floating, or integer (levels) when ``integer``."""
    ok = isinstance(data, Tensor) and data.ndim >= 2
    if not ok or not (data.is_floating_point() or (integer and not data.is_complex())):
        what = "a floating or integer" if integer else "a floating"
        raise TypeError(f"{name} must be {what} tensor of shape (n, ...), got {data!r:.80}")
    if len(data) == 0:
        raise ValueError(f"{name} is empty")
    bad = ~torch.isfinite(data.reshape(len(data), -1)).all(dim=1)
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} rows with NaN or inf (first: row "
            f"{int(bad.nonzero()[0])}); clean the data before training"
        )


def check_inputs(
    data: Tensor,
    labels: Tensor | None,
    eval_data: Tensor | None,
    eval_labels: Tensor | None,
    *,
    integer: bool = False,
) -> None:
    """The trainer's rows and labels: finite floating rows (or integer ones, with
    ``integer``: discrete data the trainer transforms per batch), one integer label per row."""
    check_data(data, "data", integer)
    if eval_data is not None:
        check_data(eval_data, "eval_data", integer)
    if labels is not None:
        check_label_rows(labels, data, "labels")
    if eval_labels is not None:
        if eval_data is None:
            raise ValueError("eval_labels were given without eval_data")
        check_label_rows(eval_labels, eval_data, "eval_labels")


def accepts(fn: Any, name: str) -> bool:
    """Whether ``fn`` takes the keyword ``name`` (or any keyword)."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin without a signature
        return False
    return any(p.name == name or p.kind is p.VAR_KEYWORD for p in params)


class HeldOut:
    """The trainer's held-out evaluations of ``evaluate(model, eval_data[, eval_labels])``.

    The final one takes every row with the model's exact setting. A periodic one takes a
    fixed subsample (``config.eval_rows`` rows of a permutation seeded by ``config.seed``)
    and, where ``evaluate`` takes ``fast`` (as ``default_evaluate`` does), the model's
    cheaper setting; it is skipped when the time periodic evaluations took so far plus
    the last one's would exceed ``config.eval_budget`` of the training time.

    Under torchrun each rank evaluates its :func:`~.distributed.shard` of the rows, with no
    collective inside, and the scores are combined as row-weighted means
    (:func:`~.distributed.mean_over_ranks`): ``evaluate`` must return means over rows.
    """

    def __init__(
        self,
        evaluate: Callable[..., dict[str, float]],
        args: tuple[Tensor, ...],
        config: TrainConfig,
        progress: bool,
        info: DistInfo | None = None,
    ) -> None:
        self.evaluate, self.full, self.budget = evaluate, args, config.eval_budget
        self.info = info or DistInfo()
        self.periodic = args
        if args and config.eval_rows < len(args[0]):
            gen = torch.Generator().manual_seed(config.seed)
            rows = torch.randperm(len(args[0]), generator=gen)[: config.eval_rows]
            self.periodic = tuple(a[rows.to(a.device)] for a in args)
        self.options = {
            "fast": accepts(evaluate, "fast"),
            "progress": accepts(evaluate, "progress"),
        }
        self.progress = progress
        self.spent, self.last = 0.0, 0.0

    def due(self, train_seconds: float) -> bool:
        """Whether a periodic evaluation fits the budget after ``train_seconds`` of training."""
        return not self.budget or self.spent + self.last <= self.budget * train_seconds

    def __call__(self, model: nn.Module, *, final: bool) -> tuple[dict[str, float], dict]:
        """The scores of ``model`` and what to log with them: the rows, whether it was the
        final evaluation, and its seconds."""
        args = self.full if final else self.periodic
        values = {"fast": not final, "progress": self.progress}
        kwargs = {k: v for k, v in values.items() if self.options[k]}
        t0 = time.perf_counter()
        part = shard(len(args[0]), self.info)
        local = tuple(a[part] for a in args)
        n = len(local[0])
        out = {k: float(v) for k, v in self.evaluate(model, *local, **kwargs).items()} if n else {}
        out = mean_over_ranks(out, n, self.info)
        seconds = time.perf_counter() - t0
        if not final:
            self.last = seconds
            self.spent += seconds
        return out, {"rows": len(args[0]), "final": final, "seconds": seconds}
