"""Sample-quality statistics, each with the noise floor it should be read against.

- two-sample statistics between model samples x (n, D) and data y (m, D): energy
  distance and MMD^2 (both unbiased U-statistics, zero in expectation when the laws
  agree, so small negative values occur), and the sliced Wasserstein distance;
- :func:`noise_floor`: the same statistic between two independent true samples of the
  same size, the smallest value a perfect model could show.

Pairwise sums run in row blocks (``chunk`` rows at a time), so 10k x 10k samples never
hold an n x m matrix; all sums accumulate in float64.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from probpath.data.toy import make_generator

__all__ = [
    "NoiseFloor",
    "energy_distance",
    "median_bandwidth",
    "mmd2",
    "noise_floor",
    "sliced_wasserstein",
]

_CHUNK = 1024


def _as_pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1]:
        raise ValueError(
            f"x and y must be (n, D) and (m, D), got {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if x.shape[0] < 2 or y.shape[0] < 2:
        raise ValueError("U-statistics need at least 2 points in each sample")
    return x.detach().to(torch.float64), y.detach().to(x.device, torch.float64)


def _pair_sum(a: Tensor, b: Tensor, fn: Callable[[Tensor], Tensor], chunk: int) -> Tensor:
    """sum_ij fn(|a_i - b_j|), accumulated over row blocks of ``a``. Distances are
    computed directly, not as |a|^2 - 2 a.b + |b|^2, which loses ~1e-8 near 0."""
    total = torch.zeros((), dtype=torch.float64, device=a.device)
    for blk in a.split(chunk):
        d = torch.cdist(blk, b, compute_mode="donot_use_mm_for_euclid_dist")
        total = total + fn(d).sum()
    return total


def _identity(d: Tensor) -> Tensor:
    return d


def energy_distance(x: Tensor, y: Tensor, *, chunk: int = _CHUNK) -> float:
    """Unbiased (U-statistic) squared energy distance (Székely & Rizzo 2013):

    E^2 = 2 mean_ij |x_i - y_j| - mean_{i != i'} |x_i - x_i'| - mean_{j != j'} |y_j - y_j'|.

    Zero iff the laws agree; its estimate is unbiased, so it can dip slightly below 0.

    >>> x, y = torch.tensor([[0.0], [0.0]]), torch.tensor([[1.0], [1.0]])
    >>> energy_distance(x, y)
    2.0
    """
    x, y = _as_pair(x, y)
    n, m = x.shape[0], y.shape[0]
    cross = _pair_sum(x, y, _identity, chunk) / (n * m)
    xx = _pair_sum(x, x, _identity, chunk) / (n * (n - 1))  # the diagonal adds |x_i - x_i| = 0
    yy = _pair_sum(y, y, _identity, chunk) / (m * (m - 1))
    return float(2 * cross - xx - yy)


def median_bandwidth(x: Tensor, y: Tensor, *, max_points: int = 1000) -> float:
    """Median heuristic: the median pairwise distance of the pooled sample (Gretton et al.
    2012), from its first ``max_points`` points (deterministic, O(max_points^2))."""
    z = torch.cat([x[: max_points // 2], y[: max_points // 2]]).detach().to(torch.float64)
    d = torch.pdist(z)
    h = float(d.median()) if d.numel() else 0.0
    if not h > 0:
        raise ValueError("median pairwise distance is 0; pass an explicit bandwidth")
    return h


def mmd2(x: Tensor, y: Tensor, *, bandwidth: float | None = None, chunk: int = _CHUNK) -> float:
    """Unbiased MMD^2 with the RBF kernel k(a, b) = exp(-|a - b|^2 / (2 h^2)) (Gretton et
    al. 2012, eq. 3):

    MMD_u^2 = mean_{i != i'} k(x_i, x_i') + mean_{j != j'} k(y_j, y_j') - 2 mean_ij k(x_i, y_j),

    with h from :func:`median_bandwidth` unless given.

    >>> x = torch.tensor([[0.0], [0.0]]); y = torch.tensor([[50.0], [50.0]])
    >>> round(mmd2(x, y, bandwidth=1.0), 6)
    2.0
    """
    x, y = _as_pair(x, y)
    h = median_bandwidth(x, y) if bandwidth is None else float(bandwidth)
    if not h > 0:
        raise ValueError(f"bandwidth must be positive, got {h}")
    n, m = x.shape[0], y.shape[0]

    def k(d: Tensor) -> Tensor:
        return torch.exp(-d.square() / (2 * h * h))

    xx = (_pair_sum(x, x, k, chunk) - n) / (n * (n - 1))  # drop the diagonal k(x_i, x_i) = 1
    yy = (_pair_sum(y, y, k, chunk) - m) / (m * (m - 1))
    return float(xx + yy - 2 * _pair_sum(x, y, k, chunk) / (n * m))


def _wasserstein_1d_pp(a: Tensor, b: Tensor, p: float) -> Tensor:
    """W_p^p between the empirical laws of the columns of a (n, L) and b (m, L): the
    integral over u in [0, 1) of |Q_a(u) - Q_b(u)|^p, exact for step quantile functions
    (breakpoints i/n and j/m, kept as integers over the common denominator n m)."""
    n, m = a.shape[0], b.shape[0]
    a, b = a.sort(dim=0).values, b.sort(dim=0).values
    brk = torch.cat([torch.arange(n) * m, torch.arange(m) * n]).unique(sorted=True)
    width = torch.diff(brk, append=torch.tensor([n * m])).to(torch.float64) / (n * m)
    qa, qb = a[(brk // m).to(a.device)], b[(brk // n).to(b.device)]
    return ((qa - qb).abs().pow(p) * width.to(a.device)[:, None]).sum(0)


def sliced_wasserstein(
    x: Tensor,
    y: Tensor,
    *,
    projections: int = 128,
    p: float = 2.0,
    generator: torch.Generator | int | None = None,
) -> float:
    """Sliced Wasserstein distance (Bonneel et al. 2015):

    SW_p(x, y) = ( mean_l W_p^p(<theta_l, x>, <theta_l, y>) )^(1/p),  theta_l ~ U(S^{D-1}),

    with each 1-D W_p exact between the empirical laws (any sizes n, m). In 1-D every
    theta is +-1 and SW_p is the exact W_p.

    >>> sliced_wasserstein(torch.tensor([[0.0], [1.0]]), torch.tensor([[2.0], [3.0]]))
    2.0
    """
    if x.ndim != 2 or y.ndim != 2 or x.shape[1] != y.shape[1] or not len(x) or not len(y):
        raise ValueError(
            f"x and y must be non-empty (n, D), (m, D): {tuple(x.shape)}, {tuple(y.shape)}"
        )
    if p < 1:
        raise ValueError(f"p must be >= 1, got {p}")
    g = make_generator(generator)
    theta = torch.randn(x.shape[1], projections, generator=g, dtype=torch.float64)
    theta = (theta / theta.norm(dim=0, keepdim=True)).to(x.device)
    x64, y64 = x.detach().to(torch.float64), y.detach().to(x.device, torch.float64)
    return float(_wasserstein_1d_pp(x64 @ theta, y64 @ theta, p).mean() ** (1 / p))


@dataclass(frozen=True)
class NoiseFloor:
    """A statistic between independent true samples: its mean, std and the values."""

    mean: float
    std: float
    values: tuple[float, ...]


def noise_floor(
    statistic: Callable[[Tensor, Tensor], float],
    sampler: Callable[[int, torch.Generator], Tensor],
    n: int,
    *,
    repeats: int = 5,
    generator: torch.Generator | int | None = 0,
) -> NoiseFloor:
    """``statistic(y1, y2)`` for ``repeats`` pairs of independent samples of size ``n``
    from the true law (``sampler(n, generator)``): the value a perfect model reaches.
    A model's statistic within about ``mean + 2 std`` of it is indistinguishable from
    the data at this sample size.

    >>> from probpath.data import sample_toy
    >>> nf = noise_floor(mmd2, lambda n, g: sample_toy("moons", n, generator=g), 200)
    >>> abs(nf.mean) < 0.01
    True
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    g = make_generator(generator)
    vals = tuple(float(statistic(sampler(n, g), sampler(n, g))) for _ in range(repeats))
    t = torch.tensor(vals, dtype=torch.float64)
    return NoiseFloor(float(t.mean()), float(t.std()) if repeats > 1 else 0.0, vals)
