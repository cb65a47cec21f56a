"""Closed-form Gaussian log-densities and KL divergences, summed over an example's dimensions.

Private module: the public names are re-exported by :mod:`probpath.likelihood`.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["gaussian_kl", "gaussian_log_prob", "standard_normal_log_prob"]


def gaussian_log_prob(
    x: Tensor,
    mean: Tensor | float = 0.0,
    var: Tensor | float = 1.0,
    *,
    dim: int | tuple[int, ...] | None = None,
) -> Tensor:
    """log N(x; mean, diag(var)) = -½ Σ [(x - mean)²/var + log(2π var)], summed over ``dim``.

    ``mean`` and ``var`` broadcast against ``x`` (a scalar variance is isotropic); ``dim``
    defaults to every dimension but the first (batch), giving shape (batch,).

    Example:
        >>> gaussian_log_prob(torch.zeros(1, 2), var=math.exp(-1))  # -log(2π) + 1
        tensor([-0.8379])
    """
    dims = tuple(range(1, x.dim())) if dim is None else dim
    log_norm = (
        torch.log(2 * math.pi * var) if isinstance(var, Tensor) else math.log(2 * math.pi * var)
    )
    return -0.5 * ((x - mean).pow(2) / var + log_norm).sum(dims)


def standard_normal_log_prob(z: Tensor) -> Tensor:
    """log N(z; 0, I) summed over the non-batch dimensions: -|z|²/2 - (d/2) log 2π
    (:func:`gaussian_log_prob` with its defaults).

    Example:
        >>> standard_normal_log_prob(torch.zeros(2, 2))
        tensor([-1.8379, -1.8379])
    """
    return gaussian_log_prob(z)


def gaussian_kl(
    mean_q: Tensor, var_q: Tensor | float, mean_p: Tensor | float, var_p: Tensor | float
) -> Tensor:
    """KL(N(mean_q, var_q I) || N(mean_p, var_p I)) summed over the non-batch dimensions.

    ``½ [d (r - 1 - log r) + |mean_q - mean_p|² / var_p]`` with ``r = var_q / var_p`` and d
    the dimension of one example (Bishop 2006, eq. 1.113 for isotropic Gaussians); the
    variances are scalars or one per example (batch,). ``r - 1 - log r`` is computed as
    ``δ - log1p(δ)``, ``δ = r - 1``, accurate when the variances nearly agree.

    Example:
        >>> gaussian_kl(torch.ones(1, 2), 1.0, 0.0, 1.0)  # |m|² / 2
        tensor([1.])
    """
    d = mean_q[0].numel()
    delta = torch.as_tensor(var_q / var_p, dtype=mean_q.dtype, device=mean_q.device) - 1
    sq = (mean_q - mean_p).flatten(1).pow(2).sum(1)
    return 0.5 * (d * (delta - torch.log1p(delta)) + sq / var_p)
