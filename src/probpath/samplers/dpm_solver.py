r"""DPM-Solver (Lu et al. 2022a) and DPM-Solver++(2M) (Lu et al. 2022b): few-step solvers of
the probability-flow ODE in log-SNR time.

With :math:`\lambda_t = \log(\alpha_t / \sigma_t)` (half the log-SNR, decreasing in t) the
PF-ODE of a Gaussian path has a linear part that variation of constants solves exactly
(Lu et al. 2022a, eq. 3.4; 2022b, eq. 9): from ``s`` to ``t < s``, with
:math:`h = \lambda_t - \lambda_s > 0`,

.. math:: x_t = \frac{\alpha_t}{\alpha_s} x_s
              - \alpha_t \int_{\lambda_s}^{\lambda_t} e^{-\lambda}\hat\varepsilon\,d\lambda
            = \frac{\sigma_t}{\sigma_s} x_s
              + \sigma_t \int_{\lambda_s}^{\lambda_t} e^{\lambda}\hat x_0\,d\lambda .

Only the network term is approximated, by a Taylor expansion in λ: order 1 is DDIM,
:math:`x_t = \frac{\alpha_t}{\alpha_s} x_s - \sigma_t (e^h - 1)\hat\varepsilon(x_s, s)`;
singlestep orders 2 and 3 (:func:`dpm_solver`) evaluate the network at intermediate
times placed at fractions of h; DPM-Solver++(2M) (:func:`dpm_solver_pp`) extrapolates the
data prediction from the previous step, one NFE a step. The step grid is uniform in λ
(:func:`logsnr_times`). All coefficients are computed once in float64 before the loop.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from probpath.paths import Schedule
from probpath.samplers._common import Callback, Model, call_model, check_state, decreasing_grid
from probpath.samplers.ode import _log_ratio_grid, _times_at_log_ratio

__all__ = ["dpm_solver", "dpm_solver_pp", "logsnr_times"]


def logsnr_times(
    schedule: Schedule, steps: int, *, t_min: float = 1e-3, t_max: float = 1.0
) -> Tensor:
    r"""``steps + 1`` times from ``t_max`` to ``t_min`` equally spaced in λ = log(α/σ).

    The grid of Lu et al. 2022a (Sec. 3.3, "uniform logSNR"); float64, shape (steps + 1,).

    Example:
        >>> from probpath.paths import VESchedule
        >>> ts = logsnr_times(VESchedule(0.01, 100.0), 4, t_min=0.0)
        >>> VESchedule(0.01, 100.0)(ts).sigma.round(decimals=3).tolist()  # geometric
        [100.0, 10.0, 1.0, 0.1, 0.01]
    """
    return _log_ratio_grid(schedule, steps, t_min, t_max, lambda hi, lo, u: torch.lerp(hi, lo, u))


def _alpha_sigma_lambda(schedule: Schedule, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """alpha, sigma and λ = log(alpha/sigma) at the times ``t`` (float64)."""
    s = schedule(t.detach().to(torch.float64))
    alpha, sigma = s.alpha.to(torch.float64), s.sigma.to(torch.float64)
    if not bool((alpha > 0).all()) or not bool((sigma > 0).all()):
        raise ValueError(
            "alpha(t) and sigma(t) must be > 0 on the whole grid (log-SNR finite): keep ts "
            "inside (0, 1) on paths with alpha(1) = 0 or sigma(0) = 0"
        )
    return alpha, sigma, s.half_log_snr.to(torch.float64)


def _step(x: Tensor, c_x: float, terms: list[tuple[float, Tensor]]) -> Tensor:
    """``c_x x - sum_i c_i v_i``."""
    out = x.mul(c_x)
    for c, v in terms:
        out = out.add_(v, alpha=-c)
    return out


class _Singlestep(NamedTuple):
    """The coefficients of every step of singlestep DPM-Solver (host floats, computed once):
    ``alpha_t / alpha_s`` and ``sigma_t (e^h - 1)``; per intermediate fraction r of h, the
    times ``s_r``, ``alpha_{s_r} / alpha_s`` and ``sigma_{s_r} (e^{rh} - 1)``; at order 3, the
    weights of D_1 in u_2 and of D_2 in x_t (empty below order 3)."""

    a_ratio: list[float]
    phi: list[float]
    mid_t: list[list[Tensor]]
    mid_x: list[list[float]]
    mid_e: list[list[float]]
    c_u2: list[float]
    c_d2: list[float]


def _singlestep(schedule: Schedule, ts: Tensor, order: int) -> _Singlestep:
    """:class:`_Singlestep` of DPM-Solver-``order`` on the decreasing grid ``ts``."""
    alpha, sigma, lam = _alpha_sigma_lambda(schedule, ts)
    h = lam[1:] - lam[:-1]
    fractions = {1: (), 2: (0.5,), 3: (1 / 3, 2 / 3)}[order]
    mid_t, mid_x, mid_e = [], [], []
    for r in fractions:
        t_r = _times_at_log_ratio(schedule, -(lam[:-1] + r * h), float(ts[-1]), float(ts[0]))
        a_r, s_r, _ = _alpha_sigma_lambda(schedule, t_r)
        mid_t.append(list(t_r.to(ts).unbind()))
        mid_x.append((a_r / alpha[:-1]).tolist())
        mid_e.append((s_r * torch.expm1(r * h)).tolist())
    c_u2: list[float] = []
    c_d2: list[float] = []
    if order == 3:  # s_r is sigma at s_{r2}
        r1, r2 = fractions
        c_u2 = (s_r * r2 / r1 * (torch.expm1(r2 * h) / (r2 * h) - 1)).tolist()
        c_d2 = (sigma[1:] / r2 * (torch.expm1(h) / h - 1)).tolist()
    a_ratio, phi = (alpha[1:] / alpha[:-1]).tolist(), (sigma[1:] * torch.expm1(h)).tolist()
    return _Singlestep(a_ratio, phi, mid_t, mid_x, mid_e, c_u2, c_d2)


def dpm_solver(
    model: Model,
    x: Tensor,
    ts: Tensor,
    *,
    schedule: Schedule,
    order: int = 2,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    r"""Singlestep DPM-Solver-1, -2 or -3 (Lu et al. 2022a, Alg. 1 with r₁ = ½ and Alg. 2).

    On each step from ``s = ts[k]`` to ``t = ts[k+1]``, with ``h = λ_t - λ_s``,
    :math:`\varepsilon_0 = \hat\varepsilon(x, s)` and :math:`s_r` the time where
    ``λ = λ_s + r h``:

    - order 1 (DDIM): :math:`x_t = \frac{\alpha_t}{\alpha_s}x - \sigma_t(e^h-1)\varepsilon_0`;
    - order 2: :math:`u = \frac{\alpha_{s_{1/2}}}{\alpha_s}x - \sigma_{s_{1/2}}(e^{h/2}-1)
      \varepsilon_0`, then :math:`x_t = \frac{\alpha_t}{\alpha_s}x - \sigma_t(e^h-1)
      \hat\varepsilon(u, s_{1/2})`;
    - order 3 (r₁ = ⅓, r₂ = ⅔, :math:`D_i = \hat\varepsilon(u_i, s_{r_i}) - \varepsilon_0`):
      :math:`u_1` as u above at :math:`s_{r_1}`,
      :math:`u_2 = \frac{\alpha_{s_{r_2}}}{\alpha_s}x - \sigma_{s_{r_2}}(e^{r_2h}-1)
      \varepsilon_0 - \sigma_{s_{r_2}}\frac{r_2}{r_1}(\frac{e^{r_2h}-1}{r_2h}-1)D_1`,
      :math:`x_t = \frac{\alpha_t}{\alpha_s}x - \sigma_t(e^h-1)\varepsilon_0
      - \frac{\sigma_t}{r_2}(\frac{e^h-1}{h}-1)D_2`.

    Global error O(h^order); NFE = order × steps.

    Args:
        model: noise prediction ``model(x, t)`` (``DiffusionModel.eps``, or any kind through
            :func:`probpath.parametrize.convert_model`).
        x: prior samples at ``ts[0]``; ts: decreasing times (:func:`logsnr_times`).
        schedule: the path's schedule; order: 1, 2 or 3.
        generator: unused (deterministic); callback: ``callback(k, x_{k+1})``.

    Returns:
        ``(samples, nfe)`` with ``nfe = order (len(ts) - 1)``.

    Example:
        >>> from probpath.paths import VPSchedule
        >>> sch = VPSchedule()
        >>> x1 = torch.ones(1, 1, dtype=torch.float64)
        >>> eps = lambda x, t: sch(t).sigma[:, None] * x  # data N(0, I): x is a fixed point
        >>> for steps in (5, 10):  # third order: the error shrinks >= 8x per halving of h
        ...     x, nfe = dpm_solver(eps, x1, logsnr_times(sch, steps), schedule=sch, order=3)
        ...     print(nfe, f"{abs(x - x1).item():.1e}")
        15 3.1e-02
        30 1.9e-03
    """
    check_state(x)
    ts = decreasing_grid(ts, x)
    if order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    a_ratio, phi, mid_t, mid_x, mid_e, c_u2, c_d2 = _singlestep(schedule, ts, order)
    for k in range(len(ts) - 1):
        e0 = call_model(model, x, ts[k])
        if order == 1:
            x = _step(x, a_ratio[k], [(phi[k], e0)])
        elif order == 2:
            u = _step(x, mid_x[0][k], [(mid_e[0][k], e0)])
            x = _step(x, a_ratio[k], [(phi[k], call_model(model, u, mid_t[0][k]))])
        else:
            u1 = _step(x, mid_x[0][k], [(mid_e[0][k], e0)])
            d1 = call_model(model, u1, mid_t[0][k]) - e0
            u2 = _step(x, mid_x[1][k], [(mid_e[1][k], e0), (c_u2[k], d1)])
            d2 = call_model(model, u2, mid_t[1][k]) - e0
            x = _step(x, a_ratio[k], [(phi[k], e0), (c_d2[k], d2)])
        if callback is not None:
            callback(k, x)
    return x, order * (len(ts) - 1)


def dpm_solver_pp(
    model: Model,
    x: Tensor,
    ts: Tensor,
    *,
    schedule: Schedule,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    r"""DPM-Solver++(2M) in data prediction (Lu et al. 2022b, Alg. 2): one NFE a step.

    With :math:`\hat x_0^{(k)} = \hat x_0(x_k, t_k)`, :math:`h_k = λ_{t_{k+1}} - λ_{t_k}` and
    :math:`r_k = h_{k-1}/h_k`:

    .. math:: x_{k+1} = \frac{\sigma_{t_{k+1}}}{\sigma_{t_k}} x_k
              - \alpha_{t_{k+1}}(e^{-h_k} - 1)\,D_k,\qquad
              D_k = \hat x_0^{(k)} + \frac{\hat x_0^{(k)} - \hat x_0^{(k-1)}}{2 r_k},

    and :math:`D_0 = \hat x_0^{(0)}` (a first-order, DDIM, first step). Global error O(h²).

    Args:
        model: data prediction ``model(x, t) ≈ E[x_0 | x_t = x]`` (``DiffusionModel.x0``,
            or any kind through :func:`probpath.parametrize.convert_model`).
        x: prior samples at ``ts[0]``; ts: decreasing times (:func:`logsnr_times`).
        schedule: the path's schedule.
        generator: unused (deterministic); callback: ``callback(k, x_{k+1})``.

    Returns:
        ``(samples, nfe)`` with ``nfe = len(ts) - 1``.

    Example:
        >>> from probpath.paths import VPSchedule
        >>> sch = VPSchedule()
        >>> x1 = torch.ones(1, 1, dtype=torch.float64)
        >>> x0 = lambda x, t: sch(t).alpha[:, None] * x  # data N(0, I): x is a fixed point
        >>> for steps in (20, 40):  # second order: the error shrinks ~4x per halving of h
        ...     x, nfe = dpm_solver_pp(x0, x1, logsnr_times(sch, steps), schedule=sch)
        ...     print(nfe, f"{abs(x - x1).item():.1e}")
        20 1.3e-02
        40 3.5e-03
    """
    check_state(x)
    ts = decreasing_grid(ts, x)
    alpha, sigma, lam = _alpha_sigma_lambda(schedule, ts)
    h = lam[1:] - lam[:-1]
    s_ratio, psi = (sigma[1:] / sigma[:-1]).tolist(), (alpha[1:] * torch.expm1(-h)).tolist()
    half_inv_r = (h[1:] / (2 * h[:-1])).tolist()  # 1 / (2 r_k), k >= 1
    prev: Tensor | None = None
    for k in range(len(ts) - 1):
        x0 = call_model(model, x, ts[k])
        d = x0 if prev is None else x0 + (x0 - prev) * half_inv_r[k - 1]
        x = _step(x, s_ratio[k], [(psi[k], d)])
        prev = x0
        if callback is not None:
            callback(k, x)
    return x, len(ts) - 1
