"""Multi-process (``torchrun``) support: process group, DDP adapter and data sharding.

Under ``torchrun`` the environment holds ``RANK``, ``LOCAL_RANK``, ``WORLD_SIZE``,
``MASTER_ADDR`` and ``MASTER_PORT``. :func:`setup` reads them, initialises the process
group (``nccl`` on CUDA, ``gloo`` on CPU) and tells the trainer which rank it is;
:func:`local_device` gives each rank its own GPU, ``cuda:LOCAL_RANK``.

Held-out evaluation is sharded: each rank evaluates its :func:`shard` of the rows with no
collective inside (an adaptive solver may take a different number of steps on each rank),
and :func:`mean_over_ranks` combines the means once afterwards; :func:`agree` makes every
rank take rank 0's decision to evaluate, so that none waits for a collective the others
skip.

DistributedDataParallel averages gradients through hooks armed by the *wrapped
module's forward*; the model contract's ``loss`` is a method, so calling it directly
would silently skip the synchronisation. :class:`LossModule` is the adapter whose
``forward`` is ``model.loss``; the trainer wraps that in DDP.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DistributedSampler

from ..device import resolve_device

__all__ = [
    "DistInfo",
    "LossModule",
    "agree",
    "batch_indices",
    "local_device",
    "mean_over_ranks",
    "setup",
    "shard",
    "teardown",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size``, its device, and whether
    :func:`setup` created the process group (and so must destroy it)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device | None = None
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        """True on the process that logs and writes checkpoints (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """True when more than one process takes part."""
        return self.world_size > 1


def setup(device: torch.device | None = None) -> DistInfo:
    """Initialise the process group if ``torchrun``'s variables are set, else do nothing.

    ``device`` is the device the model lives on; on CUDA each process uses
    ``cuda:LOCAL_RANK``.

    Example:
        >>> setup().world_size  # a plain single process
        1
    """
    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        local = int(os.environ.get("LOCAL_RANK", rank))
        return DistInfo(rank, world, local, _device(device, local), owns_group=False)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if "RANK" not in os.environ or world <= 1:
        return DistInfo(device=device)
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    rank = int(os.environ["RANK"])
    local = int(os.environ.get("LOCAL_RANK", rank))
    dev = _device(device, local)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return DistInfo(rank, world, local, dev, owns_group=True)


def _device(device: torch.device | None, local_rank: int) -> torch.device:
    if device is not None and device.type == "cuda":
        return torch.device("cuda", local_rank)
    return device if device is not None else torch.device("cpu")


def local_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The device of this process for ``--device spec`` (:func:`probpath.device.resolve_device`):
    under ``torchrun`` with several processes a CUDA device is ``cuda:LOCAL_RANK``, one GPU
    per rank; another ``cuda:N`` there is refused, since every rank would take GPU N.

    >>> local_device("cpu")
    device(type='cpu')
    """
    device = resolve_device(spec)
    if device.type != "cuda" or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return device
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device.index not in (None, local):
        raise ValueError(
            f"--device {spec} under torchrun would put every rank on one GPU; use --device "
            "cuda (each rank takes cuda:LOCAL_RANK) and choose the GPUs with "
            "CUDA_VISIBLE_DEVICES"
        )
    return torch.device("cuda", local)


def shard(n: int, info: DistInfo) -> slice:
    """This rank's contiguous share of ``n`` rows: sizes differ by at most one, in rank order.

    >>> [shard(5, DistInfo(rank=r, world_size=2)) for r in (0, 1)]
    [slice(0, 3, None), slice(3, 5, None)]
    """
    base, extra = divmod(n, info.world_size)
    start = info.rank * base + min(info.rank, extra)
    return slice(start, start + base + (info.rank < extra))


def mean_over_ranks(values: dict[str, float], n: int, info: DistInfo) -> dict[str, float]:
    """The row-weighted mean of every rank's ``values`` (means over its ``n`` rows): the mean
    over all rows. One collective; a rank with no rows contributes nothing.

    >>> mean_over_ranks({"nll": 1.5}, 10, DistInfo())
    {'nll': 1.5}
    """
    if not info.distributed:
        return dict(values)
    parts: list[Any] = [None] * info.world_size
    dist.all_gather_object(parts, (n, values))
    total = sum(k for k, _ in parts)
    keys = next(v for k, v in parts if k)
    return {key: sum(k * v[key] for k, v in parts if k) / total for key in keys}


def agree(flag: bool, info: DistInfo) -> bool:
    """Rank 0's ``flag`` on every rank (one broadcast; ``flag`` itself in a single process)."""
    if not info.distributed:
        return flag
    t = torch.tensor([float(flag)], device=info.device)
    dist.broadcast(t, src=0)
    return bool(t.item())


def teardown(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup` created it.

    The DDP wrapper and its reducer hold the group too; they are collected first, so that
    the group's worker threads end here and not during interpreter shutdown (where gloo's
    threads can abort the process).
    """
    if info.owns_group and dist.is_initialized():
        gc.collect()
        dist.destroy_process_group()


class LossModule(nn.Module):
    """``forward(x, generator, y)`` calls ``model.loss``: the thing to wrap in DDP.

    ``y`` (the batch's labels of a conditional model or classifier) is passed on as
    ``model.loss(x, y=y, generator=generator)`` when given, and left out otherwise.

    Example:
        >>> class M(torch.nn.Module):
        ...     def loss(self, x, *, generator=None):
        ...         return x.pow(2).mean(), {}
        >>> LossModule(M())(torch.ones(3, 2))[0]
        tensor(1.)
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, x: Tensor, generator: torch.Generator | None = None, y: Tensor | None = None
    ) -> tuple[Tensor, dict[str, Any]]:
        labels = {} if y is None else {"y": y}
        return self.model.loss(x, generator=generator, **labels)  # type: ignore[operator]


def batch_indices(
    n: int, batch_size: int, info: DistInfo, *, seed: int, start_step: int = 0
) -> Iterator[Tensor]:
    """Endless stream of this rank's mini-batches of row indices, from ``start_step`` on.

    Each epoch is a fresh permutation drawn by a :class:`DistributedSampler` (seeded with
    ``seed + epoch``); rank ``r`` takes every ``world_size``-th index. The stream
    concatenates epochs and is cut into batches of ``batch_size // world_size``, so
    step ``k`` uses the same rows across all ranks together as a single process with
    ``batch_size`` would (exactly so when ``n`` is divisible by ``world_size``), and the
    order is a pure function of ``(seed, step)``: resuming needs no extra state.

    Example:
        >>> it = batch_indices(4, 2, DistInfo(), seed=0)
        >>> sorted(torch.cat([next(it), next(it)]).tolist())
        [0, 1, 2, 3]
    """
    if batch_size % info.world_size:
        raise ValueError(
            f"batch_size {batch_size} must be divisible by the number of processes "
            f"{info.world_size} (it is the global batch, split evenly across ranks)"
        )
    local = batch_size // info.world_size
    sampler: DistributedSampler[int] = DistributedSampler(
        cast(Any, range(n)), num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=seed
    )
    per_epoch = len(sampler)
    pos = start_step * local
    epoch, offset = divmod(pos, per_epoch)
    buf: list[int] = []
    while True:
        while len(buf) < local:
            sampler.set_epoch(epoch)
            buf.extend(list(sampler)[offset:])
            epoch, offset = epoch + 1, 0
        yield torch.tensor(buf[:local], dtype=torch.long)
        buf = buf[local:]
