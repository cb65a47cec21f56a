r"""The forward SDE of a Gaussian path, its reverse SDE and its probability-flow ODE.

Every Gaussian path ``x_t = alpha(t) x_0 + sigma(t) eps`` is the marginal law of the
linear Itô SDE (Song et al. 2021, eq. 5; Kingma et al. 2021, eq. 8; the seeds, lecture 13)

.. math:: dx = f(t)\,x\,dt + g(t)\,dw,\qquad f = \alpha'/\alpha,\qquad
          g^2 = \frac{d\sigma^2}{dt} - 2\frac{\alpha'}{\alpha}\sigma^2 ,

read off a :class:`~probpath.paths.ScheduleOutput` (``drift_coef``, ``diffusion_sq``).
VE (NCSN: f = 0, g² = dσ²/dt), VP (DDPM: f = -β/2, g² = β) and sub-VP come out of it.
Given a score s(x, t) ≈ ∇ log p_t(x), the same marginals are traced by

- the reverse SDE :math:`dx = [f x - g^2 s]\,dt + g\,d\bar w` integrated with dt < 0
  (Anderson 1982; Song et al. 2021, eq. 6): :meth:`SDE.reverse`, and
- the probability-flow ODE :math:`dx = [f x - \tfrac12 g^2 s]\,dt` (Song et al. 2021, eq. 13),
  whose drift equals the marginal flow-matching velocity ``alpha' E[x_0|x] + sigma' E[eps|x]``:
  :meth:`SDE.probability_flow`.

The SDE objects follow torchsde's protocol (``f(t, y)``, ``g(t, y)``, ``noise_type``,
``sde_type``), so ``probpath.solvers.sdeint`` and ``torchsde.sdeint`` take them as they are;
the PF-ODE is a ``func(t, y)`` for ``probpath.solvers.odeint`` or torchdiffeq. Scores use the
model order ``score(x, t)`` with ``t`` of shape (batch,). Each object gives the linear
coefficients of its formula — ``SDE.coefficients(t)``, ``ReverseSDE.coefficients(tau)`` on
any tensor of times, ``ProbabilityFlowODE.coefficients_at(s)`` on a schedule's values: the
samplers of :mod:`probpath.samplers.sde` evaluate them once on their whole grid and step
with them, and ``DiffusionModel.velocity`` composes the PF-ODE's with its score, so what
runs is these formulas. Times reaching ``f``, ``g`` or ``coefficients`` are not
range-checked (no host read inside a solver's step); the samplers check their grids once.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from probpath._gaussian import gaussian_log_prob
from probpath._schedules import evaluate
from probpath._time import pad_like
from probpath.paths import Schedule, ScheduleOutput, SubVPSchedule, VESchedule, VPSchedule

__all__ = [
    "SDE",
    "ProbabilityFlowODE",
    "ReverseSDE",
    "subvp_sde",
    "ve_sde",
    "vp_sde",
]

Score = Callable[[Tensor, Tensor], Tensor]


def _time(t: Tensor | float, y: Tensor) -> Tensor:
    """``t`` (0-dim or (batch,)) on y's dtype and device."""
    return torch.as_tensor(t, dtype=y.dtype, device=y.device)


def _rows(t: Tensor, y: Tensor) -> Tensor:
    """The time of every row, shape (batch,): a shared 0-dim time expanded (a view)."""
    return t.expand(y.shape[0]) if t.dim() == 0 else t


@dataclass(frozen=True)
class SDE:
    """The forward SDE ``dx = f(t) x dt + g(t) dw`` whose marginals are a Gaussian path.

    torchsde's protocol: ``f(t, y)``, ``g(t, y)`` (diagonal noise), Itô.

    Example:
        >>> sde = vp_sde()
        >>> f, g2 = sde.coefficients(torch.tensor([0.5]))
        >>> torch.allclose(g2, VPSchedule().beta(torch.tensor([0.5])))  # g^2 = beta for VP
        True
        >>> torch.allclose(sde.f(torch.tensor(0.5), torch.ones(1, 2)), -0.5 * g2)
        True
    """

    schedule: Schedule
    noise_type: ClassVar[str] = "diagonal"
    sde_type: ClassVar[str] = "ito"

    def coefficients(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """``(f(t), g(t)^2)`` shaped like ``t`` (:meth:`coefficients_at` the schedule's values)."""
        return self.coefficients_at(evaluate(self.schedule, t))

    @staticmethod
    def coefficients_at(s: ScheduleOutput) -> tuple[Tensor, Tensor]:
        """``(f, g^2) = (alpha'/alpha, d(sigma^2)/dt - 2 f sigma^2)`` read off the values ``s``
        of the path's schedule at t."""
        return s.drift_coef, s.diffusion_sq

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        """The drift ``f(t) y``; ``t`` 0-dim or shape (batch,)."""
        return pad_like(self.coefficients(_time(t, y))[0], y) * y

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        """The diffusion ``g(t)``, shaped like ``y`` (diagonal noise)."""
        g2 = self.coefficients(_time(t, y))[1]
        return pad_like(g2.clamp(min=0).sqrt(), y).expand_as(y)

    def reverse(self, score: Score) -> ReverseSDE:
        """The reverse-time SDE of this one given ``score(x, t)`` (:class:`ReverseSDE`)."""
        return ReverseSDE(self, score)

    def probability_flow(self, score: Score) -> ProbabilityFlowODE:
        """The probability-flow ODE of this SDE given ``score(x, t)``."""
        return ProbabilityFlowODE(self, score)

    def marginal(self, x0: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``alpha(t) x_0`` and std ``sigma(t)`` (batch, 1, ...) of p_t(x | x_0)."""
        s = self.schedule(_time(t, x0)).expand_like(x0)
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


@dataclass(frozen=True)
class ReverseSDE:
    r"""The reverse-time SDE of ``sde`` given a score, on the reflected clock ``tau = -t``.

    Song et al. 2021, eq. 6, :math:`dx = [f x - g^2 s(x, t)]\,dt + g\,d\bar w` run from
    t = 1 down to 0, reads in ``tau = -t`` (increasing as t decreases)

    .. math:: dx = [g(t)^2 s(x, t) - f(t) x]\,d\tau + g(t)\,dw,\qquad t = -\tau,

    an ordinary forward-time Itô SDE: ``probpath.solvers.sdeint(rev, x1, -ts)`` and
    ``torchsde.sdeint(rev, x1, -ts)`` both integrate it over ``-ts`` (e.g. tau from -1 to
    -t_min). The reflection ``-t`` rather than ``1 - t`` is exact in floating point, so the
    score sees exactly the times of ``ts``.

    Example:
        >>> from probpath.solvers import sdeint
        >>> rev = vp_sde().reverse(lambda x, t: -x)  # data N(0, I): the score is -x for all t
        >>> y0 = torch.randn(4000, 1, generator=torch.Generator().manual_seed(0))
        >>> ys = sdeint(rev, y0, -torch.tensor([1.0, 1e-3]), dt=0.002,
        ...             generator=torch.Generator().manual_seed(1))
        >>> round(ys[-1].var().item(), 1)  # N(0, 1) is invariant
        1.0
    """

    sde: SDE
    score: Score
    noise_type: ClassVar[str] = "diagonal"
    sde_type: ClassVar[str] = "ito"

    def coefficients(self, tau: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(c_y, c_s, g)`` at ``t = -tau``: the drift is ``c_y y + c_s s(y, t)`` with
        ``c_y = -f(t)``, ``c_s = g(t)^2``, and the diffusion is ``g(t)``; shaped like tau."""
        f, g2 = self.sde.coefficients(-tau)
        return -f, g2, g2.clamp(min=0).sqrt()

    def f(self, tau: Tensor, y: Tensor) -> Tensor:
        """The drift ``g(t)^2 s(y, t) - f(t) y`` at ``t = -tau``."""
        tau = _time(tau, y)
        c_y, c_s, _ = self.coefficients(tau)
        return torch.addcmul(pad_like(c_y, y) * y, pad_like(c_s, y), self.score(y, _rows(-tau, y)))

    def g(self, tau: Tensor, y: Tensor) -> Tensor:
        """The diffusion ``g(t)`` at ``t = -tau``, shaped like ``y``."""
        return pad_like(self.coefficients(_time(tau, y))[2], y).expand_as(y)


@dataclass(frozen=True)
class ProbabilityFlowODE:
    r"""The probability-flow ODE :math:`dx/dt = f(t)\,x - \tfrac12 g(t)^2\,s(x, t)` of ``sde``
    (Song et al. 2021, eq. 13): ``func(t, y)`` for ``odeint`` in either direction of time.

    Example:
        >>> from probpath.solvers import odeint
        >>> # a point mass at x0 = 1 under VE: s = -(x - 1)/sigma^2, x(t) - 1 shrinks with sigma
        >>> sch = VESchedule(0.1, 10.0)
        >>> pf = SDE(sch).probability_flow(lambda x, t: -(x - 1) / sch(t).sigma[:, None] ** 2)
        >>> y = odeint(pf, torch.tensor([[11.0]], dtype=torch.float64),
        ...            torch.tensor([1.0, 0.0], dtype=torch.float64))[-1]
        >>> round(y.item(), 6)  # 1 + 10 * sigma(0)/sigma(1)
        1.1
    """

    sde: SDE
    score: Score

    @staticmethod
    def coefficients_at(s: ScheduleOutput) -> tuple[Tensor, Tensor]:
        """``(c_y, c_s) = (f, -g^2 / 2)`` from the path's values ``s`` at t: the drift is
        ``c_y y + c_s score(y, t)``, linear in the state and the score."""
        f, g2 = SDE.coefficients_at(s)
        return f, -0.5 * g2

    @classmethod
    def drift(cls, s: ScheduleOutput, y: Tensor, score: Tensor) -> Tensor:
        """``f y - g^2 score / 2`` from the path's values ``s`` at t (t's shape) and the
        score's value at ``(y, t)``: the drift, for a caller that already has both."""
        c_y, c_s = cls.coefficients_at(s)
        return torch.addcmul(pad_like(c_y, y) * y, pad_like(c_s, y), score)

    def __call__(self, t: Tensor, y: Tensor) -> Tensor:
        """The drift ``f(t) y - g(t)^2 s(y, t) / 2``; ``t`` 0-dim or shape (batch,)."""
        t = _time(t, y)
        s = evaluate(self.sde.schedule, t)
        return self.drift(s, y, self.score(y, _rows(t, y)))


def vp_sde(beta_min: float = 0.1, beta_max: float = 20.0) -> SDE:
    """VP SDE ``dx = -beta(t) x / 2 dt + sqrt(beta(t)) dw`` (DDPM's limit; Song et al. eq. 11)."""
    return SDE(VPSchedule(beta_min, beta_max))


def subvp_sde(beta_min: float = 0.1, beta_max: float = 20.0) -> SDE:
    """sub-VP SDE, ``g^2 = beta(t) (1 - exp(-2 B(t)))`` (Song et al. 2021, eq. 34)."""
    return SDE(SubVPSchedule(beta_min, beta_max))


def ve_sde(sigma_min: float = 0.01, sigma_max: float = 50.0) -> SDE:
    """VE SDE ``dx = sqrt(d sigma^2/dt) dw`` (NCSN's limit; Song et al. 2021, eq. 9)."""
    return SDE(VESchedule(sigma_min, sigma_max))
