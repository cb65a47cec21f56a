r"""Reverse-SDE samplers of score-based models: Euler–Maruyama and predictor–corrector.

Both walk a decreasing time grid ``ts`` (t = 1 noise → t ≈ 0 data) of the reverse SDE
(Song et al. 2021, eq. 6; the seeds, lecture 13)

.. math:: dx = [f(t)\,x - g(t)^2\,s(x, t)]\,dt + g(t)\,d\bar w,\qquad dt < 0,

with ``f = alpha'/alpha`` and ``g^2`` from the path's schedule and ``s = model(x, t)`` a
score (convert other kinds with :func:`probpath.parametrize.convert_model`, or pass
``DiffusionModel.score``). What runs is :class:`probpath.sdes.ReverseSDE`'s drift and
diffusion: their coefficients are evaluated once on the grid (float64, one host read) and
each step is :func:`probpath.solvers.sdeint`'s Euler–Maruyama step of that object (in its
clock ``tau = -t``), written as the model call plus three fused operations.
"""

from __future__ import annotations

import torch
from torch import Tensor

from probpath._time import as_time
from probpath.paths import Schedule
from probpath.samplers._common import (
    Callback,
    Model,
    call_model,
    check_state,
    decreasing_grid,
    linear_step,
    linear_steps,
    sqnorm,
    ula_step,
)
from probpath.sdes import SDE, ReverseSDE

__all__ = ["predictor_corrector", "reverse_sde_euler"]


def _euler_maruyama(rev: ReverseSDE, ts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Per-step ``(c_x, c_s, c_z)`` of the Euler–Maruyama step of ``rev`` (the step of
    :func:`probpath.solvers.sdeint`) from ``t_k`` to ``t_{k+1}``: in ``tau = -t`` the step is
    :math:`h_k = t_k - t_{k+1} > 0` and
    :math:`x_{k+1} = x_k + h_k (c_y x_k + c_s s(x_k, t_k)) + g \sqrt{h_k} z_k` with ``rev``'s
    coefficients ``(c_y, c_s, g)`` at ``tau_k``; float64, computed once before the loop."""
    tau = -as_time(ts.detach().to(torch.float64))
    c_y, c_s, g = rev.coefficients(tau[:-1])
    if not bool((torch.isfinite(c_y) & torch.isfinite(c_s)).all()):
        raise ValueError(
            "the reverse SDE's coefficients f = alpha'/alpha and g^2 are not finite at some "
            "time of ts (alpha(t) = 0 there): start below t = 1 on paths with alpha(1) = 0"
        )
    h = tau[1:] - tau[:-1]
    return 1 + h * c_y, h * c_s, g * h.sqrt()


def reverse_sde_euler(
    model: Model,
    x: Tensor,
    ts: Tensor,
    *,
    schedule: Schedule,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    final_noise: bool = False,
) -> tuple[Tensor, int]:
    r"""Euler–Maruyama on the reverse SDE,
    :math:`x_{k+1} = x_k - [f x_k - g^2 s(x_k, t_k)]\,h_k + g\sqrt{h_k}\,z_k`,
    :math:`h_k = t_k - t_{k+1}`.

    Song et al. 2021 (Sec. 4.1, "Euler-Maruyama" baseline). Weak order 1: the law's bias is
    O(max h). Following the paper's code the last step adds no noise (it returns the mean
    of the last transition) unless ``final_noise``.

    Args:
        model: score ``model(x, t)`` ≈ ∇ log p_t(x), ``t`` of shape (batch,).
        x: samples of the prior at ``ts[0]``, shape (batch, ...).
        ts: strictly decreasing times, e.g. ``torch.linspace(1, 1e-3, steps + 1)``.
        schedule: the path's schedule (gives f and g²).
        generator: ``torch.Generator`` for the Brownian increments.
        callback: ``callback(k, x_{k+1})`` after each step.
        final_noise: add the Brownian increment on the last step too.

    Returns:
        ``(samples, nfe)`` with ``nfe = len(ts) - 1``.

    Example:
        >>> from probpath.paths import VPSchedule
        >>> g = torch.Generator().manual_seed(0)
        >>> x, nfe = reverse_sde_euler(lambda x, t: -x, torch.randn(4000, 1, generator=g),
        ...                            torch.linspace(1, 1e-3, 501), schedule=VPSchedule(),
        ...                            generator=g)
        >>> nfe, round(x.var().item(), 1)  # N(0, 1) data: the score is -x at every t
        (500, 1.0)
    """
    check_state(x)
    ts = decreasing_grid(ts, x)
    c_x, c_s, c_z = _euler_maruyama(SDE(schedule).reverse(model), ts)
    if not final_noise:
        c_z[-1] = 0.0
    return linear_steps(model, x, ts, (c_x, c_s, c_z), generator, callback)


def predictor_corrector(
    model: Model,
    x: Tensor,
    ts: Tensor,
    *,
    schedule: Schedule,
    snr: float = 0.16,
    n_corrector: int = 1,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    r"""Predictor–corrector sampling (Song et al. 2021, Algorithms 2–3, Sec. 4.2).

    At each time ``t_k``: ``n_corrector`` Langevin steps on :math:`s(\cdot, t_k)`
    :math:`x + \epsilon s + \sqrt{2\epsilon} z` (:func:`probpath.samplers.langevin` with
    ``eta = 2 epsilon``), each with the signal-to-noise rule
    :math:`\epsilon = 2 a_k (r \sqrt d / \overline{\|s\|})^2` (r = ``snr``, the score norm
    averaged over the batch, the noise norm by its typical value :math:`\sqrt d`;
    :math:`a_k = \alpha(t_{k+1})^2/\alpha(t_k)^2` is the paper's
    :math:`\alpha_i = 1 - \beta_i` for VP and 1 for VE), then one reverse-SDE
    Euler–Maruyama predictor step to ``t_{k+1}`` (noise-free on the last step).

    Args:
        model: score ``model(x, t)``; x, ts, schedule, generator, callback as
            :func:`reverse_sde_euler`.
        snr: the corrector's signal-to-noise ratio r (0.16 in the paper for VE; smaller
            values, e.g. 0.01–0.05, for VP).
        n_corrector: Langevin steps per time (0 gives :func:`reverse_sde_euler`).

    Returns:
        ``(samples, nfe)`` with ``nfe = (len(ts) - 1) (1 + n_corrector)``.

    Example:
        >>> from probpath.paths import VESchedule
        >>> sch, g = VESchedule(0.01, 10.0), torch.Generator().manual_seed(0)
        >>> score = lambda x, t: -x / (1 + sch(t).sigma[:, None] ** 2)  # data N(0, 1)
        >>> x0 = 10 * torch.randn(4000, 1, generator=g)
        >>> x, nfe = predictor_corrector(score, x0, torch.linspace(1, 0, 201), schedule=sch,
        ...                              generator=g)
        >>> nfe, round(x.var().item(), 1)
        (400, 1.0)
    """
    check_state(x)
    ts = decreasing_grid(ts, x)
    if not isinstance(n_corrector, int) or n_corrector < 0:
        raise ValueError(f"n_corrector must be an int >= 0, got {n_corrector!r}")
    if not snr > 0:
        raise ValueError(f"snr must be positive, got {snr}")
    c_x, c_s, c_z = _euler_maruyama(SDE(schedule).reverse(model), ts)
    c_z[-1] = 0.0
    alpha = schedule(ts.detach().to(torch.float64)).alpha
    ratios = ((alpha[1:] / alpha[:-1]) ** 2).tolist()
    coefs = [c.tolist() for c in (c_x, c_s, c_z)]
    n, nfe = len(ts) - 1, 0
    for k in range(n):
        t = ts[k]
        for _ in range(n_corrector):
            s = call_model(model, x, t)
            step = 2 * ratios[k] * (snr * x[0].numel() ** 0.5 / sqnorm(s).sqrt().mean()) ** 2
            x = ula_step(x, s, 2 * step, generator)  # one Langevin step of size 2 * step
            nfe += 1
        x = linear_step(model, x, t, coefs[0][k], coefs[1][k], coefs[2][k], generator)
        nfe += 1
        if callback is not None:
            callback(k, x)
    return x, nfe
