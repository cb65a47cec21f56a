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
[t_eps, 1 - t_eps]. The check reads one number back to the host; a sampler's step, whose
grid the sampler checked once, converts with ``check=False`` (no host read per step).
Near (but not at) an endpoint the results are exact but may be large. ``eps <-> score``
only rescales by sigma, so it stays defined where alpha = 0. The ``velocity`` itself is
infinite where sigma' is (VP paths at t = 0, where sigma ~ sqrt(beta_min t)); it is
returned as such.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Literal, get_args

import torch
from torch import Tensor

from probpath._schedules import ScheduleOutput, evaluate
from probpath._time import pad_like, shared_time

__all__ = [
    "Kind",
    "coefficients",
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


Coef = Tensor | float
"""A coefficient of the table: a tensor shaped like t, or a constant 0.0 / 1.0."""


def _check_divisor(den: Tensor, what: str) -> None:
    """Raise where ``den`` is 0 or not finite (one reduction and one host read)."""
    if den.numel() == 1:
        ok = 0.0 < abs(float(den)) < math.inf
    else:  # NaN propagates through aminmax and fails the comparisons
        lo, hi = torch.aminmax(den.detach().abs())
        ok = float(lo) > 0.0 and float(hi) < math.inf
    if not ok:
        raise ValueError(
            f"this conversion divides by {what}, which is 0 or infinite at some t "
            "(an endpoint of the path); clip t away from 0 and 1 or predict a kind that "
            "needs no division there"
        )


def _row(kind: str, c: ScheduleOutput) -> tuple[Coef, Coef, str]:
    """``(p, q, what)``: the prediction is ``p x_0 + q eps`` (the table of the module doc);
    ``what`` names the determinant ``alpha q - sigma p`` of recovering (x_0, eps) from it
    and x_t."""
    if kind == "x0":
        return 1.0, 0.0, "sigma"
    if kind == "eps":
        return 0.0, 1.0, "alpha"
    if kind == "v":
        return -c.sigma, c.alpha, "alpha^2 + sigma^2"
    return c.d_alpha, c.d_sigma, "alpha sigma' - sigma alpha'"


def coefficients(
    from_kind: str, to_kind: str, s: ScheduleOutput, *, check: bool = True
) -> tuple[Tensor, Tensor]:
    r"""``(A, B)`` with ``to = A x_t + B from``, shaped like the coefficients of ``s``:
    every conversion is this linear map (:func:`convert` applies it). ``check`` raises
    where a divisor is 0 or infinite (one host read); ``check=False`` skips it.

    With ``x_t = alpha x_0 + sigma eps`` and ``from = p x_0 + q eps`` (a 2x2 system of
    determinant ``D = alpha q - sigma p``), ``to = p' x_0 + q' eps`` is
    ``A = (p' q - q' p) / D``, ``B = (q' alpha - p' sigma) / D``. A score is
    ``-eps / sigma``: it enters as ``eps = -sigma score`` and leaves as ``-eps / sigma``.

    >>> import torch
    >>> s = ScheduleOutput(*torch.tensor([0.6, 0.8, -1.0, 0.75]))
    >>> coefficients("eps", "x0", s)  # x0 = (x_t - 0.8 eps) / 0.6
    (tensor(1.6667), tensor(-1.3333))
    """
    _check_kind(from_kind)
    _check_kind(to_kind)
    a, sg = s.alpha, s.sigma
    if {from_kind, to_kind} == {"eps", "score"}:  # a rescaling, defined where alpha = 0
        if to_kind == "score" and check:
            _check_divisor(sg, "sigma")
        return torch.zeros_like(sg), -1 / sg if to_kind == "score" else -sg
    scale_in = -sg if from_kind == "score" else 1.0
    score_out = to_kind == "score"
    from_kind, to_kind = ("eps" if k == "score" else k for k in (from_kind, to_kind))
    p, q, what = _row(from_kind, s)
    p2, q2, _ = _row(to_kind, s)
    det = a * q - sg * p
    if check:
        _check_divisor(det, what)
    coef_a, coef_b = (p2 * q - q2 * p) / det, (q2 * a - p2 * sg) / det * scale_in
    if score_out and check:
        _check_divisor(sg, "sigma")
    if score_out:
        coef_a, coef_b = -coef_a / sg, -coef_b / sg
    return coef_a, coef_b


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
    return convert(pred, kind, "x0", x_t, s), convert(pred, kind, "eps", x_t, s)


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
        _check_divisor(c.sigma, "sigma")
        return -eps / c.sigma
    if kind == "v":
        return c.alpha * eps - c.sigma * x0
    return c.velocity(x0, eps)


def convert(
    pred: Tensor,
    from_kind: str,
    to_kind: str,
    x_t: Tensor,
    s: ScheduleOutput,
    *,
    check: bool = True,
) -> Tensor:
    """Convert a prediction between kinds, through the (x_0, eps) hub.

    Every conversion is linear, ``to = A x_t + B pred`` with A, B functions of the
    schedule's coefficients only: they are formed on those (cheap when t is one time
    for the whole batch) and applied in at most two operations on the batch.
    ``eps <-> score`` is a pure rescaling (``s = -eps / sigma``), defined where alpha = 0.
    ``check``: see :func:`coefficients`.

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
    coef_a, coef_b = coefficients(from_kind, to_kind, s, check=check)
    return torch.addcmul(pred * pad_like(coef_b, x_t), pad_like(coef_a, x_t), x_t)


def convert_model(
    model: Callable[..., Tensor],
    schedule: Callable[[Tensor], ScheduleOutput],
    from_kind: str,
    to_kind: str,
    *,
    check: bool = True,
) -> Callable[..., Tensor]:
    """Wrap ``model(x, t, **cond)`` predicting ``from_kind`` into one predicting ``to_kind``.

    The wrapper has the model's own signature, so every sampler takes it unchanged. It
    does not range-check ``t`` (no host read per call); the samplers check their grids.
    ``check=False`` also skips the divisor check of :func:`coefficients`, the wrapper's
    one host read: what a sampler's step calls.

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
        # unchecked: no host read in a sampler's step (the samplers check their grids); a
        # batch of one repeated time (the samplers' t.expand(batch)) evaluated as one time:
        # 0.97x the EM sampling time of a 3x128 MLP model at batch 1000, 1 thread
        # (benchmarks/bench_sampler_overhead.py --tricks)
        s = evaluate(schedule, shared_time(t))
        return convert(model(x, t, **cond), from_kind, to_kind, x, s, check=check)

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
