"""Continuous noise schedules t -> (alpha, sigma, alpha', sigma') of Gaussian paths.

Private module: the public names are re-exported by :mod:`probpath.paths`.
One clock everywhere: t = 0 is data, t = 1 is noise, and
``x_t = alpha(t) x_0 + sigma(t) eps`` with ``eps ~ N(0, I)``.
"""

from __future__ import annotations

import abc
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from probpath._time import as_time, pad_like

__all__ = [
    "CondOTSchedule",
    "ScheduleOutput",
    "SubVPSchedule",
    "VESchedule",
    "VPCosineSchedule",
    "VPSchedule",
    "evaluate",
    "interpolate",
]


def evaluate(schedule: Callable[[Tensor], ScheduleOutput], t: Tensor) -> ScheduleOutput:
    """``schedule(t)`` for a ``t`` the caller already knows lies in [0, 1] (drawn there, or
    checked once): the built-in schedules then skip :func:`as_time`'s check."""
    if isinstance(schedule, _ClosedForm):
        return schedule._coefficients(t)
    return schedule(t)


def interpolate(
    schedule: Callable[[Tensor], ScheduleOutput], x0: Tensor, x1: Tensor, t: Tensor
) -> tuple[Tensor, Tensor]:
    """``(x_t, u_t) = (alpha x_0 + sigma x_1, alpha' x_0 + sigma' x_1)`` at a time ``t`` (0-dim
    or (batch,)) the caller knows lies in [0, 1]: the point of the path between the pair
    and its time derivative, the flow-matching target (Lipman et al. 2023, eq. 15).

    >>> x0, x1 = torch.zeros(1, 2), torch.ones(1, 2)
    >>> interpolate(CondOTSchedule(), x0, x1, torch.tensor([0.25]))
    (tensor([[0.2500, 0.2500]]), tensor([[1., 1.]]))
    """
    if isinstance(schedule, _ClosedForm):
        return schedule._interpolate(x0, x1, t)
    return _affine(schedule(t), x0, x1)


def _affine(s: ScheduleOutput, x0: Tensor, x1: Tensor) -> tuple[Tensor, Tensor]:
    x_t = torch.addcmul(pad_like(s.alpha, x0) * x0, pad_like(s.sigma, x0), x1)
    return x_t, s.velocity(x0, x1)


@dataclass(frozen=True)
class ScheduleOutput:
    """Everything a schedule knows at time t; all fields have t's shape.

    ``x_t = alpha x_0 + sigma eps``; ``d_alpha`` and ``d_sigma`` are the time
    derivatives in closed form. The SDE of the path (Song et al. 2021, and
    design.md) is ``dx = f x dt + g dw`` with ``f = drift_coef`` and
    ``g^2 = diffusion_sq``.
    """

    alpha: Tensor
    sigma: Tensor
    d_alpha: Tensor
    d_sigma: Tensor

    @property
    def half_log_snr(self) -> Tensor:
        """lambda(t) / 2 = log(alpha / sigma), the time variable of DPM-Solver (Lu et al. 2022a)
        and minus the log of EDM's sigma / alpha (+inf where sigma = 0, -inf where alpha = 0)."""
        return torch.log(self.alpha) - torch.log(self.sigma)

    @property
    def log_snr(self) -> Tensor:
        """lambda(t) = log(alpha^2 / sigma^2) = 2 :attr:`half_log_snr` (Kingma et al. 2021)."""
        return 2 * self.half_log_snr

    @functools.cached_property
    def drift_coef(self) -> Tensor:
        """f(t) = alpha'/alpha, so the forward SDE drift is f(t) x (inf where alpha = 0)."""
        return self.d_alpha / self.alpha

    @property
    def diffusion_sq(self) -> Tensor:
        """g(t)^2 = d(sigma^2)/dt - 2 (alpha'/alpha) sigma^2 (Kingma et al. 2021, eq. 8),
        computed as ``2 sigma (sigma' - f sigma)``."""
        return 2 * self.sigma * (self.d_sigma - self.drift_coef * self.sigma)

    def velocity(self, x0: Tensor, eps: Tensor) -> Tensor:
        """``alpha' x_0 + sigma' eps``: the time derivative of ``x_t = alpha x_0 + sigma eps``
        along the pair, the conditional flow-matching target (Lipman et al. 2023, eq. 15); at
        ``(E[x_0 | x_t], E[eps | x_t])`` it is the marginal velocity, the PF-ODE drift.
        The coefficients (t's shape) are padded to broadcast against ``x0``.

        >>> ScheduleOutput(*torch.tensor([0.5, 0.5, -1.0, 1.0])).velocity(
        ...     torch.tensor([1.0]), torch.tensor([3.0]))
        tensor([2.])
        """
        return torch.addcmul(pad_like(self.d_alpha, x0) * x0, pad_like(self.d_sigma, x0), eps)

    def expand_like(self, x: Tensor) -> ScheduleOutput:
        """Right-pad the fields with singleton dims so they broadcast against ``x``.

        A time of shape (batch,) meets data of shape (batch, ...): the coefficients
        become (batch, 1, ..., 1), the convention of flow_matching and k-diffusion.
        """

        return ScheduleOutput(
            pad_like(self.alpha, x),
            pad_like(self.sigma, x),
            pad_like(self.d_alpha, x),
            pad_like(self.d_sigma, x),
        )


class _ClosedForm(abc.ABC):
    """A schedule given in closed form: ``schedule(t)`` checks t once (:func:`as_time`),
    then evaluates ``_coefficients(t)``, which :func:`evaluate` calls directly."""

    def __call__(self, t: Tensor | float) -> ScheduleOutput:
        return self._coefficients(as_time(t))

    @abc.abstractmethod
    def _coefficients(self, t: Tensor) -> ScheduleOutput:
        """``(alpha, sigma, alpha', sigma')`` at a floating ``t`` known to lie in [0, 1]."""

    def _interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """:func:`interpolate` (a schedule may override it with a cheaper closed form)."""
        return _affine(self._coefficients(t), x0, x1)


def _vp_sigma(alpha: Tensor, d_alpha: Tensor, log_alpha2: Tensor) -> tuple[Tensor, Tensor]:
    """sigma = sqrt(1 - alpha^2) (computed as sqrt(-expm1(log alpha^2))) and its derivative."""
    sigma = torch.sqrt(-torch.expm1(log_alpha2))
    return sigma, -alpha * d_alpha / sigma


@dataclass(frozen=True)
class CondOTSchedule(_ClosedForm):
    """Conditional optimal-transport path of flow matching (Lipman et al. 2023, eq. 20).

    ``alpha(t) = 1 - t``, ``sigma(t) = sigma_min + (1 - sigma_min) t``. The paper
    puts data at t = 1 (``mu_t = t x_1``, ``sigma_t = 1 - (1 - sigma_min) t``);
    with our clock ``t = 1 - t_paper``. With ``sigma_min = 0`` (the default, as in
    rectified flow) x_0 is exactly the data and x_1 exactly the noise.

    >>> CondOTSchedule()(torch.tensor([0.25])).alpha
    tensor([0.7500])
    """

    sigma_min: float = 0.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.sigma_min < 1.0:
            raise ValueError(f"CondOT needs 0 <= sigma_min < 1, got {self.sigma_min}")

    def _coefficients(self, t: Tensor) -> ScheduleOutput:
        slope = 1.0 - self.sigma_min
        sigma = t * slope
        if self.sigma_min != 0.0:
            sigma = sigma + self.sigma_min
        return ScheduleOutput(
            alpha=1 - t,
            sigma=sigma,
            d_alpha=torch.full_like(t, -1.0),
            d_sigma=torch.full_like(t, slope),
        )

    def _interpolate(self, x0: Tensor, x1: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        # x_t = lerp(x0, x1, t) + sigma_min (1 - t) x1, u = (1 - sigma_min) x1 - x0:
        # two operations on the batch when sigma_min = 0 (exact at t = 0 and t = 1)
        w = t.to(x0.dtype).reshape(t.shape + (1,) * (x0.ndim - t.ndim))
        x_t = torch.lerp(x0, x1, w)
        if self.sigma_min == 0.0:
            return x_t, x1 - x0
        x_t = torch.addcmul(x_t, 1 - w, x1, value=self.sigma_min)
        return x_t, torch.sub(x1 * (1 - self.sigma_min), x0)


@dataclass(frozen=True)
class VPSchedule(_ClosedForm):
    """Variance-preserving path with linear beta(t) (Song et al. 2021, eq. 11 and 33).

    ``beta(t) = beta_min + t (beta_max - beta_min)``, ``alpha(t) = exp(-B(t)/2)``
    with ``B(t) = int_0^t beta = beta_min t + t^2 (beta_max - beta_min) / 2``, and
    ``sigma = sqrt(1 - alpha^2)``. The defaults (0.1, 20) are the T -> inf limit of
    DDPM's ``linear_betas(1000)`` (beta_i from 1e-4 to 0.02, beta(t) ~ T beta_i).
    ``d_sigma`` is +inf at t = 0, where sigma ~ sqrt(beta_min t).

    >>> s = VPSchedule()(torch.tensor([0.5]))
    >>> torch.allclose(s.alpha**2 + s.sigma**2, torch.ones(1))
    True
    """

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __post_init__(self) -> None:
        if not 0.0 < self.beta_min <= self.beta_max:
            raise ValueError(
                f"VP needs 0 < beta_min <= beta_max, got ({self.beta_min}, {self.beta_max})"
            )

    def beta(self, t: Tensor) -> Tensor:
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        return self.beta_min + t * (self.beta_max - self.beta_min)

    def _alpha(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        beta = self.beta(t)
        log_alpha2 = (beta + self.beta_min) * t * -0.5  # -(beta_min t + t^2 (b_max - b_min)/2)
        alpha = torch.exp(log_alpha2 * 0.5)
        return alpha, beta * alpha * -0.5, log_alpha2

    def _coefficients(self, t: Tensor) -> ScheduleOutput:
        alpha, d_alpha, log_alpha2 = self._alpha(t)
        sigma, d_sigma = _vp_sigma(alpha, d_alpha, log_alpha2)
        return ScheduleOutput(alpha, sigma, d_alpha, d_sigma)


@dataclass(frozen=True)
class SubVPSchedule(VPSchedule):
    """sub-VP path (Song et al. 2021, eq. 34): alpha as VP, ``sigma = 1 - alpha^2``.

    Its variance ``sigma^2`` stays below the VP one; ``sigma' = beta(t) alpha^2``.

    >>> SubVPSchedule()(torch.tensor([0.0])).sigma
    tensor([0.])
    """

    def _coefficients(self, t: Tensor) -> ScheduleOutput:
        alpha, d_alpha, log_alpha2 = self._alpha(t)
        return ScheduleOutput(alpha, -torch.expm1(log_alpha2), d_alpha, -2 * alpha * d_alpha)


@dataclass(frozen=True)
class VPCosineSchedule(_ClosedForm):
    """Cosine VP path (Nichol & Dhariwal 2021, eq. 17) in continuous time.

    ``alpha_bar(t) = f(t) / f(0)``, ``f(t) = cos^2((t + s)/(1 + s) pi/2)``,
    ``alpha = sqrt(alpha_bar)``, ``sigma = sqrt(1 - alpha^2)`` (evaluated without
    cancellation near t = 0, accurate in float32 down to t = 1e-5). Clipping
    convention: none in continuous time, so alpha(1) = 0 exactly and the path ends
    at N(0, I) (log-SNR and alpha'/alpha are infinite there: samplers start at
    t = 1 - eps). The paper's clipping of beta_i at 0.999 belongs to the discrete
    chain, :func:`probpath.paths.cosine_betas`.

    >>> VPCosineSchedule()(torch.tensor([0.0, 1.0])).alpha
    tensor([1., 0.])
    """

    s: float = 0.008

    def __post_init__(self) -> None:
        if not self.s > 0:
            raise ValueError(f"the cosine offset s must be > 0, got {self.s}")

    def _coefficients(self, t: Tensor) -> ScheduleOutput:
        c = math.pi / (2 * (1 + self.s))
        cos0 = math.cos(self.s * c)
        # With (1 + s) c = pi/2 every cosine near pi/2 is written as the sine of a small
        # angle, evaluated without cancellation (float32 within a few ulps on [1e-5, 1]):
        # cos((t + s) c) = sin((1 - t) c), so that alpha(1) = 0 exactly, and
        # cos((1 - t) c) = sin((t + s) c) in alpha';
        alpha = torch.sin((1 - t) * c) / cos0
        d_alpha = -torch.sin((t + self.s) * c) * c / cos0
        # 1 - alpha^2 = (cos^2(s c) - sin^2((1 - t) c)) / cos0^2 = sin(t c) sin((t + 2 s) c)
        # / cos0^2 (cos^2 A - sin^2 B = cos(A + B) cos(A - B)): no cancellation as t -> 0,
        # where sqrt(1 - alpha^2) lost 4 % in float32 at t = 1e-5
        sigma = torch.sqrt(torch.sin(t * c) * torch.sin((t + 2 * self.s) * c)) / cos0
        return ScheduleOutput(alpha, sigma, d_alpha, -alpha * d_alpha / sigma)


@dataclass(frozen=True)
class VESchedule(_ClosedForm):
    """Variance-exploding geometric path of NCSN (Song & Ermon 2019; Song et al. 2021).

    ``alpha = 1``, ``sigma(t) = sigma_min (sigma_max / sigma_min)^t``, so
    ``sigma' = sigma log(sigma_max / sigma_min)``. At t = 0 the law is the data
    blurred by sigma_min, as in the paper. NCSN's discrete levels are
    :func:`probpath.paths.ve_sigmas`.

    >>> VESchedule(0.01, 50.0)(torch.tensor([0.0, 1.0])).sigma
    tensor([1.0000e-02, 5.0000e+01])
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __post_init__(self) -> None:
        if not 0.0 < self.sigma_min < self.sigma_max:
            raise ValueError(
                f"VE needs 0 < sigma_min < sigma_max, got ({self.sigma_min}, {self.sigma_max})"
            )

    def _coefficients(self, t: Tensor) -> ScheduleOutput:
        log_ratio = math.log(self.sigma_max / self.sigma_min)
        sigma = self.sigma_min * torch.exp(t * log_ratio)
        return ScheduleOutput(torch.ones_like(t), sigma, torch.zeros_like(t), sigma * log_ratio)
