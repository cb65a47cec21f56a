"""Likelihood metrics: NLL in nats, bits per dimension, the 8-bit dequantisation offset.

The discrete bound itself (uniform and importance-weighted dequantization) is
:func:`probpath.dequantization.discrete_nll`.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

__all__ = ["bits_per_dim", "dequantized_bits_per_dim", "mean_nll"]


def bits_per_dim(nll_nats: float | Tensor, dim: int) -> float | Tensor:
    """bits/dim = NLL / (D ln 2), for an NLL in nats per example of dimension D.

    >>> round(bits_per_dim(2 * math.log(2.0), 2), 6)
    1.0
    """
    if dim <= 0:
        raise ValueError(f"dim must be positive, got {dim}")
    return nll_nats / (dim * math.log(2.0))


def dequantized_bits_per_dim(
    nll_nats: float | Tensor, dim: int, *, scale: float = 1.0 / 256
) -> float | Tensor:
    """bits/dim of 8-bit data on its own [0, 256) scale, from an NLL on the model's scale.

    A model of y = scale * x (e.g. x + U[0, 1) dequantised 8-bit values, y = x / 256 in
    [0, 1)) has log p_x(x) = log p_y(y) + D log(scale), so
    NLL_x = NLL_y - D log(scale) and bits/dim = NLL_x / (D ln 2); for scale = 1/256 this
    adds exactly 8 bits/dim (Theis et al. 2016; Papamakarios et al. 2017). It upper-bounds
    the discrete model's bits/dim. Further affine maps (e.g. a
    :class:`~probpath.data.Standardizer`) add their own ``-log_abs_det_jacobian()``.

    >>> round(dequantized_bits_per_dim(0.0, 64), 6)
    8.0
    """
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale}")
    return bits_per_dim(nll_nats - dim * math.log(scale), dim)


def mean_nll(
    log_prob: Callable[[Tensor], Tensor], x: Tensor, *, batch_size: int = 4096
) -> tuple[float, float]:
    """Mean NLL (nats) of ``x`` under ``log_prob`` and its standard error, in batches
    under ``torch.no_grad()``: (-mean log p, std(log p) / sqrt(n)).

    >>> def log_normal(z):
    ...     return -0.5 * z.pow(2).sum(-1) - math.log(2 * math.pi)
    >>> round(mean_nll(log_normal, torch.zeros(4, 2))[0], 4)
    1.8379
    """
    with torch.no_grad():
        lp = torch.cat([log_prob(b).to(torch.float64).reshape(-1) for b in x.split(batch_size)])
    if lp.numel() != x.shape[0]:
        raise ValueError(f"log_prob returned {lp.numel()} values for {x.shape[0]} points")
    se = float(lp.std() / math.sqrt(lp.numel())) if lp.numel() > 1 else float("nan")
    return -float(lp.mean()), se
