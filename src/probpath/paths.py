"""Gaussian probability paths ``x_t = alpha(t) x_0 + sigma(t) eps`` and their schedules.

One clock (design.md): t = 0 is data, t = 1 is noise; DDPM's index i = 1..T is
t = i / T. A schedule is a callable ``t -> ScheduleOutput(alpha, sigma, d_alpha,
d_sigma)``; :class:`GaussianPath` composes one and never re-derives alpha or sigma.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from probpath._schedules import (
    CondOTSchedule,
    ScheduleOutput,
    SubVPSchedule,
    VESchedule,
    VPCosineSchedule,
    VPSchedule,
    _ClosedForm,
)
from probpath._time import as_time

__all__ = [
    "CondOTSchedule",
    "DiscreteSchedule",
    "GaussianPath",
    "Posterior",
    "Schedule",
    "ScheduleOutput",
    "SubVPSchedule",
    "VESchedule",
    "VPCosineSchedule",
    "VPSchedule",
    "cosine_betas",
    "gaussian_posterior",
    "linear_betas",
    "make_schedule",
    "ve_sigmas",
]

Schedule = Callable[[Tensor], ScheduleOutput]
"""Any callable ``t -> ScheduleOutput``; t of any shape, outputs of the same shape."""


def linear_betas(T: int, beta_1: float = 1e-4, beta_T: float = 0.02) -> Tensor:
    """DDPM's linear betas (Ho et al. 2020, sec. 4): ``beta_i`` evenly from beta_1 to beta_T.

    Returned in float64, shape (T,). With T = 1000 this is the VP SDE with
    beta(t) from 0.1 to 20 (Song et al. 2021, appendix B).

    >>> linear_betas(3, 0.1, 0.3)
    tensor([0.1000, 0.2000, 0.3000], dtype=torch.float64)
    """
    if T < 1:
        raise ValueError(f"T must be a positive number of steps, got {T}")
    return torch.linspace(beta_1, beta_T, T, dtype=torch.float64)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> Tensor:
    """Nichol & Dhariwal's cosine betas (2021, eq. 17): ``1 - abar(i/T) / abar((i-1)/T)``.

    ``abar(t) = cos^2((t + s)/(1 + s) pi/2) / cos^2(s/(1 + s) pi/2)``, the ``alpha^2`` of
    :class:`VPCosineSchedule`; each beta_i is clipped at
    ``max_beta`` (the paper's 0.999) so that the last step stays invertible.

    >>> cosine_betas(4)[-1].item()
    0.999
    """
    if T < 1:
        raise ValueError(f"T must be a positive number of steps, got {T}")
    abar = VPCosineSchedule(s)(torch.arange(T + 1, dtype=torch.float64) / T).alpha ** 2
    return (1 - abar[1:] / abar[:-1]).clamp(max=max_beta)


def ve_sigmas(sigma_min: float = 0.01, sigma_max: float = 1.0, L: int = 10) -> Tensor:
    """NCSN's geometric noise levels sigma_1 > ... > sigma_L (Song & Ermon 2019, sec. 4.2).

    ``sigma_l = sigma_max (sigma_min / sigma_max)^((l - 1)/(L - 1))``: the levels of
    ``VESchedule(sigma_min, sigma_max)`` at t = (L - l)/(L - 1). Float64, shape (L,).

    >>> ve_sigmas(0.01, 1.0, 3)
    tensor([1.0000, 0.1000, 0.0100], dtype=torch.float64)
    """
    if not 0 < sigma_min < sigma_max or L < 2:
        raise ValueError(
            f"need 0 < sigma_min < sigma_max and L >= 2, got {sigma_min, sigma_max, L}"
        )
    return torch.logspace(math.log10(sigma_max), math.log10(sigma_min), L, dtype=torch.float64)


class Posterior(NamedTuple):
    """``q(x_s | x_t, x_0) = N(coef_x0 x_0 + coef_xt x_t, var I)`` for times s < t, and the
    variance ``transition_var`` of the transition ``x_t | x_s`` (:func:`gaussian_posterior`)."""

    coef_x0: Tensor
    coef_xt: Tensor
    var: Tensor
    transition_var: Tensor


def gaussian_posterior(
    alpha_t: Tensor, sigma_t: Tensor, alpha_s: Tensor, sigma_s: Tensor
) -> Posterior:
    r"""The posterior of a Gaussian path between times s < t, from ``(alpha, sigma)`` at both.

    The transition is ``x_t | x_s ~ N(a x_s, v I)`` with ``a = alpha_t / alpha_s`` and
    ``v = sigma_t^2 - a^2 sigma_s^2``; Bayes' rule with ``x_s | x_0 ~ N(alpha_s x_0,
    sigma_s^2 I)`` gives ``c_0 = alpha_s v / sigma_t^2``, ``c_t = a sigma_s^2 / sigma_t^2`` and
    ``var = v sigma_s^2 / sigma_t^2`` (Kingma et al. 2021, eq. 22-23). On the DDPM chain
    between neighbours (``alpha^2 = abar``) ``v = beta_i`` and ``var = beta~_i``: Ho et al.
    2020, eq. 6-7, the seeds' posterior. Elementwise over the arguments' common shape.

    >>> q = gaussian_posterior(*torch.tensor([0.6, 0.8, 0.8, 0.6]))  # VP: abar_t 0.36, abar_s 0.64
    >>> [round(c.item(), 4) for c in q]  # v = 1 - abar_t / abar_s = 0.4375
    [0.5469, 0.4219, 0.2461, 0.4375]
    """
    a = alpha_t / alpha_s
    v = (sigma_t**2 - a**2 * sigma_s**2).clamp(min=0.0)
    w = sigma_s**2 / sigma_t**2
    return Posterior(alpha_s * v / sigma_t**2, a * w, v * w, v)


class DiscreteSchedule(_ClosedForm):
    """DDPM's discrete forward chain (Ho et al. 2020; the seeds' lecture on DDPM).

    ``x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) eps`` for i = 1..T, with
    ``alpha_i = 1 - beta_i`` and ``abar_i = prod_{s<=i} alpha_s`` (float64), so
    ``q(x_i | x_0) = N(sqrt(abar_i) x_0, (1 - abar_i) I)``.

    Called with a time t it is a continuous schedule: ``alpha(i/T) = sqrt(abar_i)``,
    ``log abar`` linear in t between grid points (abar_0 = 1 at t = 0), so a
    network trained on the chain plugs into the SDE and ODE samplers. The
    derivatives are those of the segment to the left of t.

    >>> chain = DiscreteSchedule(linear_betas(1000))
    >>> mean_coef, var = chain.marginal(1000)
    >>> bool(var > 0.9999)
    True
    """

    def __init__(self, betas: Tensor) -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.ndim != 1 or betas.numel() == 0:
            raise ValueError(
                f"betas must be a non-empty 1-D tensor, got shape {tuple(betas.shape)}"
            )
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ValueError("every beta_i must lie in (0, 1): x_i = sqrt(1-beta_i) x_{i-1} + ...")
        self.betas = betas
        self.alphas = 1 - betas
        self.log_alphas_cumprod = torch.cumsum(torch.log1p(-betas), 0)
        self.alphas_cumprod = torch.exp(self.log_alphas_cumprod)
        self.alphas_cumprod_prev = torch.cat([betas.new_ones(1), self.alphas_cumprod[:-1]])
        self._log_abar = torch.cat([betas.new_zeros(1), self.log_alphas_cumprod])  # i = 0..T
        self._log_abar_on: dict[torch.device, Tensor] = {betas.device: self._log_abar}

    def __repr__(self) -> str:
        b = self.betas
        return f"DiscreteSchedule(T={self.T}, beta_1={b[0].item():.4g}, beta_T={b[-1].item():.4g})"

    @property
    def T(self) -> int:
        """Number of steps of the chain."""
        return self.betas.numel()

    def _index(self, i: int | Tensor) -> Tensor:
        idx = torch.as_tensor(i).to(self.betas.device)
        if idx.is_floating_point() or not bool(((idx >= 1) & (idx <= self.T)).all()):
            raise ValueError(f"the step index i must be an integer in 1..{self.T}, got {i}")
        return idx.long() - 1

    def marginal(self, i: int | Tensor) -> tuple[Tensor, Tensor]:
        """Mean coefficient and variance of ``q(x_i | x_0)``: ``(sqrt(abar_i), 1 - abar_i)``."""
        abar = self.alphas_cumprod[self._index(i)]
        return abar.sqrt(), 1 - abar

    def posterior_coefficients(self, i: int | Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(c_0, c_i, beta~_i)`` with ``q(x_{i-1} | x_i, x_0) = N(c_0 x_0 + c_i x_i, beta~_i I)``.

        ``c_0 = sqrt(abar_{i-1}) beta_i / (1 - abar_i)``,
        ``c_i = sqrt(alpha_i) (1 - abar_{i-1}) / (1 - abar_i)``,
        ``beta~_i = (1 - abar_{i-1}) beta_i / (1 - abar_i)`` (Ho et al. 2020, eq. 6-7).
        """
        k = self._index(i) + 1
        log_abar = torch.stack([self._log_abar[k], self._log_abar[k - 1]])
        alpha, sigma = torch.exp(0.5 * log_abar), torch.sqrt(-torch.expm1(log_abar))
        return gaussian_posterior(alpha[0], sigma[0], alpha[1], sigma[1])[:3]

    def posterior(self, i: int | Tensor, x_i: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``mu~_i(x_i, x_0)`` and variance ``beta~_i`` of ``q(x_{i-1} | x_i, x_0)``.

        ``i`` is an int or a tensor of shape (batch,); the mean has x's shape, the
        variance i's shape; both have x's dtype and device.

        >>> chain = DiscreteSchedule(torch.tensor([0.5, 0.5]))
        >>> mean, var = chain.posterior(2, torch.tensor([1.0]), torch.tensor([0.0]))
        >>> round(var.item(), 6)  # (1 - abar_1) beta_2 / (1 - abar_2) = 0.5 * 0.5 / 0.75
        0.333333
        """
        c0, ci, var = (c.to(x_i) for c in self.posterior_coefficients(i))
        pad = (1,) * (x_i.ndim - c0.ndim)
        mean = c0.reshape(c0.shape + pad) * x0 + ci.reshape(ci.shape + pad) * x_i
        return mean, var

    def _coefficients(self, t: Tensor) -> ScheduleOutput:
        u = t.to(torch.float64) * self.T
        # snap t = i/T given in low precision (e.g. float32) onto the grid point i
        tol = 4 * self.T * torch.finfo(t.dtype).eps
        u = torch.where((u - u.round()).abs() <= tol, u.round(), u)
        k = torch.ceil(u).clamp(1, self.T).long()  # segment [(k-1)/T, k/T]
        log_a = self._log_abar_on.get(t.device)
        if log_a is None:  # copied once per device, not in every step of a sampler
            log_a = self._log_abar_on[t.device] = self._log_abar.to(t.device)
        lo, hi = torch.take(log_a, k - 1), torch.take(log_a, k)  # no host read for 0-dim k
        slope = hi - lo
        log_abar = lo + (u - (k - 1)) * slope
        alpha = torch.exp(0.5 * log_abar)
        d_alpha = 0.5 * slope * self.T * alpha
        sigma = torch.sqrt(-torch.expm1(log_abar))
        d_sigma = -alpha * d_alpha / sigma
        return ScheduleOutput(*(c.to(t.dtype) for c in (alpha, sigma, d_alpha, d_sigma)))


@dataclass(frozen=True)
class GaussianPath:
    """The path ``p_t(x_t | x_0) = N(alpha(t) x_0, sigma(t)^2 I)`` of a schedule.

    Like flow_matching's ``AffineProbPath``, it samples x_t and the conditional
    velocity from (x_0, eps). The schedule is probed once on a grid: alpha, sigma
    must be finite and >= 0, and sigma > 0 for t > 0.

    >>> path = GaussianPath(CondOTSchedule())
    >>> x0, t = torch.ones(2, 3), torch.tensor([0.0, 1.0])
    >>> x_t, eps = path.sample(x0, t, generator=torch.Generator().manual_seed(0))
    >>> torch.equal(x_t[0], x0[0]), torch.equal(x_t[1], eps[1])
    (True, True)
    """

    schedule: Schedule

    def __post_init__(self) -> None:
        grid = torch.linspace(0, 1, 101, dtype=torch.float64)
        s = self.schedule(grid)
        if not isinstance(s, ScheduleOutput):
            raise TypeError(f"a schedule must return a ScheduleOutput, got {type(s).__name__}")
        a, sg = s.alpha, s.sigma
        if not bool((torch.isfinite(a) & torch.isfinite(sg) & (a >= 0) & (sg >= 0)).all()):
            raise ValueError("schedule gives non-finite or negative alpha/sigma on [0, 1]")
        if not bool((sg[1:] > 0).all()):
            raise ValueError("schedule must have sigma(t) > 0 for t > 0 (only t = 0 may be exact)")

    def marginal_params(self, t: Tensor | float) -> ScheduleOutput:
        """``(alpha, sigma, alpha', sigma')`` at t (t validated to lie in [0, 1])."""
        return self.schedule(as_time(t))

    def log_snr(self, t: Tensor | float) -> Tensor:
        """Log signal-to-noise ratio ``lambda(t) = log(alpha^2 / sigma^2)`` (Kingma et al. 2021)."""
        return self.marginal_params(t).log_snr

    def _coefs(self, x0: Tensor, t: Tensor | float) -> ScheduleOutput:
        t = as_time(t, dtype=x0.dtype).to(device=x0.device, dtype=x0.dtype)
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x0.shape[0]):
            raise ValueError(
                f"t must be a scalar or have shape (batch,) = ({x0.shape[0]},), "
                f"got {tuple(t.shape)}"
            )
        return self.schedule(t).expand_like(x0)

    def sample(
        self,
        x0: Tensor,
        t: Tensor | float,
        *,
        noise: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Draw ``x_t = alpha(t) x_0 + sigma(t) eps``; returns ``(x_t, eps)``.

        ``t`` is a scalar or of shape (batch,); ``noise`` (eps) is drawn with
        ``generator`` unless given.
        """
        s = self._coefs(x0, t)
        if noise is None:
            noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
        elif noise.shape != x0.shape:
            raise ValueError(f"noise has shape {tuple(noise.shape)}, x0 {tuple(x0.shape)}")
        return s.alpha * x0 + s.sigma * noise, noise

    def conditional_velocity(self, x0: Tensor, noise: Tensor, t: Tensor | float) -> Tensor:
        """Flow-matching target ``u_t(x_t | x_0) = alpha'(t) x_0 + sigma'(t) eps``.

        The time derivative of ``x_t`` along the pair (x_0, eps) (Lipman et al. 2023,
        eq. 15, in our clock; for CondOT with sigma_min = 0 it is ``eps - x_0``).

        >>> path = GaussianPath(CondOTSchedule())
        >>> path.conditional_velocity(torch.tensor([[1.0]]), torch.tensor([[3.0]]), 0.5)
        tensor([[2.]])
        """
        return self._coefs(x0, t).velocity(x0, noise)


SCHEDULES: tuple[str, ...] = (
    "vp",
    "subvp",
    "vp-cosine",
    "ve",
    "ot",
    "ddpm-linear",
    "ddpm-cosine",
)
"""Names understood by :func:`make_schedule`."""


def make_schedule(name: str, **kwargs: float) -> Schedule:
    """Build a schedule from its name and keyword arguments (a JSON-friendly factory).

    ``"vp"`` → :class:`VPSchedule` (beta_min, beta_max), ``"subvp"`` →
    :class:`SubVPSchedule`, ``"vp-cosine"`` → :class:`VPCosineSchedule` (s), ``"ve"`` →
    :class:`VESchedule` (sigma_min, sigma_max), ``"ot"`` → :class:`CondOTSchedule`
    (sigma_min), ``"ddpm-linear"`` → ``DiscreteSchedule(linear_betas(T, beta_1, beta_T))``
    and ``"ddpm-cosine"`` → ``DiscreteSchedule(cosine_betas(T, s))`` (T defaults to 1000).

    >>> make_schedule("ve", sigma_max=10.0)
    VESchedule(sigma_min=0.01, sigma_max=10.0)
    >>> make_schedule("ddpm-linear", T=10)
    DiscreteSchedule(T=10, beta_1=0.0001, beta_T=0.02)
    """
    continuous: dict[str, Callable[..., Schedule]] = {
        "vp": VPSchedule,
        "subvp": SubVPSchedule,
        "vp-cosine": VPCosineSchedule,
        "ve": VESchedule,
        "ot": CondOTSchedule,
    }
    try:
        if name in continuous:
            return continuous[name](**kwargs)
        if name in ("ddpm-linear", "ddpm-cosine"):
            T = int(kwargs.pop("T", 1000))
            betas = linear_betas if name == "ddpm-linear" else cosine_betas
            return DiscreteSchedule(betas(T, **kwargs))
    except TypeError as err:
        raise TypeError(f"bad schedule_kwargs for schedule {name!r}: {err}") from err
    raise ValueError(f"unknown schedule {name!r}; choose one of {', '.join(SCHEDULES)}")
