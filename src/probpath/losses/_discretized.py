"""The Gaussian discretized to the K grey levels of image data, the decoder of image models.

Pixels with K levels sit at ``2k/(K-1) - 1`` in model space (:func:`probpath.data.to_centered`);
a continuous density becomes a probability over them by giving each level its bin of width
``2/(K-1)`` (Ho et al. 2020, eq. 13). Private module: the public name is re-exported by
:mod:`probpath.losses`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probpath.data.image_set import level_width

__all__ = ["check_grid", "discretized_gaussian_log_prob"]


def _log_normal_bin(lo: Tensor, hi: Tensor) -> Tensor:
    """log(Phi(hi) - Phi(lo)) for standardised edges lo < hi, stable in both tails."""
    flip = lo > 0  # upper tail: Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log(-torch.expm1((log_a - log_b).clamp(max=0.0)))


def check_grid(x: Tensor, levels: int) -> None:
    """Raise unless ``x`` lies on the K-level grid of :func:`probpath.data.to_centered`."""
    if isinstance(levels, bool) or not isinstance(levels, int) or levels < 2:
        raise ValueError(f"levels (grey levels K) must be an int >= 2, got {levels!r}")
    k = (x + 1.0) / level_width(levels)  # the grey level, an integer on the grid
    on_grid = ((k - k.round()).abs() <= 1e-3) & (k.round() >= 0) & (k.round() <= levels - 1)
    if not bool(on_grid.all()):
        raise ValueError(
            f"the discretized decoder scores data on the grid of K = {levels} grey levels, "
            "2 k / (K - 1) - 1 (probpath.data.to_centered); got values off it: give the "
            "pixels themselves (not dequantized) and the data's number of levels"
        )


def discretized_gaussian_log_prob(x: Tensor, mean: Tensor, std: Tensor, levels: int) -> Tensor:
    r"""log P(x) of the Gaussian :math:`\mathcal N(\text{mean}, \text{std}^2 I)` discretized
    to the K = ``levels`` grid points ``x`` of [-1, 1]: per coordinate the mass of the bin
    :math:`[x - w/2, x + w/2]`, :math:`w = 2/(K-1)`, the bins of -1 and 1 reaching to
    :math:`\mp\infty`; summed over the non-batch dimensions, shape (batch,).

    Example:
        >>> grid = torch.linspace(-1, 1, 5)[:, None]  # every level of K = 5 in one batch
        >>> p = discretized_gaussian_log_prob(grid, torch.tensor(0.3), torch.tensor(0.4), 5)
        >>> round(p.exp().sum().item(), 6)  # the bins cover the line
        1.0
    """
    half = level_width(levels) / 2
    lo = torch.where(x <= -1 + half / 2, -torch.inf, (x - half - mean) / std)
    hi = torch.where(x >= 1 - half / 2, torch.inf, (x + half - mean) / std)
    return _log_normal_bin(lo, hi).reshape(x.shape[0], -1).sum(1)
