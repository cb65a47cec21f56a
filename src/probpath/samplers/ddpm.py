r"""DDPM ancestral sampling and DDIM, on any Gaussian path and any grid of times.

Both samplers take an **epsilon-predictor** ``model(x, t) ~ E[eps | x_t = x]`` (convert
another parametrisation with :func:`probpath.parametrize.convert_model`) and walk a
decreasing grid ``ts = (t_0 > t_1 > ... > t_N)``, one network call per step, so
``nfe = N``. A step from ``t`` to ``s < t`` uses only the path's coefficients
``(alpha, sigma)`` at both ends, through the transition ``x_t | x_s ~ N(a x_s, v I)`` with

.. math:: a = \alpha_t / \alpha_s,\qquad v = \sigma_t^2 - a^2 \sigma_s^2,

which for the DDPM chain (:class:`probpath.paths.DiscreteSchedule`, ``t = i / T``,
``alpha(t)^2 = abar_i``) between neighbours is ``a^2 = alpha_i = 1 - beta_i``,
``v = beta_i``. On a coarser grid (respacing, Nichol & Dhariwal 2021, sec. 4) the same
formulas give the respaced chain. The posterior
:math:`q(x_s \mid x_t, x_0) = \mathcal N(\tilde\mu, \tilde\beta I)` has
:math:`\tilde\beta = v \sigma_s^2 / \sigma_t^2` (the seeds' ``beta~_t``).

With :math:`\hat x_0 = (x_t - \sigma_t\hat\varepsilon)/\alpha_t` every update here is
linear in :math:`(x_t, \hat\varepsilon, z)`, so the coefficients of all steps are computed
once, in float64, before the loop (fast: the per-step cost is the network call plus three
tensor operations).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from probpath._schedules import ScheduleOutput
from probpath.paths import Posterior, gaussian_posterior
from probpath.samplers._common import (
    Callback,
    Model,
    as_grid,
    check_state,
    decreasing_grid,
    linear_steps,
)

__all__ = ["ancestral", "ddim", "ddpm_timesteps"]

Variance = Literal["beta", "beta_tilde"]


Spacing = Literal["trailing", "leading", "linspace"]


def ddpm_timesteps(T: int, steps: int | None = None, *, spacing: Spacing = "trailing") -> Tensor:
    """The grid ``(i_0 / T > ... > i_{N-1} / T > 0)`` of ``steps`` chain indices, then 0.

    ``steps = None`` (or ``T``) is every index ``T, T - 1, ..., 1`` followed by ``0``: the
    full chain, whatever the spacing. Fewer steps choose the indices as in Lin et al. 2024
    ("Common diffusion noise schedules and sample steps are flawed", Table 2; diffusers'
    ``timestep_spacing``), ``k = 0 .. N - 1``:

    - ``"trailing"`` (default): ``i_k = round((N - k) T / N)``, so the first step starts at
      ``i = T`` (t = 1), the noise the chain was trained to end at;
    - ``"leading"``: ``i_k = 1 + floor((N - 1 - k) T / N)``, DDIM's "uniform" sub-sequence
      (Song et al. 2021, appendix D.2), which ends at ``i = 1`` but starts at
      ``1 + floor((N - 1) T / N)`` (0.901 for T = 1000, N = 10: the cosine chain's abar is
      0.024 there, not ~0);
    - ``"linspace"``: ``i_k = 1 + round((N - 1 - k) (T - 1) / (N - 1))``, from T down to 1.

    Float64, shape ``(steps + 1,)``. ``round`` takes exact halves to even (diffusers forms
    the same values with a float ``arange``/``linspace``, whose rounding can move an exact
    half by one ulp and so round it the other way).

    Example:
        >>> ddpm_timesteps(10, 5)
        tensor([1.0000, 0.8000, 0.6000, 0.4000, 0.2000, 0.0000], dtype=torch.float64)
        >>> ddpm_timesteps(10, 5, spacing="leading")
        tensor([0.9000, 0.7000, 0.5000, 0.3000, 0.1000, 0.0000], dtype=torch.float64)
        >>> ddpm_timesteps(10, 4, spacing="linspace")
        tensor([1.0000, 0.7000, 0.4000, 0.1000, 0.0000], dtype=torch.float64)
    """
    steps = T if steps is None else steps
    if not isinstance(T, int) or T < 1:
        raise ValueError(f"T must be a positive number of chain steps, got {T!r}")
    if not isinstance(steps, int) or not 1 <= steps <= T:
        raise ValueError(f"steps must be an int in 1..T = 1..{T}, got {steps!r}")
    k = torch.arange(steps, dtype=torch.float64)
    if spacing == "trailing":  # integers times T over N: exact halves stay exact
        idx = torch.round((steps - k) * T / steps)
    elif spacing == "leading":
        idx = 1 + torch.floor((steps - 1 - k) * T / steps)
    elif spacing == "linspace":
        idx = 1 + torch.round((steps - 1 - k) * (T - 1) / max(steps - 1, 1))
    else:
        raise ValueError(
            f"spacing must be 'trailing', 'leading' or 'linspace' (Lin et al. 2024), got "
            f"{spacing!r}"
        )
    return torch.cat([idx, idx.new_zeros(1)]) / T


def _grid(
    schedule: Callable[[Tensor], ScheduleOutput], ts: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor, Posterior]:
    """alpha, sigma at the start and end of every step of a strictly decreasing grid
    (:func:`decreasing_grid`) and the posterior of each step, float64."""
    s = schedule(ts.detach().to(torch.float64))
    alpha, sigma = s.alpha.to(torch.float64), s.sigma.to(torch.float64)
    if not bool((alpha[:-1] > 0).all()) or not bool((sigma[:-1] > 0).all()):
        raise ValueError(
            "alpha(t) and sigma(t) must be > 0 at every time where the model is called; "
            "start at t = 1 - eps on paths with alpha(1) = 0 (cosine, CondOT)"
        )
    a_t, a_s, s_t, s_s = alpha[:-1], alpha[1:], sigma[:-1], sigma[1:]
    return a_t, a_s, s_t, s_s, gaussian_posterior(a_t, s_t, a_s, s_s)


def ancestral(
    model: Model,
    x: Tensor,
    ts: Tensor,
    *,
    schedule: Callable[[Tensor], ScheduleOutput],
    variance: Variance = "beta_tilde",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    r"""Ancestral sampling of the reverse chain (Ho et al. 2020, Algorithm 2).

    .. math:: x_s = \frac{\alpha_s}{\alpha_t}\Big(x_t - \frac{v}{\sigma_t}
              \hat\varepsilon(x_t, t)\Big) + \sigma_{ts} z,

    i.e. :math:`\mu_\theta = \frac{1}{\sqrt{\alpha_i}}\big(x_i - \frac{\beta_i}
    {\sqrt{1 - \bar\alpha_i}}\hat\varepsilon\big)` on the DDPM chain (the seeds' step 2),
    the posterior mean :math:`\tilde\mu(x_t, \hat x_0)`. The noise variance
    :math:`\sigma_{ts}^2` is ``"beta_tilde"`` (:math:`\tilde\beta`, exact when the data is
    a point) or ``"beta"`` (:math:`v = \beta_i`, exact when the data is
    :math:`\mathcal N(0, I)`); Ho et al. found both to give similar samples. As in
    Algorithm 2 no noise is added on the last step when ``ts[-1] = 0``.

    Args:
        model: epsilon-predictor ``model(x, t)``, ``t`` of shape ``(batch,)``.
        x: starting points at ``ts[0]``, e.g. :math:`\mathcal N(0, I)` at t = 1.
        ts: decreasing times, shape ``(N + 1,)``; :func:`ddpm_timesteps` gives the chain's.
        schedule: the path, e.g. ``DiscreteSchedule(linear_betas(1000))``.
        variance: ``"beta_tilde"`` or ``"beta"``.
        generator: ``torch.Generator`` for the noise.
        callback: ``callback(k, x)`` after each step ``k = 0 .. N - 1``.

    Returns:
        ``(samples, nfe)`` with ``nfe = N``.

    Example:
        >>> from probpath.paths import DiscreteSchedule, linear_betas
        >>> chain = DiscreteSchedule(linear_betas(100, 1e-3, 0.2))
        >>> # data N(0, 1) gives E[eps | x_t] = sigma_t x_t (alpha^2 + sigma^2 = 1)
        >>> eps = lambda x, t: chain(t).sigma[:, None] * x
        >>> g = torch.Generator().manual_seed(0)
        >>> x, nfe = ancestral(eps, torch.randn(20000, 1, generator=g), ddpm_timesteps(100),
        ...                    schedule=chain, variance="beta", generator=g)
        >>> nfe, round(x.var().item(), 1)
        (100, 1.0)
    """
    check_state(x)
    ts = decreasing_grid(ts, x)
    if variance not in ("beta", "beta_tilde"):
        raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
    a_t, _, s_t, _, q = _grid(schedule, ts)
    noise_var = q.transition_var if variance == "beta" else q.var
    if float(ts[-1]) == 0.0:
        noise_var = torch.cat([noise_var[:-1], noise_var.new_zeros(1)])
    # the posterior mean c_0 x0_hat + c_t x_t at x0_hat = (x_t - sigma_t eps) / alpha_t
    coefs = (q.coef_xt + q.coef_x0 / a_t, -q.coef_x0 * s_t / a_t, noise_var.sqrt())
    return linear_steps(model, x, ts, coefs, generator, callback)


def ddim(
    model: Model,
    x: Tensor,
    ts: Tensor,
    *,
    schedule: Callable[[Tensor], ScheduleOutput],
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    r"""Denoising diffusion implicit model sampler (Song, Meng & Ermon 2021, eq. 12).

    .. math:: x_s = \alpha_s \hat x_0 + \sqrt{\sigma_s^2 - c^2}\,\hat\varepsilon + c\,z,
              \qquad c = \eta\,\sqrt{\tilde\beta} = \eta\,\frac{\sigma_s}{\sigma_t}\sqrt{v},

    on any decreasing sub-grid of times (any number of steps; :func:`ddpm_timesteps`).
    ``eta = 0`` is deterministic: the Euler step of the probability-flow ODE in the
    variables :math:`(x/\alpha, \sigma/\alpha)`, a near-invertible map x_1 <-> x_0.
    ``eta = 1`` on the full chain is :func:`ancestral` with ``variance="beta_tilde"``.

    Args:
        model: epsilon-predictor ``model(x, t)``, ``t`` of shape ``(batch,)``.
        x: starting points at ``ts[0]``.
        ts: decreasing times, shape ``(N + 1,)``. Increasing times run the deterministic
            map backwards (encoding data to noise), only with ``eta = 0``.
        schedule: the path.
        eta: stochasticity :math:`\eta \in [0, 1]`.
        generator: ``torch.Generator`` for the noise (``eta > 0``).
        callback: ``callback(k, x)`` after each step.

    Returns:
        ``(samples, nfe)`` with ``nfe = N``.

    Example:
        >>> from probpath.paths import DiscreteSchedule, linear_betas
        >>> chain = DiscreteSchedule(linear_betas(1000))
        >>> eps = lambda x, t: chain(t).sigma[:, None] * x  # data N(0, 1)
        >>> z = torch.randn(20000, 1, generator=torch.Generator().manual_seed(0))
        >>> x, nfe = ddim(eps, z, ddpm_timesteps(1000, 10), schedule=chain)
        >>> nfe, round(x.var().item(), 1)  # bias: var = prod_k cos^2(phi_t - phi_s) = 0.70
        (10, 0.7)
    """
    check_state(x)
    ts = as_grid(ts, x)
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must lie in [0, 1] (0 = DDIM, 1 = DDPM-like), got {eta}")
    if ts.numel() >= 2 and bool((ts[1:] > ts[:-1]).all()):
        if eta != 0.0:
            raise ValueError("increasing ts (encoding) needs the deterministic eta = 0")
        return _ddim_encode(model, x, ts, schedule, callback)
    ts = decreasing_grid(ts, x)
    a_t, a_s, s_t, s_s, q = _grid(schedule, ts)
    c = eta * q.var.sqrt()
    coefs = (a_s / a_t, (s_s**2 - c**2).clamp(min=0.0).sqrt() - a_s * s_t / a_t, c)
    return linear_steps(model, x, ts, coefs, generator, callback)


def _ddim_encode(
    model: Model,
    x: Tensor,
    ts: Tensor,
    schedule: Callable[[Tensor], ScheduleOutput],
    callback: Callback | None,
) -> tuple[Tensor, int]:
    """Deterministic DDIM from t_k to t_{k+1} > t_k, eps evaluated at the start t_k."""
    s = schedule(ts.detach().to(torch.float64))
    alpha, sigma = s.alpha.to(torch.float64), s.sigma.to(torch.float64)
    if not bool((alpha > 0).all()):
        raise ValueError("alpha(t) must be > 0 on the whole grid to encode with DDIM")
    a_from, a_to, s_from, s_to = alpha[:-1], alpha[1:], sigma[:-1], sigma[1:]
    coefs = (a_to / a_from, s_to - a_to * s_from / a_from, torch.zeros_like(a_to))
    return linear_steps(model, x, ts, coefs, None, callback)
