r"""Deterministic samplers: the probability-flow ODE with any solver, and EDM's Heun.

The probability-flow ODE (Song et al. 2021, eq. 13) of a Gaussian path is
``dx/dt = u(x, t) = alpha' E[x_0|x] + sigma' E[eps|x] = f x - g^2 s / 2`` (design.md,
"One idea"); integrating it from t = 1 to t ≈ 0 maps noise to data.

:func:`heun_edm` integrates the same ODE in the variables of Karras et al. 2022 (EDM,
Sec. 2–3): with ``x̂ = x / alpha`` and ``σ̂ = sigma / alpha`` (``σ̂ = e^{-λ/2}``, λ the log-SNR)
it reads ``dx̂/dσ̂ = eps(x, t)``, which is nearly linear in σ̂, and its second-order Heun
steps on the ρ = 7 grid of :func:`edm_times` reach good samples in a few dozen NFE.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from probpath._time import as_time
from probpath.paths import Schedule
from probpath.samplers._common import (
    Callback,
    Model,
    as_grid,
    call_model,
    check_state,
    decreasing_grid,
)
from probpath.solvers import FIXED_STEP_NFE, SolverStats, odeint

__all__ = ["edm_times", "heun_edm", "probability_flow"]


def probability_flow(
    model: Model,
    x: Tensor,
    ts: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    options: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    r"""Integrate ``dx/dt = model(x, t)`` (the PF-ODE drift, a velocity) along ``ts``.

    Any :func:`probpath.solvers.odeint` method: ``"dopri5"`` adaptive (only the ends of
    ``ts`` matter, the rest are output times) or a fixed-grid one stepping on ``ts``
    (``"euler"``, ``"heun"``, ``"midpoint"``, ``"rk4"``). Deterministic: ``generator`` is
    accepted for the uniform sampler signature and unused.

    Args:
        model: velocity ``model(x, t)`` (e.g. ``DiffusionModel.velocity``, the drift of
            :class:`probpath.sdes.ProbabilityFlowODE`, or a flow-matching field).
        x: prior samples at ``ts[0]``; ts: times from noise to data.
        method, rtol, atol, options: as :func:`probpath.solvers.odeint`.
        callback: ``callback(k, x(ts[k + 1]))`` for each output time after the first.

    Returns:
        ``(samples, nfe)``, the NFE counted by the solver.

    Example:
        >>> # u = x/2: x(0) = e^{-1/2} x(1) = 0.6065 x(1); one RK4 step, 4 NFE
        >>> x, nfe = probability_flow(lambda x, t: 0.5 * x, torch.ones(3, 2),
        ...                           torch.tensor([1.0, 0.0]), method="rk4")
        >>> nfe, round(x[0, 0].item(), 4)
        (4, 0.6068)
    """
    check_state(x)
    ts = as_time(as_grid(ts, x))  # one clock: times in [0, 1], checked once here

    def f(t: Tensor, y: Tensor) -> Tensor:
        return call_model(model, y, t)

    stats = SolverStats()
    out_t, opts = ts, dict(options or {})
    if callback is None and len(ts) > 2:  # keep two states, not one per step of the grid
        out_t = ts[[0, -1]]
        if method in FIXED_STEP_NFE and "step_size" not in opts:
            opts.setdefault("grid_points", ts)  # step on the grid, report its ends
    ys = odeint(f, x, out_t, method=method, rtol=rtol, atol=atol, options=opts, stats=stats)
    assert isinstance(ys, Tensor)
    if callback is not None:
        for k in range(1, len(ts)):
            callback(k - 1, ys[k])
    return ys[-1], stats.nfe


def _log_ratio(schedule: Schedule, t: Tensor) -> Tensor:
    """``log(sigma / alpha)`` at t: EDM's log σ̂, minus the half log-SNR."""
    return -schedule(t).half_log_snr


def edm_times(
    schedule: Schedule,
    steps: int,
    *,
    t_min: float = 1e-3,
    t_max: float = 1.0,
    rho: float = 7.0,
) -> Tensor:
    r"""EDM's time grid (Karras et al. 2022, eq. 5) for any Gaussian path, float64, (steps + 1,).

    ``σ̂_i = (σ̂_max^{1/ρ} + i/N (σ̂_min^{1/ρ} - σ̂_max^{1/ρ}))^ρ`` in ``σ̂ = sigma / alpha``
    between ``t_max`` and ``t_min``, mapped back to times by bisection (σ̂ increases with t).

    Example:
        >>> from probpath.paths import VESchedule
        >>> ts = edm_times(VESchedule(0.002, 80.0), 4, t_min=0.0)
        >>> VESchedule(0.002, 80.0)(ts).sigma.round(decimals=3).tolist()
        [80.0, 17.528, 2.515, 0.17, 0.002]
    """

    def spread(hi: Tensor, lo: Tensor, u: Tensor) -> Tensor:  # uniform in sigma_hat^(1/rho)
        hi_r, lo_r = torch.exp(hi / rho), torch.exp(lo / rho)
        return rho * torch.log(hi_r + u * (lo_r - hi_r))

    return _log_ratio_grid(schedule, steps, t_min, t_max, spread)


def _log_ratio_grid(
    schedule: Schedule,
    steps: int,
    t_min: float,
    t_max: float,
    spread: Callable[[Tensor, Tensor, Tensor], Tensor],
) -> Tensor:
    """``steps + 1`` times from ``t_max`` to ``t_min`` (float64) whose ``log(sigma/alpha)``
    are ``spread(at t_max, at t_min, u)`` for ``u = 0, 1/steps, ..., 1``: the grids of
    :func:`edm_times` and :func:`probpath.samplers.logsnr_times`."""
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be a positive int, got {steps!r}")
    if not 0 <= t_min < t_max <= 1:
        raise ValueError(f"need 0 <= t_min < t_max <= 1, got {t_min}, {t_max}")
    hi, lo = _log_ratio(schedule, torch.tensor([t_max, t_min], dtype=torch.float64))
    if not bool(torch.isfinite(hi) & torch.isfinite(lo)):
        raise ValueError(
            "sigma/alpha must be finite and positive at t_min and t_max; move them inside (0, 1)"
        )
    u = torch.arange(steps + 1, dtype=torch.float64) / steps
    ts = _times_at_log_ratio(schedule, spread(hi, lo, u), t_min, t_max)
    ts[0], ts[-1] = t_max, t_min
    return ts


def _times_at_log_ratio(schedule: Schedule, target: Tensor, t_min: float, t_max: float) -> Tensor:
    """The times in ``[t_min, t_max]`` where ``log(sigma/alpha) = target`` (minus the half
    log-SNR), by bisection (``sigma/alpha`` increases with t); float64, shaped like target."""
    lo, hi = torch.full_like(target, t_min), torch.full_like(target, t_max)
    for _ in range(60):  # bisection: 2^-60 of the interval, below float64 resolution
        mid = 0.5 * (lo + hi)
        above = _log_ratio(schedule, mid) > target
        hi, lo = torch.where(above, mid, hi), torch.where(above, lo, mid)
    return 0.5 * (lo + hi)


def heun_edm(
    model: Model,
    x: Tensor,
    ts: Tensor,
    *,
    schedule: Schedule,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    r"""Heun's second-order method on the PF-ODE in EDM variables (Karras et al. 2022, Alg. 1).

    With ``x̂ = x/alpha``, ``σ̂ = sigma/alpha`` and ``d_k = eps(x_k, t_k)``:

    .. math:: x̂' = x̂_k + (σ̂_{k+1} - σ̂_k)\,d_k,\qquad
              x̂_{k+1} = x̂_k + (σ̂_{k+1} - σ̂_k)\,\tfrac12\,(d_k + eps(alpha_{k+1} x̂', t_{k+1})).

    (The Euler step alone is DDIM, Song et al. 2021a.) Deterministic, no churn; two NFE
    per step; global error O(h²). Use :func:`edm_times` for the grid.

    Args:
        model: noise prediction ``model(x, t)`` (``DiffusionModel.eps``).
        x: prior samples at ``ts[0]``; ts: decreasing times; schedule: the path's schedule.
        generator: unused (deterministic); callback: ``callback(k, x_{k+1})``.

    Returns:
        ``(samples, nfe)`` with ``nfe = 2 (len(ts) - 1)``.

    Example:
        >>> from probpath.paths import VPSchedule
        >>> sch = VPSchedule()
        >>> x1 = torch.ones(1, 1, dtype=torch.float64)
        >>> # data N(0, I): eps(x, t) = sigma x and every x is a fixed point of the flow
        >>> for steps in (20, 40):  # second order: the error shrinks 4x per halving of h
        ...     x, nfe = heun_edm(lambda x, t: sch(t).sigma[:, None] * x, x1,
        ...                       edm_times(sch, steps), schedule=sch)
        ...     print(nfe, round(abs(x - x1).item(), 3))
        40 0.035
        80 0.008
    """
    check_state(x)
    ts = decreasing_grid(ts, x)
    s = schedule(ts)
    alpha, sig = s.alpha, s.sigma / s.alpha
    if not bool(torch.isfinite(sig).all()):
        raise ValueError("sigma/alpha is infinite at some t (alpha = 0): start below t = 1")
    xh = x / alpha[0]
    nfe = 0
    for k in range(len(ts) - 1):
        h = sig[k + 1] - sig[k]
        d = call_model(model, alpha[k] * xh, ts[k])
        xe = xh + h * d
        d2 = call_model(model, alpha[k + 1] * xe, ts[k + 1])
        xh = xh + 0.5 * h * (d + d2)
        nfe += 2
        if callback is not None:
            callback(k, alpha[k + 1] * xh)
    return alpha[-1] * xh, nfe
