"""The contract every model family fulfils, so one trainer, one CLI and every
sampler and metric work with all of them."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

__all__ = ["GenerativeModel", "LossOutput"]

LossOutput = tuple[Tensor, Mapping[str, float | Tensor]]
"""A scalar training loss and a dict of extra numbers to log (e.g. ``{"nfe": 38}``): floats,
or 0-dim tensors (e.g. ``loss.detach()``), which the trainer reads from the device only when
it writes its log, so that a GPU step needs no host read."""


@runtime_checkable
class GenerativeModel(Protocol):
    """What the trainer, the CLI and the metrics need from a model family.

    A family is a ``torch.nn.Module`` that works in the model space of the data (vectors
    standardised, images mapped to [-1, 1] by :func:`probpath.data.to_centered`), one
    example of ``shape`` (``(dim,)`` or ``(C, H, W)``; ``dim`` its size), and implements:

    - ``config``: the JSON-serialisable keyword arguments that rebuild it
      through ``probpath.models.build(name, **config)`` (``dim``, ``shape``, ``net``,
      ``net_config`` among them);
    - ``loss(x)``: the training objective on a batch ``x`` of shape (batch, *shape),
      with extra numbers to log;
    - ``sample(n)``: ``n`` samples of shape (n, *shape), without an autograd graph unless
      ``grad=True`` (to differentiate through sampling);
    - ``log_prob(x)``: log-density (or a lower bound of it) in nats, shape (batch,).
    """

    config: dict[str, Any]

    def loss(self, x: Tensor, *, generator: torch.Generator | None = None) -> LossOutput: ...

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, grad: bool = False
    ) -> Tensor: ...

    def log_prob(self, x: Tensor) -> Tensor: ...
