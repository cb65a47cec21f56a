"""No host read inside a sampler's or the trainer's steps (docs/gpu.md, "What syncs").

On a GPU every read of a tensor's values by Python (``.item()``, ``float(t)``, ``bool(t)``,
``.tolist()``, ``.cpu()``, ...) waits for the device to finish its queue. On the CPU the
same calls can be counted: a torch-function mode sees the Python-level ones, a dispatch
mode the ``aten::_local_scalar_dense`` reads made inside torch. A loop that reads nothing
per step makes as many reads for 4 steps as for 8 (the reads that remain check the inputs
and build the grid, once per call).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from probpath.models import build
from probpath.train import TrainConfig, train

READS = {"item", "tolist", "numpy", "cpu", "__float__", "__int__", "__bool__", "__index__"}


class _PythonReads(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_function__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.n += getattr(func, "__name__", "") in READS
        return func(*args, **(kwargs or {}))


class _TorchReads(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.n = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        self.n += func is torch.ops.aten._local_scalar_dense.default
        return func(*args, **(kwargs or {}))


def host_reads(fn: Callable[[], object]) -> int:
    """The number of reads of tensor values by the host while ``fn()`` runs."""
    with _PythonReads() as python, _TorchReads() as inner:
        fn()
    return python.n + inner.n


ADAPTIVE = {"dopri5"}  # adaptive step control reads its error norm: the method needs it
FAMILIES = ("fm", "ddpm", "ncsn", "sde", "ebm")


def _cases() -> list[tuple[str, str]]:
    return [
        (family, name)
        for family in FAMILIES
        for name in build(family, dim=2, hidden=[8]).samplers  # type: ignore[union-attr]
        if name not in ADAPTIVE
    ]


@pytest.mark.parametrize(("family", "sampler"), _cases())
def test_sampler_steps_read_nothing_back(family: str, sampler: str) -> None:
    torch.manual_seed(0)
    model: Any = build(family, dim=2, hidden=[8])

    def sample(steps: int) -> Callable[[], object]:  # given steps, the PF-ODE takes heun
        gen = torch.Generator().manual_seed(0)
        return lambda: model.sample(8, sampler=sampler, steps=steps, generator=gen)

    assert host_reads(sample(4)) == host_reads(sample(8))


@pytest.mark.parametrize("family", ["fm", "ddpm"])
def test_training_steps_read_nothing_back(tmp_path, family: str) -> None:
    """The trainer reads a step's numbers at log, evaluation and checkpoint steps only (and
    the data order once per epoch; both runs stay in the first)."""
    data = torch.randn(256, 2, generator=torch.Generator().manual_seed(0))

    def run(steps: int) -> Callable[[], object]:
        cfg = TrainConfig(steps=steps, batch_size=16, log_every=steps, checkpoint_every=steps)
        model = build(family, dim=2, hidden=[8])
        return lambda: train(model, data, cfg, tmp_path / f"{family}{steps}", progress=False)

    assert host_reads(run(3)) == host_reads(run(6))
