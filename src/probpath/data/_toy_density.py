"""Log-densities of the 2-D toy sets of :mod:`probpath.data.toy`.

Densities: exact for ``8gaussians`` (a Gaussian mixture), ``checkerboard`` (uniform on
8 squares, ``ln(1/32)`` inside) and ``rings``/``circles`` (a ring blurred by an
isotropic Gaussian has the closed form below); for ``moons``, ``swissroll`` and
``2spirals`` a 1-D quadrature along the curve whose error (midpoint rule, ``O(h^2)``)
is far below Monte Carlo noise; for ``pinwheel`` the change of variables through
FFJORD's map, whose inverse is a scalar root found numerically (bracket + Newton).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from probpath.data.toy import (
    _8G_CENTERS,
    _8G_STD,
    _CIRCLES_RADII,
    _CIRCLES_STD,
    _RINGS_RADII,
    _RINGS_STD,
    _check_name,
    _moon_curve,
    _spiral_curve,
    _swiss_curve,
)

__all__ = ["toy_log_prob"]


def _log_normal2(sq_dist: Tensor, std: float) -> Tensor:
    return -sq_dist / (2 * std**2) - math.log(2 * math.pi * std**2)


def _log_ring(r: Tensor, radius: float, std: float) -> Tensor:
    """log of N(0, std^2 I) convolved with the uniform law on a circle of ``radius``:

    p(x) = exp(-(r^2 + R^2) / 2 std^2) I_0(r R / std^2) / (2 pi std^2), with
    I_0(z) = i0e(z) e^z for stability (the angular average, DLMF 10.32.1).
    """
    z = r * radius / std**2
    return _log_normal2((r - radius) ** 2, std) + torch.special.i0e(z).log()


def _log_mixture_of_rings(x: Tensor, radii: tuple[float, ...], std: float) -> Tensor:
    r = x.norm(dim=-1)
    logs = torch.stack([_log_ring(r, rad, std) for rad in radii], dim=-1)
    return torch.logsumexp(logs, dim=-1) - math.log(len(radii))


def _midpoints(lo: float, hi: float, k: int) -> Tensor:
    return lo + (hi - lo) * (torch.arange(k, dtype=torch.float64) + 0.5) / k


def _log_curve_quadrature(x: Tensor, log_kernel: Callable[[Tensor], Tensor], k: int) -> Tensor:
    """log of (1/k) sum_j kernel_j(x), in chunks of points to bound memory."""
    out = [torch.logsumexp(log_kernel(xc), dim=-1) for xc in x.split(1024)]
    return torch.cat(out) - math.log(k)


def _gaussian_kernel(centers: Tensor, std: float) -> Callable[[Tensor], Tensor]:
    """z (m, 2) -> log N(z_i; c_j, std^2 I), shape (m, k), via |z|^2 - 2 z.c + |c|^2."""
    c2 = centers.pow(2).sum(-1)
    return lambda z: _log_normal2(
        (z.pow(2).sum(-1, keepdim=True) - 2 * z @ centers.T + c2).clamp_min(0), std
    )


def _log_moons(x: Tensor, k: int = 512) -> Tensor:
    theta = _midpoints(0.0, math.pi, k)
    ys = torch.cat([torch.zeros(k, dtype=torch.long), torch.ones(k, dtype=torch.long)])
    centers = _moon_curve(theta.repeat(2), ys)
    return _log_curve_quadrature(x, _gaussian_kernel(centers, 0.2), 2 * k)


def _log_swissroll(x: Tensor, k: int = 2048) -> Tensor:
    centers = _swiss_curve(_midpoints(1.5 * math.pi, 4.5 * math.pi, k))
    return _log_curve_quadrature(x, _gaussian_kernel(centers, 0.2), k)


def _log_2spirals(x: Tensor, k: int = 1024) -> Tensor:
    """s = 3 pi sqrt(U) has density 2s / (3 pi)^2: quadrature in u = s^2/(3 pi)^2 instead,
    uniform on [0, 1]. Given s and the arm, each coordinate is a uniform of width 1/6
    plus N(0, 0.1^2): density (Phi((v - lo)/0.1) - Phi((v - hi)/0.1)) * 6."""
    s = _midpoints(0.0, 1.0, k).sqrt() * 3 * math.pi
    lo = torch.cat([_spiral_curve(s) / 3, -(_spiral_curve(s) + 0.5) / 3])  # (2k, 2)
    hi = lo + 0.5 / 3

    def kernel(z: Tensor) -> Tensor:
        z = z[:, None, :]
        p = torch.special.ndtr((z - lo) / 0.1) - torch.special.ndtr((z - hi) / 0.1)
        return (6 * p).log().sum(-1)

    return _log_curve_quadrature(x, kernel, 2 * k)


def _log_pinwheel(x: Tensor, k: int = 2048) -> Tensor:
    """Change of variables through FFJORD's map x = 2 R(-a(f_0)) f, a = 2 pi j/5 + e^{f_0}/4,
    f ~ N((1, 0), diag(0.3^2, 0.1^2)): with w = x/2 = r (cos phi, sin phi), f = R(a) w, so
    f_0 solves h(f_0) = f_0 - r cos(phi + a(f_0)) = 0, f_1 = r sin(phi + a(f_0)), and
    |det dx/df| = 4 |1 + a'(f_0) f_1| = 4 |h'(f_0)|. Roots are bracketed on a grid of
    ``k`` values of f_0 over the mean +- 10 std, refined by two Newton steps, and summed
    over arms and roots. Points whose f_0 would lie beyond 10 std get -inf."""
    f0 = torch.linspace(-2.0, 4.0, k, dtype=torch.float64)
    rads = 2 * math.pi * torch.arange(5, dtype=torch.float64) / 5
    out = []
    for w in (x / 2).split(256):
        r, phi = w.norm(dim=-1), torch.atan2(w[:, 1], w[:, 0])
        base = (phi[:, None] + rads)[..., None]  # (m, 5, 1)
        h = f0 - r[:, None, None] * torch.cos(base + 0.25 * f0.exp())
        neg = h < 0
        i, j, g = (neg[..., :-1] != neg[..., 1:]).nonzero(as_tuple=True)
        h0, h1 = h[i, j, g], h[i, j, g + 1]
        t = f0[g] - h0 * (f0[g + 1] - f0[g]) / (h1 - h0)  # secant in the bracket
        b, ri = base[i, j, 0], r[i]
        for _ in range(2):  # Newton on h
            th = b + 0.25 * t.exp()
            t = t - (t - ri * th.cos()) / (1 + 0.25 * t.exp() * ri * th.sin())
        th = b + 0.25 * t.exp()
        f1 = ri * th.sin()
        jac = (1 + 0.25 * t.exp() * f1).abs()
        lp = (
            _log_normal2(((t - 1) / 0.3) ** 2 + (f1 / 0.1) ** 2, 1.0)
            - math.log(0.3 * 0.1)
            - (4 * jac).log()
            - math.log(5.0)
        )
        mx = torch.full_like(r, -math.inf).scatter_reduce(0, i, lp, "amax")
        tot = torch.zeros_like(r).index_add(0, i, (lp - mx[i]).exp())
        out.append(mx + tot.log())
    return torch.cat(out)


def _log_checkerboard(x: Tensor) -> Tensor:
    inside = (x >= -4).all(-1) & (x < 4).all(-1) & (torch.floor(x / 2).sum(-1) % 2 == 0)
    return torch.full_like(x[:, 0], -math.inf).masked_fill(inside, -math.log(32.0))


_LOG_PROBS: dict[str, Callable[[Tensor], Tensor]] = {
    "8gaussians": lambda x: (
        torch.logsumexp(_log_normal2((x[:, None, :] - _8G_CENTERS).pow(2).sum(-1), _8G_STD), dim=-1)
        - math.log(8.0)
    ),
    "checkerboard": _log_checkerboard,
    "rings": lambda x: _log_mixture_of_rings(x, _RINGS_RADII, _RINGS_STD),
    "circles": lambda x: _log_mixture_of_rings(x, _CIRCLES_RADII, _CIRCLES_STD),
    "moons": _log_moons,
    "swissroll": _log_swissroll,
    "2spirals": _log_2spirals,
    "pinwheel": _log_pinwheel,
}


def toy_log_prob(name: str, x: Tensor) -> Tensor:
    """Log-density (nats) of the toy set ``name`` at points ``x`` of shape (n, 2).

    Exact for ``8gaussians`` (log of (1/8) sum_k N(x; mu_k, 0.354^2 I)),
    ``checkerboard`` (``-ln 32`` inside the 8 squares, ``-inf`` outside), ``rings`` and
    ``circles`` (Bessel closed form); midpoint quadrature along the curve for ``moons``,
    ``swissroll`` and ``2spirals``; change of variables with a numerical inverse for
    ``pinwheel``. Computed in float64 on the CPU, returned in ``x``'s
    dtype and device; differentiable, so ``torch.autograd.grad`` gives the score.

    >>> x = torch.tensor([[1.0, -3.0], [1.0, 3.0]])
    >>> toy_log_prob("checkerboard", x)
    tensor([-3.4657,    -inf])
    """
    _check_name(name)
    if x.ndim != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (n, 2), got {tuple(x.shape)}")
    return _LOG_PROBS[name](x.to("cpu", torch.float64)).to(x.device, x.dtype)
