r"""The forward SDE of a Gaussian path, its reverse SDE and its probability-flow ODE.

Every Gaussian path ``x_t = alpha(t) x_0 + sigma(t) eps`` is the marginal law of the
linear Itô SDE (Song et al. 2021, eq. 5; Kingma et al. 2021, eq. 8; the seeds, lecture 13)

.. math:: dx = f(t)\,x\,dt + g(t)\,dw,\qquad f = \alpha'/\alpha,\qquad
          g^2 = \frac{d\sigma^2}{dt} - 2\frac{\alpha'}{\alpha}\sigma^2 ,

read off a :class:`~probpath.paths.ScheduleOutput` (``drift_coef``, ``diffusion_sq``).
VE (NCSN: f = 0, g² = dσ²/dt), VP (DDPM: f = -β/2, g² = β) and sub-VP come out of it.
Given a score s(x, t) ≈ ∇ log p_t(x), the same marginals are traced by

- the reverse SDE :math:`dx = [f x - g^2 s]\,dt + g\,d\bar w` integrated with dt < 0
  (Anderson 1982; Song et al. 2021, eq. 6), and
- the probability-flow ODE :math:`dx = [f x - \tfrac12 g^2 s]\,dt` (Song et al. 2021, eq. 13),
  whose drift equals the marginal flow-matching velocity ``alpha' E[x_0|x] + sigma' E[eps|x]``.

Functions return callables in torchsde's ``f(t, y)``/``g(t, y)`` order (for
:func:`probpath.solvers.sdeint`, which integrates a decreasing time grid directly) and in
torchdiffeq's ``f(t, y)`` order (for :func:`probpath.solvers.odeint`); scores use the
model order ``score(x, t)`` with ``t`` of shape (batch,).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from probpath._schedules import shared_time
from probpath.likelihood import gaussian_log_prob
from probpath.paths import Schedule, ScheduleOutput, SubVPSchedule, VESchedule, VPSchedule

__all__ = [
    "SDE",
    "probability_flow_ode",
    "reverse_drift",
    "reverse_sde",
    "subvp_sde",
    "ve_sde",
    "vp_sde",
]

Score = Callable[[Tensor, Tensor], Tensor]
TimeFn = Callable[[Tensor, Tensor], Tensor]


def _coefs(schedule: Schedule, t: Tensor, x: Tensor) -> ScheduleOutput:
    """The schedule at ``t`` (a scalar or shape (batch,)) broadcast against ``x``; one time
    shared by the batch (0-dim, or expanded) is evaluated once."""
    t = shared_time(torch.as_tensor(t, dtype=x.dtype, device=x.device))
    return schedule(t).expand_like(x)


def _batch_time(t: Tensor, x: Tensor) -> Tensor:
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


@dataclass(frozen=True)
class SDE:
    """The forward SDE ``dx = f(t) x dt + g(t) dw`` whose marginals are a Gaussian path.

    Example:
        >>> sde = vp_sde()
        >>> t = torch.tensor([0.5])
        >>> s = VPSchedule()(t)
        >>> torch.allclose(sde.diffusion_sq(t), VPSchedule().beta(t))  # g^2 = beta for VP
        True
        >>> torch.allclose(sde.drift(torch.ones(1, 2), t), -0.5 * VPSchedule().beta(t))
        True
    """

    schedule: Schedule

    def drift(self, x: Tensor, t: Tensor) -> Tensor:
        """f(t) x with f = alpha'/alpha; ``t`` a scalar or shape (batch,)."""
        return _coefs(self.schedule, t, x).drift_coef * x

    def diffusion_sq(self, t: Tensor) -> Tensor:
        """g(t)^2 = d(sigma^2)/dt - 2 (alpha'/alpha) sigma^2, shaped like ``t``."""
        g2 = self.schedule(shared_time(t)).diffusion_sq
        return g2.expand(t.shape) if g2.shape != t.shape else g2

    def diffusion(self, t: Tensor) -> Tensor:
        """g(t), shaped like ``t``."""
        return self.diffusion_sq(t).clamp(min=0).sqrt()

    def marginal(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``alpha(t) x_0`` and std ``sigma(t)`` (batch, 1, ...) of p_t(x | x_0)."""
        s = _coefs(self.schedule, t, x0)
        return s.alpha * x0, s.sigma

    def prior_std(self, t: float = 1.0) -> float:
        """Std of the prior at ``t``: ``sqrt(alpha^2 + sigma^2)``, exact for unit-variance data."""
        s = self.schedule(torch.tensor(t, dtype=torch.float64))
        return math.sqrt(float(s.alpha**2 + s.sigma**2))

    def prior_sample(
        self,
        shape: tuple[int, ...],
        *,
        t: float = 1.0,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """Draw from the prior N(0, (alpha(t)^2 + sigma(t)^2) I) (the law of x_t for standardised
        data whose mean is 0 and covariance I; the data term vanishes where alpha(t) ~ 0)."""
        z = torch.randn(shape, generator=generator, dtype=dtype, device=device)
        return self.prior_std(t) * z

    def prior_log_prob(self, z: Tensor, *, t: float = 1.0) -> Tensor:
        """log N(z; 0, (alpha(t)^2 + sigma(t)^2) I) summed over non-batch dims, shape (batch,)."""
        return gaussian_log_prob(z, var=self.prior_std(t) ** 2)

    def f_and_g(self) -> tuple[TimeFn, TimeFn]:
        """``(f(t, y), g(t, y))`` of the forward SDE for ``sdeint`` with diagonal noise."""

        def f(t: Tensor, y: Tensor) -> Tensor:
            return self.drift(y, t)

        def g(t: Tensor, y: Tensor) -> Tensor:
            return _coefs(self.schedule, t, y).diffusion_sq.clamp(min=0).sqrt().expand_as(y)

        return f, g


def vp_sde(beta_min: float = 0.1, beta_max: float = 20.0) -> SDE:
    """VP SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw`` (DDPM's limit; Song et al. eq. 11)."""
    return SDE(VPSchedule(beta_min, beta_max))


def subvp_sde(beta_min: float = 0.1, beta_max: float = 20.0) -> SDE:
    """sub-VP SDE, ``g^2 = beta(t) (1 - exp(-2 B(t)))`` (Song et al. 2021, eq. 34)."""
    return SDE(SubVPSchedule(beta_min, beta_max))


def ve_sde(sigma_min: float = 0.01, sigma_max: float = 50.0) -> SDE:
    """VE SDE ``dx = sqrt(d sigma^2/dt) dw`` (NCSN's limit; Song et al. 2021, eq. 9)."""
    return SDE(VESchedule(sigma_min, sigma_max))


def reverse_drift(
    schedule: Schedule, score: Score, x: Tensor, t: Tensor, *, weight: float = 1.0
) -> Tensor:
    r"""``f(t) x - weight * g(t)^2 s(x, t)``: weight 1 is the reverse SDE, 1/2 the PF-ODE.

    Example:
        >>> # data N(0, I) under VP stays N(0, I): s = -x and the PF-ODE drift vanishes
        >>> x = torch.randn(4, 2)
        >>> drift = reverse_drift(VPSchedule(), lambda x, t: -x, x, torch.tensor(0.3), weight=0.5)
        >>> torch.allclose(drift, torch.zeros(4, 2), atol=1e-6)
        True
    """
    s = _coefs(schedule, t, x)
    return torch.addcmul(
        s.drift_coef * x, s.diffusion_sq, score(x, _batch_time(t, x)), value=-weight
    )


def reverse_sde(schedule: Schedule, score: Score) -> tuple[TimeFn, TimeFn]:
    """``(f(t, y), g(t, y))`` of the reverse SDE, to integrate over a *decreasing* time grid.

    ``f = f(t) y - g^2 s(y, t)``, ``g = g(t)`` (diagonal noise), as in Song et al. 2021,
    eq. 6 with dt < 0; :func:`probpath.solvers.sdeint` accepts decreasing grids directly.
    (torchsde needs increasing times: substitute tau = 1 - t and negate f.)

    Example:
        >>> from probpath.solvers import sdeint
        >>> f, g = reverse_sde(VPSchedule(), lambda x, t: -x)
        >>> y0 = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0))
        >>> ys = sdeint(f, g, y0, torch.tensor([1.0, 1e-3]), dt=0.002,
        ...             generator=torch.Generator().manual_seed(1))
        >>> round(ys[-1].var().item(), 1)  # N(0, 1) is invariant
        1.0
    """
    sde = SDE(schedule)

    def f(t: Tensor, y: Tensor) -> Tensor:
        return reverse_drift(schedule, score, y, t)

    return f, sde.f_and_g()[1]


def probability_flow_ode(schedule: Schedule, score: Score) -> TimeFn:
    """``f(t, y) = f(t) y - g(t)^2 s(y, t) / 2``, the PF-ODE drift for ``odeint``.

    Example:
        >>> from probpath.solvers import odeint
        >>> # a point mass at x0 = 1 under VE: s = -(x - 1)/sigma^2, x(t) - 1 shrinks with sigma
        >>> sch = VESchedule(0.1, 10.0)
        >>> f = probability_flow_ode(sch, lambda x, t: -(x - 1) / sch(t).sigma[:, None] ** 2)
        >>> y = odeint(f, torch.tensor([[11.0]], dtype=torch.float64),
        ...            torch.tensor([1.0, 0.0], dtype=torch.float64))[-1]
        >>> round(y.item(), 6)  # 1 + 10 * sigma(0)/sigma(1)
        1.1
    """

    def f(t: Tensor, y: Tensor) -> Tensor:
        return reverse_drift(schedule, score, y, t, weight=0.5)

    return f
