"""The trainer's device side (private): where the rows live, and the per-step numbers kept
on the device until they are read.

Two rules keep a CUDA step free of host synchronisation (docs/gpu.md, "What syncs"):

- :class:`Batches`: rows that fit (a quarter of the free device memory) are copied to the
  device once and each step gathers its batch there; larger sets stay in pinned host
  memory, each batch is gathered on the host into one of two pinned buffers and copied
  asynchronously. Batch indices travel with ``non_blocking`` copies. A blocking
  host-to-device copy would wait for the device to drain its queue every step.
- :class:`Pending`: a step's loss, gradient norm and tensor logs stay on the device; they
  are read in one host transfer (and, under torchrun, one all-reduce) when the trainer
  logs, evaluates or checkpoints, which is where it needs them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

from .distributed import DistInfo

__all__ = ["RESIDENT_FRACTION", "Batches", "NonFiniteLossError", "Pending", "StepRecord", "Window"]

RESIDENT_FRACTION = 0.25
"""Training rows live on a GPU when they take at most this fraction of its free memory."""


def resident(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` of rows are kept on ``device`` for the whole run (always on the CPU)."""
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= RESIDENT_FRACTION * free


class Batches:
    """``batches(idx) -> (x, y)``: the rows ``idx`` of ``data`` (and ``labels``) on ``device``
    in ``dtype``.

    Example:
        >>> b = Batches(torch.arange(6.0).reshape(3, 2), None, torch.device("cpu"), torch.float64)
        >>> b(torch.tensor([2, 0]))[0]
        tensor([[4., 5.],
                [0., 1.]], dtype=torch.float64)
    """

    def __init__(
        self, data: Tensor, labels: Tensor | None, device: torch.device, dtype: torch.dtype
    ) -> None:
        self.device = device
        nbytes = data.numel() * torch.empty((), dtype=dtype).element_size()
        self.resident = resident(nbytes, device)
        self.labels = None if labels is None else labels.to(device)  # one integer per row
        if self.resident:
            self.data = data.to(device=device, dtype=dtype)
            return
        self.data = data.to(dtype).pin_memory()
        self.staging: list[Tensor] = []
        self.copied: list[torch.cuda.Event | None] = [None, None]
        self.turn = 0

    def __call__(self, idx: Tensor) -> tuple[Tensor, Tensor | None]:
        on_device = idx.to(self.device, non_blocking=True)
        y = None if self.labels is None else self.labels[on_device]
        if self.resident:
            return self.data[on_device], y
        return self._streamed(idx), y

    def _streamed(self, idx: Tensor) -> Tensor:
        """Gather on the host into a pinned buffer not in flight, then copy asynchronously."""
        k, self.turn = self.turn, 1 - self.turn
        shape = (len(idx), *self.data.shape[1:])
        if len(self.staging) < 2:
            self.staging.append(torch.empty(shape, dtype=self.data.dtype).pin_memory())
        event = self.copied[k]
        if event is not None:
            event.synchronize()  # the copy two steps ago from this buffer (long done)
        buf = self.staging[k][: len(idx)]
        torch.index_select(self.data, 0, idx, out=buf)
        x = buf.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record()
        self.copied[k] = event
        return x


class NonFiniteLossError(RuntimeError):
    """The loss or its gradient became NaN or infinite; training stopped."""


@dataclass(frozen=True)
class StepRecord:
    """One step's numbers as read on the host: ``logs`` as floats."""

    step: int
    loss: float
    grad_norm: float
    logs: dict[str, float]

    @property
    def finite(self) -> bool:
        """Whether the loss and the gradient norm are finite."""
        return math.isfinite(self.loss) and math.isfinite(self.grad_norm)

    def non_finite(self, last_checkpoint: Path | None) -> NonFiniteLossError:
        """The error that stops training at this (non-finite) step."""
        where = f"; the last good checkpoint is {last_checkpoint}" if last_checkpoint else ""
        return NonFiniteLossError(
            f"loss {self.loss} / gradient norm {self.grad_norm} at step {self.step} is not "
            f"finite{where}; lower the learning rate, clip gradients harder or tighten the "
            "solver tolerances"
        )

    def postfix(self) -> dict[str, str]:
        """What the progress bar shows: the loss, and the NFE where the loss logs it."""
        nfe = {"nfe": f"{self.logs['nfe']:.0f}"} if "nfe" in self.logs else {}
        return {"loss": f"{self.loss:.4f}", **nfe}


class Window:
    """The steps since the last log record, whose means the record holds.

    ``scaled`` (fp16 loss scaling): a step with a finite loss and a non-finite gradient norm
    was skipped by the scaler, not a failure: it adds no gradient norm, and ``amp_skipped``
    is the fraction of such steps.

    Example:
        >>> w = Window(scaled=False)
        >>> w.add(StepRecord(1, 1.0, 2.0, {})); w.add(StepRecord(2, 3.0, 4.0, {}))
        >>> w.means()
        {'loss': 2.0, 'grad_norm': 3.0}
    """

    def __init__(self, scaled: bool) -> None:
        self.scaled = scaled
        self.values: dict[str, list[float]] = {}

    def skipped(self, r: StepRecord) -> bool:
        """Whether the loss scaler skipped step ``r`` (its fp16 gradients overflowed)."""
        return self.scaled and math.isfinite(r.loss) and not math.isfinite(r.grad_norm)

    def add(self, r: StepRecord) -> None:
        skipped = self.skipped(r)
        norm = {} if skipped else {"grad_norm": r.grad_norm}
        amp = {"amp_skipped": float(skipped)} if self.scaled else {}
        for key, v in {"loss": r.loss, **norm, **r.logs, **amp}.items():
            self.values.setdefault(key, []).append(v)

    def means(self) -> dict[str, float]:
        """The mean of each value over the window (``{}`` when empty), which then restarts."""
        out = {key: sum(v) / len(v) for key, v in self.values.items()}
        self.values = {}
        return out


class Pending:
    """The steps run since the last :meth:`read`, their numbers still where computed.

    Example:
        >>> p = Pending()
        >>> p.add(1, torch.tensor(0.5), torch.tensor(2.0), {"nfe": 3.0, "mse": torch.tensor(0.25)})
        >>> p.read(DistInfo())
        [StepRecord(step=1, loss=0.5, grad_norm=2.0, logs={'nfe': 3.0, 'mse': 0.25})]
    """

    def __init__(self) -> None:
        self.steps: list[int] = []
        self.stats: list[Tensor] = []
        self.logs: list[dict[str, Any]] = []

    def add(self, step: int, loss: Tensor, grad_norm: Tensor, logs: dict[str, Any]) -> None:
        """Keep step ``step``'s loss and gradient norm (0-dim tensors) and its logs."""
        self.steps.append(step)
        self.stats.append(torch.stack([loss.detach().double(), grad_norm.detach().double()]))
        self.logs.append(logs)

    def read(self, info: DistInfo) -> list[StepRecord]:
        """The pending steps on the host, losses and norms averaged over processes; one
        transfer for all of them. Empties the buffer."""
        if not self.steps:
            return []
        stats = torch.stack(self.stats)
        if info.distributed:
            dist.all_reduce(stats)
            stats = stats / info.world_size
        tensors = [v for logs in self.logs for v in logs.values() if isinstance(v, Tensor)]
        flat = [stats.flatten()]
        if tensors:
            flat.append(torch.stack([t.detach().to(stats).reshape(()) for t in tensors]))
        values = torch.cat(flat).tolist()
        pairs, rest = values[: 2 * len(self.steps)], iter(values[2 * len(self.steps) :])
        out = []
        for i, (step, logs) in enumerate(zip(self.steps, self.logs, strict=True)):
            floats = {k: next(rest) if isinstance(v, Tensor) else float(v) for k, v in logs.items()}
            out.append(StepRecord(step, pairs[2 * i], pairs[2 * i + 1], floats))
        self.steps, self.stats, self.logs = [], [], []
        return out
