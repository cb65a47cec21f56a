"""Exponential moving average (EMA) of a model's weights."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import Tensor, nn

__all__ = ["EMA"]


class EMA:
    r"""An exponential moving average of a module's floating-point parameters and buffers.

    After every optimiser step, ``update()`` moves each shadow weight towards the live one,

    .. math:: \bar\theta_k = \beta\,\bar\theta_{k-1} + (1 - \beta)\,\theta_k ,

    with the warm-up :math:`\beta_k = \min(\beta, (1 + k) / (10 + k))` so that early
    averages are not dominated by the random initialisation (Polyak & Juditsky, 1992;
    the warm-up is TensorFlow's ``ExponentialMovingAverage(num_updates=...)``). The
    averaged weights are what score and diffusion models are usually sampled with
    (Song & Ermon, 2020, "Improved techniques for training score-based models").
    Integer buffers (counters) are copied, not averaged.

    Example:
        >>> net = torch.nn.Linear(2, 1)
        >>> ema = EMA(net, decay=0.9)
        >>> with torch.no_grad():
        ...     _ = net.weight.add_(1.0)
        >>> ema.update(net)
        >>> ema.num_updates
        1
        >>> with ema.swapped(net):
        ...     bool(torch.allclose(net.weight, ema.shadow["weight"]))
        True
    """

    def __init__(self, module: nn.Module, decay: float = 0.999) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"EMA decay must lie in [0, 1), got {decay}")
        self.decay = float(decay)
        self.num_updates = 0
        self.shadow: dict[str, Tensor] = {
            k: v.detach().clone() for k, v in module.state_dict().items()
        }

    def _beta(self) -> float:
        k = self.num_updates
        return min(self.decay, (1.0 + k) / (10.0 + k))

    @torch.no_grad()
    def update(self, module: nn.Module) -> None:
        """Fold the module's current weights into the average (call after ``optimizer.step``)."""
        beta = self._beta()
        for k, v in module.state_dict().items():
            s = self.shadow[k]
            if s.is_floating_point() or s.is_complex():
                s.lerp_(v.detach().to(s.dtype), 1.0 - beta)
            else:
                s.copy_(v)
        self.num_updates += 1

    def state_dict(self) -> dict[str, Tensor]:
        """The shadow weights, keyed like ``module.state_dict()``."""
        return dict(self.shadow)

    def load_state_dict(self, state: dict[str, Tensor], num_updates: int) -> None:
        """Restore the shadow weights and the update counter (from a checkpoint)."""
        missing = set(self.shadow) ^ set(state)
        if missing:
            raise ValueError(
                f"EMA state does not match the model; differing keys: {sorted(missing)}"
            )
        for k, v in state.items():
            self.shadow[k].copy_(v)
        self.num_updates = int(num_updates)

    @contextmanager
    def swapped(self, module: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into ``module`` (e.g. to evaluate it)."""
        backup = {k: v.detach().clone() for k, v in module.state_dict().items()}
        module.load_state_dict(self.shadow)
        try:
            yield module
        finally:
            module.load_state_dict(backup)
