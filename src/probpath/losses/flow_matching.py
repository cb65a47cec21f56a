"""Flow matching: regress a velocity field on a Gaussian path's conditional velocity."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from probpath._batch import check_state
from probpath._schedules import interpolate
from probpath._time import as_time
from probpath.losses._common import Reduction, _check_out, _reduce, _sqnorm
from probpath.paths import GaussianPath

__all__ = ["conditional_flow_matching"]


def conditional_flow_matching(
    velocity: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    path: GaussianPath,
    *,
    x1: Tensor | None = None,
    t: Tensor | None = None,
    t_min: float = 0.0,
    generator: torch.Generator | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Conditional flow matching, :math:`\mathbb{E}_{t, x_0, x_1}
    \|u_\theta(x_t, t) - (\alpha'(t) x_0 + \sigma'(t) x_1)\|^2`,
    :math:`x_t = \alpha(t) x_0 + \sigma(t) x_1`.

    The seeds' flow-matching objective :math:`\mathbb{E}_t\mathbb{E}_{x\sim p_t}
    \|u(x, t) - u_\theta(x, t)\|^2` (lecture 13) needs the unknown marginal field u. Lipman
    et al. (2023, Theorem 2) replace it by the conditional velocity of
    :meth:`~probpath.paths.GaussianPath.conditional_velocity` given the pair
    :math:`(x_0, x_1)`: both objectives differ by a constant, since
    :math:`u(x, t) = \mathbb{E}[\alpha' x_0 + \sigma' x_1 \mid x_t = x]`, so the minimiser is
    the marginal field, the probability-flow ODE's drift. Our clock has the data x_0 at
    t = 0 and the source x_1 at t = 1; the seeds' base time 0 is our t = 1.

    Args:
        velocity: ``velocity(x_t, t) -> tensor like x_t``, ``t`` of shape (batch,).
        x0: data batch, shape (batch, ...).
        path: the Gaussian path (its schedule gives alpha, sigma and their derivatives).
        x1: source samples paired with ``x0`` (default: fresh N(0, I) draws). Any sampler
            works, e.g. minibatch-OT-paired noise (:func:`probpath.coupling.ot_coupling`)
            or samples of a second data set: with ``CondOTSchedule()`` (sigma_min = 0) the
            path is then the interpolant :math:`(1 - t) x_0 + t x_1` between two samples, a
            data-to-data flow (Tong et al. 2024, I-CFM with sigma = 0; Liu et al. 2023).
        t: times of shape (batch,) (default uniform on ``[t_min, 1]``).
        t_min: lower end of the default times (the VP velocity is infinite at t = 0).
        generator: for the default ``x1`` and ``t``.
        reduction: ``"mean"`` or ``"none"`` (shape (batch,)).

    Example:
        >>> from probpath.paths import CondOTSchedule, GaussianPath
        >>> x0, x1 = torch.zeros(4, 2), torch.ones(4, 2)  # the straight field x1 - x0 = 1
        >>> path = GaussianPath(CondOTSchedule())
        >>> conditional_flow_matching(lambda x, t: torch.ones_like(x), x0, path, x1=x1)
        tensor(0.)
    """
    check_state(x0)
    if x1 is None:
        x1 = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    elif x1.shape != x0.shape:
        raise ValueError(f"x1 must be shaped like x0 {tuple(x0.shape)}, got {tuple(x1.shape)}.")
    if t is None:
        if not 0.0 <= t_min < 1.0:
            raise ValueError(f"t_min must lie in [0, 1), got {t_min}.")
        t = torch.empty(x0.shape[0], dtype=x0.dtype, device=x0.device)
        t = t.uniform_(t_min, 1.0, generator=generator)
    elif not isinstance(t, Tensor) or t.shape != (x0.shape[0],):
        shape_t = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"t must be a tensor of shape (batch,) = ({x0.shape[0]},), got {shape_t}.")
    else:
        t = as_time(t.to(x0.dtype))  # checked once here; drawn times lie in [t_min, 1]
    x_t, target = interpolate(path.schedule, x0, x1, t)  # GaussianPath.conditional_velocity
    out = _check_out(velocity(x_t, t), x0, "velocity(x_t, t)")
    # the fused squared error (one autograd node) keeps the training step lean
    if reduction == "mean":
        return torch.nn.functional.mse_loss(out, target, reduction="sum") / x0.shape[0]
    return _reduce(_sqnorm(out - target), reduction)
