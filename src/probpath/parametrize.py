"""Conversions between the five ways a network can predict along a Gaussian path.

With ``x_t = alpha x_0 + sigma eps`` (coefficients from a :class:`ScheduleOutput`)
every prediction is a linear function of the pair (x_0, eps), which is the hub:

============  ===================================  =========================================
kind          prediction                           source
============  ===================================  =========================================
``eps``       ``eps``                              Ho et al. 2020 (DDPM)
``x0``        ``x_0``                              Ramesh et al. 2022; Karras et al. 2022 (D)
``score``     ``-eps / sigma``                     Song et al. 2021 (s = grad log p_t)
``v``         ``alpha eps - sigma x_0``            Salimans & Ho 2022
``velocity``  ``alpha' x_0 + sigma' eps``          Lipman et al. 2023 (flow matching)
============  ===================================  =========================================

For VP paths (alpha^2 + sigma^2 = 1) ``v`` is Salimans & Ho's ``d x / d phi`` with
``phi = atan(sigma / alpha)``; for other paths we keep the same formula as the
definition, so (x_0, eps) are always recoverable from (v, x_t): the system has
determinant ``alpha^2 + sigma^2 > 0``. The seeds' ``s = -eps / sqrt(1 - abar_t)``
is the ``score`` row on the DDPM chain.

Endpoints: a conversion that must divide by alpha (eps/score -> x0, at t = 1 of
CondOT or cosine), by sigma (x0 -> eps, eps -> score, at t = 0) or by the
velocity determinant ``alpha sigma' - sigma alpha'`` raises ``ValueError`` where
that divisor is 0 or infinite, instead of returning inf/nan; clip t to
[t_eps, 1 - t_eps]. Near (but not at) an endpoint the results are exact but may be
large. ``eps <-> score`` only rescales by sigma, so it stays defined where alpha = 0.
The ``velocity`` itself is infinite where sigma' is (VP paths at t = 0, where
sigma ~ sqrt(beta_min t)); it is returned as such.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal, get_args

from torch import Tensor

from probpath._schedules import ScheduleOutput

__all__ = [
    "Kind",
    "convert",
    "convert_model",
    "eps_to_score",
    "eps_to_velocity",
    "eps_to_x0",
    "from_x0_eps",
    "score_to_eps",
    "to_x0_eps",
    "v_to_eps",
    "v_to_x0",
    "velocity_to_eps",
    "x0_to_eps",
]

Kind = Literal["eps", "x0", "score", "v", "velocity"]
KINDS: tuple[str, ...] = get_args(Kind)


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"unknown prediction kind {kind!r}; choose one of {KINDS}")


def _div(num: Tensor, den: Tensor, what: str) -> Tensor:
    bad = (den == 0) | ~den.isfinite()
    if bool(bad.any()):
        raise ValueError(
            f"this conversion divides by {what}, which is 0 or infinite at some t "
            "(an endpoint of the path); clip t away from 0 and 1 or predict a kind that "
            "needs no division there"
        )
    return num / den


def to_x0_eps(kind: str, pred: Tensor, x_t: Tensor, s: ScheduleOutput) -> tuple[Tensor, Tensor]:
    """Recover ``(x_0, eps)`` from a prediction of ``kind`` and ``x_t = alpha x_0 + sigma eps``.

    ``s`` holds the coefficients at t, with t's shape (batch,) or broadcastable to x_t.

    >>> import torch
    >>> s = ScheduleOutput(*torch.tensor([0.6, 0.8, -1.0, 0.75]))
    >>> x0, eps = torch.tensor([1.0]), torch.tensor([2.0])
    >>> x_t = 0.6 * x0 + 0.8 * eps
    >>> v = from_x0_eps("v", x0, eps, x_t, s)
    >>> x0_hat, eps_hat = to_x0_eps("v", v, x_t, s)
    >>> torch.allclose(x0_hat, x0), torch.allclose(eps_hat, eps)
    (True, True)
    """
    _check_kind(kind)
    c = s.expand_like(x_t)
    a, sg, da, ds = c.alpha, c.sigma, c.d_alpha, c.d_sigma
    if kind == "x0":
        return pred, _div(x_t - a * pred, sg, "sigma")
    if kind in ("eps", "score"):
        eps = pred if kind == "eps" else -sg * pred
        return _div(x_t - sg * eps, a, "alpha"), eps
    if kind == "v":
        norm = a**2 + sg**2
        return _div(a * x_t - sg * pred, norm, "alpha^2 + sigma^2"), (sg * x_t + a * pred) / norm
    det = a * ds - sg * da
    what = "alpha sigma' - sigma alpha'"
    return _div(ds * x_t - sg * pred, det, what), _div(a * pred - da * x_t, det, what)


def from_x0_eps(kind: str, x0: Tensor, eps: Tensor, x_t: Tensor, s: ScheduleOutput) -> Tensor:
    """The prediction of ``kind`` for a given pair ``(x_0, eps)`` (table in the module doc).

    ``x_t`` only fixes the shape the coefficients broadcast to (the prediction is a
    function of (x_0, eps) alone); it keeps the signature parallel to :func:`to_x0_eps`.

    >>> import torch
    >>> s = ScheduleOutput(*torch.tensor([0.5, 0.5, -1.0, 1.0]))
    >>> x0, eps = torch.tensor([1.0]), torch.tensor([3.0])
    >>> from_x0_eps("velocity", x0, eps, 0.5 * x0 + 0.5 * eps, s)
    tensor([2.])
    """
    _check_kind(kind)
    c = s.expand_like(x_t)
    if kind == "x0":
        return x0
    if kind == "eps":
        return eps
    if kind == "score":
        return _div(-eps, c.sigma, "sigma")
    if kind == "v":
        return c.alpha * eps - c.sigma * x0
    return c.d_alpha * x0 + c.d_sigma * eps


def convert(pred: Tensor, from_kind: str, to_kind: str, x_t: Tensor, s: ScheduleOutput) -> Tensor:
    """Convert a prediction between kinds, through the (x_0, eps) hub.

    ``eps <-> score`` is done directly (``s = -eps / sigma``) so that it stays
    defined where alpha = 0.

    >>> import torch
    >>> from probpath.paths import VPSchedule
    >>> s = VPSchedule()(torch.tensor([0.5]))
    >>> eps, x_t = torch.tensor([[1.0, -2.0]]), torch.tensor([[0.3, 0.1]])
    >>> score = convert(eps, "eps", "score", x_t, s)
    >>> torch.allclose(score, -eps / s.sigma)
    True
    """
    _check_kind(from_kind)
    _check_kind(to_kind)
    if from_kind == to_kind:
        return pred
    if {from_kind, to_kind} == {"eps", "score"}:
        sigma = s.expand_like(x_t).sigma
        return _div(-pred, sigma, "sigma") if to_kind == "score" else -sigma * pred
    x0, eps = to_x0_eps(from_kind, pred, x_t, s)
    return from_x0_eps(to_kind, x0, eps, x_t, s)


def convert_model(
    model: Callable[..., Tensor],
    schedule: Callable[[Tensor], ScheduleOutput],
    from_kind: str,
    to_kind: str,
) -> Callable[..., Tensor]:
    """Wrap ``model(x, t, **cond)`` predicting ``from_kind`` into one predicting ``to_kind``.

    The wrapper has the model's own signature, so every sampler takes it unchanged.

    >>> import torch
    >>> from probpath.paths import VESchedule
    >>> eps_model = lambda x, t: torch.zeros_like(x)
    >>> score_model = convert_model(eps_model, VESchedule(), "eps", "score")
    >>> score_model(torch.ones(2, 3), torch.full((2,), 0.5)).shape
    torch.Size([2, 3])
    """
    _check_kind(from_kind)
    _check_kind(to_kind)

    def wrapped(x: Tensor, t: Tensor, **cond: Any) -> Tensor:
        return convert(model(x, t, **cond), from_kind, to_kind, x, schedule(t))

    return wrapped


def eps_to_x0(eps: Tensor, x_t: Tensor, s: ScheduleOutput) -> Tensor:
    """``x_0 = (x_t - sigma eps) / alpha``."""
    return convert(eps, "eps", "x0", x_t, s)


def x0_to_eps(x0: Tensor, x_t: Tensor, s: ScheduleOutput) -> Tensor:
    """``eps = (x_t - alpha x_0) / sigma``."""
    return convert(x0, "x0", "eps", x_t, s)


def eps_to_score(eps: Tensor, x_t: Tensor, s: ScheduleOutput) -> Tensor:
    """``score = -eps / sigma`` (the seeds' ``s = -eps / sqrt(1 - abar_t)``).

    >>> import torch
    >>> s = ScheduleOutput(*torch.tensor([0.6, 0.8, -1.0, 0.75]))
    >>> eps_to_score(torch.tensor([0.4]), torch.tensor([0.0]), s)
    tensor([-0.5000])
    """
    return convert(eps, "eps", "score", x_t, s)


def score_to_eps(score: Tensor, x_t: Tensor, s: ScheduleOutput) -> Tensor:
    """``eps = -sigma score``."""
    return convert(score, "score", "eps", x_t, s)


def v_to_eps(v: Tensor, x_t: Tensor, s: ScheduleOutput) -> Tensor:
    """``eps = (sigma x_t + alpha v) / (alpha^2 + sigma^2)``."""
    return convert(v, "v", "eps", x_t, s)


def v_to_x0(v: Tensor, x_t: Tensor, s: ScheduleOutput) -> Tensor:
    """``x_0 = (alpha x_t - sigma v) / (alpha^2 + sigma^2)``."""
    return convert(v, "v", "x0", x_t, s)


def velocity_to_eps(u: Tensor, x_t: Tensor, s: ScheduleOutput) -> Tensor:
    """``eps = (alpha u - alpha' x_t) / (alpha sigma' - sigma alpha')``."""
    return convert(u, "velocity", "eps", x_t, s)


def eps_to_velocity(eps: Tensor, x_t: Tensor, s: ScheduleOutput) -> Tensor:
    """``u = alpha' x_0 + sigma' eps`` with ``x_0 = (x_t - sigma eps) / alpha``."""
    return convert(eps, "eps", "velocity", x_t, s)
