"""Private pieces of the training loop: seeds, Ctrl-C handling, the JSONL log, checks."""

from __future__ import annotations

import json
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

__all__ = ["JsonlLogger", "check_inputs", "deferred_sigint", "loss_seed"]


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


def check_data(data: Tensor, name: str) -> None:
    if not isinstance(data, Tensor) or not data.is_floating_point() or data.ndim < 2:
        raise TypeError(f"{name} must be a floating tensor of shape (n, ...), got {data!r:.80}")
    if len(data) == 0:
        raise ValueError(f"{name} is empty")
    bad = ~torch.isfinite(data.reshape(len(data), -1)).all(dim=1)
    if bad.any():
        raise ValueError(
            f"{name} has {int(bad.sum())} rows with NaN or inf (first: row "
            f"{int(bad.nonzero()[0])}); clean the data before training"
        )


def check_inputs(
    data: Tensor, labels: Tensor | None, eval_data: Tensor | None, eval_labels: Tensor | None
) -> None:
    """The trainer's rows and labels: finite floating rows, one integer label per row."""
    check_data(data, "data")
    if eval_data is not None:
        check_data(eval_data, "eval_data")
    if labels is not None:
        check_label_rows(labels, data, "labels")
    if eval_labels is not None:
        if eval_data is None:
            raise ValueError("eval_labels were given without eval_data")
        check_label_rows(eval_labels, eval_data, "eval_labels")
