"""The standard 2-D toy sets, with seeded samplers and their densities.

Definitions follow FFJORD's ``lib/toy_data.py`` (Grathwohl et al., 2019), with every
random draw taken from an explicit ``torch.Generator``: the same seed gives the same
samples and no global RNG state is touched. Where FFJORD splits a batch into equal
deterministic parts (evenly spaced angles on ``rings``, half the batch per moon), the
sampler draws the part and the angle i.i.d. instead: the same law, sampled exactly.

The densities (:func:`toy_log_prob`) live in :mod:`probpath.data._toy_density`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from types import MappingProxyType
from typing import Literal, overload

import torch
from torch import Tensor

__all__ = ["TOY_CLASSES", "TOY_ENTROPY", "TOY_NAMES", "make_generator", "sample_toy"]

TOY_NAMES: tuple[str, ...] = (
    "8gaussians",
    "checkerboard",
    "2spirals",
    "moons",
    "pinwheel",
    "rings",
    "swissroll",
    "circles",
)

TOY_ENTROPY: MappingProxyType[str, float] = MappingProxyType(
    {
        "8gaussians": 2.834,
        "checkerboard": math.log(32.0),
        "circles": 3.268,
        "rings": 2.622,
        "moons": 2.392,
        "swissroll": 2.670,
        "2spirals": 2.645,
        "pinwheel": 2.305,
    }
)
"""Differential entropy (nats) of each set: the lowest test NLL any model can reach.

Source: ``/work/shared/toy-entropies.md`` (Monte Carlo of ``-log p`` with the exact or
quadrature density, standard error 0.002-0.01); ``checkerboard`` is exactly ``ln 32``.
"""

_SQRT1_2 = 1.0 / math.sqrt(2.0)
_8G_CENTERS = torch.tensor(
    [(1, 0), (-1, 0), (0, 1), (0, -1)]
    + [(sx * _SQRT1_2, sy * _SQRT1_2) for sx, sy in ((1, 1), (1, -1), (-1, 1), (-1, -1))],
    dtype=torch.float64,
) * (4.0 / 1.414)  # FFJORD scales by 4 then divides by 1.414 (not sqrt 2)
_8G_STD = 0.5 / 1.414
_RINGS_RADII = (3.0, 2.25, 1.5, 0.75)
_RINGS_STD = 0.08
_CIRCLES_RADII = (3.0, 1.5)  # sklearn make_circles(factor=0.5) times 3
_CIRCLES_STD = 0.24  # noise 0.08 added before the factor 3

TOY_CLASSES: MappingProxyType[str, int] = MappingProxyType(
    {"8gaussians": 8, "pinwheel": 5, "2spirals": 2, "moons": 2, "circles": 2, "rings": 4}
)
"""Number of classes K of each labelled set (``sample_toy(..., labels=True)`` gives 0..K-1)."""


def make_generator(seed: int | torch.Generator | None) -> torch.Generator:
    """A CPU ``torch.Generator`` from an int seed; a generator passes through.

    ``None`` gives a fresh, nondeterministically seeded generator (the global RNG is
    neither read nor advanced).

    >>> g = make_generator(0)
    >>> torch.equal(torch.rand(3, generator=g), torch.rand(3, generator=make_generator(0)))
    True
    """
    if isinstance(seed, torch.Generator):
        return seed
    g = torch.Generator()
    if seed is None:
        g.seed()
    elif isinstance(seed, int) and not isinstance(seed, bool):
        g.manual_seed(seed)
    else:
        raise TypeError(f"seed must be an int, a torch.Generator or None, got {type(seed)}")
    return g


def _randn(n: int, g: torch.Generator, d: int = 2) -> Tensor:
    return torch.randn(n, d, generator=g, dtype=torch.float64)


def _rand(n: int, g: torch.Generator, d: int = 1) -> Tensor:
    return torch.rand(n, d, generator=g, dtype=torch.float64)


def _choice(n: int, k: int, g: torch.Generator) -> Tensor:
    return torch.randint(k, (n,), generator=g)


def _unit(theta: Tensor) -> Tensor:
    return torch.stack([theta.cos(), theta.sin()], dim=-1)


def _rings(radii: tuple[float, ...], std: float, n: int, g: torch.Generator):
    y = _choice(n, len(radii), g)
    theta = 2 * math.pi * _rand(n, g)[:, 0]
    x = torch.tensor(radii, dtype=torch.float64)[y, None] * _unit(theta)
    return x + std * _randn(n, g), y


def _8gaussians(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    y = _choice(n, 8, g)
    return _8G_CENTERS[y] + _8G_STD * _randn(n, g), y


def _checkerboard(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    x1 = 4 * _rand(n, g)[:, 0] - 2
    x2 = _rand(n, g)[:, 0] - 2 * _choice(n, 2, g) + torch.floor(x1) % 2
    return 2 * torch.stack([x1, x2], dim=-1), torch.zeros(n, dtype=torch.long)


def _spiral_curve(s: Tensor) -> Tensor:
    """FFJORD's spiral arm before box noise and scaling: (-s cos s, s sin s)."""
    return torch.stack([-s.cos() * s, s.sin() * s], dim=-1)


def _2spirals(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    y = _choice(n, 2, g)
    s = _rand(n, g)[:, 0].sqrt() * 3 * math.pi  # sqrt(U) * 540 degrees
    arm = _spiral_curve(s) + 0.5 * _rand(n, g, 2)
    sign = 1.0 - 2.0 * y[:, None].double()
    return sign * arm / 3 + 0.1 * _randn(n, g), y


def _moon_curve(theta: Tensor, y: Tensor) -> Tensor:
    """sklearn make_moons arcs: (cos, sin) and (1 - cos, 0.5 - sin); then 2x - (1, 0.2)."""
    c = _unit(theta)
    lower = torch.stack([1 - c[..., 0], 0.5 - c[..., 1]], dim=-1)
    arc = torch.where(y[..., None] == 0, c, lower)
    return 2 * arc - torch.tensor([1.0, 0.2], dtype=torch.float64)


def _moons(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    y = _choice(n, 2, g)
    theta = math.pi * _rand(n, g)[:, 0]
    return _moon_curve(theta, y) + 0.2 * _randn(n, g), y


def _pinwheel(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    y = _choice(n, 5, g)
    f = _randn(n, g) * torch.tensor([0.3, 0.1], dtype=torch.float64)
    f[:, 0] += 1.0
    angle = 2 * math.pi * y.double() / 5 + 0.25 * f[:, 0].exp()
    c, s = angle.cos(), angle.sin()  # FFJORD: x_j = sum_i f_i R_ij, R = [[c, -s], [s, c]]
    x = torch.stack([f[:, 0] * c + f[:, 1] * s, -f[:, 0] * s + f[:, 1] * c], dim=-1)
    return 2 * x, y


def _swiss_curve(t: Tensor) -> Tensor:
    return torch.stack([t * t.cos(), t * t.sin()], dim=-1) / 5


def _swissroll(n: int, g: torch.Generator) -> tuple[Tensor, Tensor]:
    t = 1.5 * math.pi * (1 + 2 * _rand(n, g)[:, 0])  # sklearn make_swiss_roll, noise 1
    return _swiss_curve(t) + 0.2 * _randn(n, g), torch.zeros(n, dtype=torch.long)


_SAMPLERS: dict[str, Callable[[int, torch.Generator], tuple[Tensor, Tensor]]] = {
    "8gaussians": _8gaussians,
    "checkerboard": _checkerboard,
    "2spirals": _2spirals,
    "moons": _moons,
    "pinwheel": _pinwheel,
    "rings": lambda n, g: _rings(_RINGS_RADII, _RINGS_STD, n, g),
    "swissroll": _swissroll,
    "circles": lambda n, g: _rings(_CIRCLES_RADII, _CIRCLES_STD, n, g),
}


def _check_name(name: str) -> None:
    if name not in TOY_NAMES:
        raise ValueError(f"unknown toy set {name!r}; choose one of {', '.join(TOY_NAMES)}")


@overload
def sample_toy(
    name: str,
    n: int,
    *,
    generator: torch.Generator | int | None = ...,
    labels: Literal[False] = ...,
    dtype: torch.dtype = ...,
) -> Tensor: ...


@overload
def sample_toy(
    name: str,
    n: int,
    *,
    generator: torch.Generator | int | None = ...,
    labels: Literal[True],
    dtype: torch.dtype = ...,
) -> tuple[Tensor, Tensor]: ...


def sample_toy(
    name: str,
    n: int,
    *,
    generator: torch.Generator | int | None = None,
    labels: bool = False,
    dtype: torch.dtype = torch.float32,
) -> Tensor | tuple[Tensor, Tensor]:
    """Draw ``n`` i.i.d. points of shape (n, 2) from the toy set ``name``.

    With ``labels=True`` returns ``(x, y)`` with ``y`` (long, shape (n,)) the mixture
    component (``8gaussians``, 0..7), the arm (``pinwheel`` 0..4, ``2spirals`` 0..1),
    the class (``moons``, ``circles`` with 0 the outer circle) or the ring (``rings``, 0
    outermost). Sampling runs in float64 on the CPU, then casts to ``dtype``.

    >>> x = sample_toy("moons", 5, generator=0)
    >>> x.shape, torch.equal(x, sample_toy("moons", 5, generator=0))
    (torch.Size([5, 2]), True)
    >>> x, y = sample_toy("8gaussians", 4, generator=1, labels=True)
    >>> y.dtype
    torch.int64
    """
    _check_name(name)
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative int, got {n!r}")
    if labels and name not in TOY_CLASSES:
        raise ValueError(f"{name!r} has no labels; labelled sets: {', '.join(TOY_CLASSES)}")
    x, y = _SAMPLERS[name](n, make_generator(generator))
    x = x.to(dtype)
    return (x, y) if labels else x
