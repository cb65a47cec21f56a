"""Data laws whose every quantity along a Gaussian path is closed form: test oracles.

If ``x_0 ~ sum_k w_k N(m_k, S_k)`` and ``x_t = alpha x_0 + sigma eps``, then
``x_t ~ sum_k w_k N(alpha m_k, alpha^2 S_k + sigma^2 I)``. With
``S_k = U_k diag(lam_k) U_k^T`` and ``z = U_k^T (x - alpha m_k)``,
``var = alpha^2 lam_k + sigma^2``, each component gives (Bishop 2006, sec. 2.3.3):

- ``score_k = -U_k (z / var)``,
- ``E_k[x_0 | x_t] = m_k + U_k (alpha lam_k z / var)``,
- ``E_k[eps | x_t] = U_k (sigma z / var)`` (= ``-sigma score_k``),

and the mixture averages them with the class posterior ``r_k = p(k | x_t)``. The
velocity ``u = alpha' E[x_0 | x_t] + sigma' E[eps | x_t]`` is the probability-flow
ODE drift and the marginal flow-matching field. Tweedie's formula
``E[x_0 | x_t] = (x_t + sigma^2 score) / alpha`` holds by construction.

Every method takes ``(x, t)`` like a network: ``t`` is a float or a tensor of shape
(batch,) when the problem holds a ``schedule``, or a ``ScheduleOutput`` directly.
Computations run in the problem's dtype (float64 by default) on the device of its
parameters; outputs have x's dtype and device.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from probpath._gaussian import gaussian_log_prob
from probpath._schedules import ScheduleOutput

__all__ = ["Gaussian", "GaussianMixture"]

TimeLike = Tensor | float | ScheduleOutput


class GaussianMixture:
    """``p_0 = sum_k w_k N(m_k, S_k)`` under a Gaussian path, all in closed form.

    Args:
        weights: (K,) positive, normalised here.
        means: (K, d).
        covs: (K, d, d) full covariances, (K,) isotropic variances ``S_k = c_k I``,
            or a float shared by all components.
        schedule: optional ``t -> ScheduleOutput``, so methods accept plain times.
        dtype: working precision (float64).

    >>> from probpath.paths import VPSchedule
    >>> gm = GaussianMixture(torch.ones(2), torch.tensor([[-2.0], [2.0]]), 0.1, VPSchedule())
    >>> gm.class_posterior(torch.tensor([[2.0]]), torch.tensor([0.0]))[0, 1].item() > 0.99
    True
    """

    def __init__(
        self,
        weights: Tensor,
        means: Tensor,
        covs: Tensor | float,
        schedule: Callable[[Tensor], ScheduleOutput] | None = None,
        *,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        w = torch.as_tensor(weights, dtype=dtype)
        m = torch.as_tensor(means, dtype=dtype)
        if m.ndim != 2 or w.shape != (m.shape[0],):
            raise ValueError(
                f"means must be (K, d) and weights (K,), got {tuple(m.shape)}, {tuple(w.shape)}"
            )
        if not bool((w > 0).all()):
            raise ValueError("mixture weights must be positive")
        K, d = m.shape
        c = torch.as_tensor(covs, dtype=dtype)
        if c.ndim == 0:
            c = c.expand(K)
        if c.shape == (K,):
            c = c[:, None, None] * torch.eye(d, dtype=dtype)
        if c.shape != (K, d, d):
            raise ValueError(f"covs must be (K, d, d), (K,) or a float, got {tuple(c.shape)}")
        if not torch.allclose(c, c.transpose(-1, -2)):
            raise ValueError("covariances must be symmetric")
        lam, U = torch.linalg.eigh(c)
        if not bool((lam > 0).all()):
            raise ValueError("covariances must be positive definite")
        self.weights, self.means, self.covs = w / w.sum(), m, c
        self.eigvals, self.eigvecs = lam, U
        self.schedule = schedule
        self.dtype = dtype

    @property
    def dim(self) -> int:
        """Dimension d of the data."""
        return self.means.shape[1]

    def _tensor(self, v: Tensor | float) -> Tensor:
        # python floats go straight to the working dtype (no float32 round trip)
        if isinstance(v, Tensor):
            return v.to(device=self.means.device, dtype=self.dtype)
        return torch.as_tensor(v, device=self.means.device, dtype=self.dtype)

    def coefficients(self, t: TimeLike, batch: int | None = None) -> ScheduleOutput:
        """The path's ``(alpha, sigma, alpha', sigma')`` at t, in the working dtype."""
        if isinstance(t, ScheduleOutput):
            s = t
        elif self.schedule is None:
            raise ValueError(
                "pass t as a ScheduleOutput, or build the problem with a schedule "
                "(e.g. GaussianMixture(..., schedule=VPSchedule())) to pass plain times"
            )
        else:
            s = self.schedule(self._tensor(t))
        raw = (s.alpha, s.sigma, s.d_alpha, s.d_sigma)
        fields = [self._tensor(f) for f in raw]
        if batch is not None:
            fields = [f.expand(batch) if f.ndim == 0 else f for f in fields]
            if any(f.shape != (batch,) for f in fields):
                raise ValueError(f"t must be a scalar or have shape (batch,) = ({batch},)")
        return ScheduleOutput(*fields)

    def _components(self, x: Tensor, t: TimeLike) -> tuple[Tensor, ...]:
        """Per-component log-density (B, K), z / var, var and the coefficients."""
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}")
        s = self.coefficients(t, x.shape[0])
        x = x.to(device=self.means.device, dtype=self.dtype)
        a, sg = s.alpha[:, None, None], s.sigma[:, None, None]
        y = x[:, None, :] - a * self.means  # (B, K, d)
        z = torch.einsum("bkd,kde->bke", y, self.eigvecs)
        var = a**2 * self.eigvals + sg**2  # (B, K, d)
        log_comp = gaussian_log_prob(z, var=var, dim=-1)
        return log_comp + self.weights.log(), z / var, a, sg, s.d_alpha, s.d_sigma

    def _rotate(self, v: Tensor) -> Tensor:
        return torch.einsum("bke,kde->bkd", v, self.eigvecs)

    def log_prob(self, x: Tensor, t: TimeLike) -> Tensor:
        """``log p_t(x)``, shape (batch,)."""
        return torch.logsumexp(self._components(x, t)[0], -1).to(x)

    def class_posterior(self, x: Tensor, t: TimeLike) -> Tensor:
        """``p(k | x_t = x)``, shape (batch, K): the noisy-classifier oracle of guidance."""
        return torch.softmax(self._components(x, t)[0], -1).to(x)

    def score(self, x: Tensor, t: TimeLike) -> Tensor:
        """``grad_x log p_t(x) = -sum_k r_k U_k (z_k / var_k)``, shape (batch, d)."""
        logw, zv, *_ = self._components(x, t)
        r = torch.softmax(logw, -1)[..., None]
        return (r * self._rotate(-zv)).sum(1).to(x)

    def _posterior_means(self, x: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        """:meth:`posterior_means` in the working dtype."""
        logw, zv, a, sg, _, _ = self._components(x, t)
        r = torch.softmax(logw, -1)[..., None]
        x0 = self.means + self._rotate(a * self.eigvals * zv)
        eps = self._rotate(sg * zv)
        return (r * x0).sum(1), (r * eps).sum(1)

    def posterior_means(self, x: Tensor, t: TimeLike) -> tuple[Tensor, Tensor]:
        """``(E[x_0 | x_t = x], E[eps | x_t = x])``, each of shape (batch, d)."""
        x0, eps = self._posterior_means(x, t)
        return x0.to(x), eps.to(x)

    def x0_mean(self, x: Tensor, t: TimeLike) -> Tensor:
        """``E[x_0 | x_t = x]``: the ideal x0-prediction (denoiser)."""
        return self.posterior_means(x, t)[0]

    def eps_mean(self, x: Tensor, t: TimeLike) -> Tensor:
        """``E[eps | x_t = x] = -sigma score``: the ideal eps-prediction."""
        return self.posterior_means(x, t)[1]

    def velocity(self, x: Tensor, t: TimeLike) -> Tensor:
        """``u(x, t) = alpha' E[x_0 | x_t] + sigma' E[eps | x_t]`` (PF-ODE drift, FM field)."""
        s = self.coefficients(t, x.shape[0] if x.ndim == 2 else None)
        return s.velocity(*self._posterior_means(x, s)).to(x)

    def moments(self, t: TimeLike) -> tuple[Tensor, Tensor]:
        """Mean (d,) and covariance (d, d) of x_t at a scalar t."""
        s = self.coefficients(t)
        a, sg = s.alpha, s.sigma
        mean = a * (self.weights @ self.means)
        second = self.covs + self.means[:, :, None] * self.means[:, None, :]
        cov = a**2 * torch.einsum("k,kde->de", self.weights, second)
        return mean, cov + sg**2 * torch.eye(self.dim, dtype=self.dtype) - torch.outer(mean, mean)

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples of x_0, shape (n, d), in the working dtype."""
        k = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.dim, generator=generator, dtype=self.dtype)
        scale = self.eigvecs[k] * self.eigvals[k].sqrt()[:, None, :]  # U diag(sqrt(lam))
        return self.means[k] + torch.einsum("nde,ne->nd", scale, z)

    def sample_xt(
        self, n: int, t: TimeLike, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``n`` samples of ``(x_t, x_0)`` with ``x_t = alpha x_0 + sigma eps``."""
        s = self.coefficients(t, n)
        x0 = self.sample(n, generator=generator)
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.dtype)
        return s.alpha[:, None] * x0 + s.sigma[:, None] * eps, x0


class Gaussian(GaussianMixture):
    """``p_0 = N(mean, cov)`` under a Gaussian path: the one-component mixture.

    ``x_t ~ N(alpha m, alpha^2 S + sigma^2 I)``, so e.g. the score is
    ``-(alpha^2 S + sigma^2 I)^{-1} (x - alpha m)``.

    >>> from probpath.paths import CondOTSchedule
    >>> g = Gaussian(torch.zeros(2), torch.eye(2), CondOTSchedule())
    >>> g.score(torch.ones(1, 2), 0.5)
    tensor([[-2., -2.]])
    """

    def __init__(
        self,
        mean: Tensor,
        cov: Tensor | float,
        schedule: Callable[[Tensor], ScheduleOutput] | None = None,
        *,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        mean = torch.as_tensor(mean, dtype=dtype)
        if mean.ndim != 1:
            raise ValueError(f"mean must be a vector (d,), got shape {tuple(mean.shape)}")
        c = torch.as_tensor(cov, dtype=dtype)
        c = c[None] if c.ndim in (0, 2) else c
        super().__init__(torch.ones(1, dtype=dtype), mean[None], c, schedule, dtype=dtype)
