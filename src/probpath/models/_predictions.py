"""Everything a model on a Gaussian path gets from its ``predict`` alone (private).

Shared by :class:`probpath.models.DiffusionModel` and :class:`probpath.guidance.GuidedModel`:
predictions in every kind, the samplers' clock and prior, the exact PF-ODE likelihood.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from probpath import likelihood
from probpath.parametrize import convert_model
from probpath.paths import Schedule
from probpath.samplers.ode import probability_flow
from probpath.sdes import SDE

__all__ = ["PathPredictions"]


class PathPredictions:
    """Every kind, the samplers' start and clock, and the exact likelihood, from ``predict``.

    A mixin for anything that predicts along a Gaussian path: it needs ``predict(x, t, y)``
    (of kind ``prediction``), ``schedule``, ``sde``, ``dim``, ``t_min``, ``t_max`` and a
    0-dim ``_anchor`` tensor giving the dtype and device of new tensors.
    """

    prediction: str
    schedule: Schedule
    sde: SDE
    dim: int
    t_min: float
    t_max: float
    _anchor: Tensor

    def predict(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The raw prediction, of kind ``self.prediction``."""
        raise NotImplementedError(f"{type(self).__name__} must define predict")

    # --- predictions in every kind -------------------------------------------------------
    def as_kind(self, kind: str) -> Callable[..., Tensor]:
        """``(x, t, y=None) -> prediction of kind`` (:func:`probpath.parametrize.convert_model`;
        ``predict`` itself for its own kind)."""
        if kind == self.prediction:
            return self.predict
        return convert_model(self.predict, self.schedule, self.prediction, kind)

    def score(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """s(x, t) ≈ ∇ log p_t(x) = -E[eps | x_t] / sigma."""
        return self.as_kind("score")(x, t, y=y)

    def velocity(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The PF-ODE drift ``alpha' x0 + sigma' eps = f x - g^2 s / 2``."""
        return self.as_kind("velocity")(x, t, y=y)

    def eps(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """E[eps | x_t]."""
        return self.as_kind("eps")(x, t, y=y)

    def x0(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """E[x_0 | x_t] (Tweedie's denoiser)."""
        return self.as_kind("x0")(x, t, y=y)

    # --- sampling -----------------------------------------------------------------------
    def time_grid(self, steps: int, like: Tensor | None = None) -> Tensor:
        """``steps + 1`` equally spaced times from ``t_max`` down to ``t_min``."""
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"steps must be a positive int, got {steps!r}")
        ref = self._anchor if like is None else like
        return torch.linspace(self.t_max, self.t_min, steps + 1, dtype=ref.dtype, device=ref.device)

    def prior_sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws of the prior at t_max, N(0, (alpha^2 + sigma^2) I)."""
        a = self._anchor
        return self.sde.prior_sample(
            (n, self.dim), t=self.t_max, generator=generator, dtype=a.dtype, device=a.device
        )

    def initial_state(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Samplers start from the prior (:meth:`prior_sample`)."""
        return self.prior_sample(n, generator=generator)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log N(z; 0, (alpha(t_max)^2 + sigma(t_max)^2) I), shape (batch,)."""
        return self.sde.prior_log_prob(z, t=self.t_max)

    # --- exact likelihood along the PF-ODE -----------------------------------------------
    def log_prob(
        self,
        x: Tensor,
        *,
        trace: str = "exact",
        n_probes: int = 1,
        generator: torch.Generator | None = None,
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        fast: bool = False,
        **solve_kwargs: Any,
    ) -> Tensor:
        r"""log p_{t_min}(x) = log p_prior(z(t_max)) + ∫ tr ∂u/∂x dt along the PF-ODE, (batch,).

        Song et al. 2021, Sec. 4.3 and App. D.2: the instantaneous change of variables
        (:func:`probpath.likelihood.ode_log_prob`) with the velocity ``u`` of
        :meth:`velocity`, from ``t_min`` to ``t_max``, and the prior of :meth:`prior_log_prob`.
        ``fast=True`` (the trainer's periodic evaluation) solves at rtol = atol = 1e-3.
        """
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}")
        if fast:
            rtol, atol = max(rtol, 1e-3), max(atol, 1e-3)
        return likelihood.ode_log_prob(
            self.velocity, x, base_log_prob=self.prior_log_prob, t0=self.t_min, t1=self.t_max,
            trace=trace, n_probes=n_probes, generator=generator, method=method, rtol=rtol,
            atol=atol, **solve_kwargs,
        )  # fmt: skip

    def sample_with_log_prob(
        self, n: int, *, generator: torch.Generator | None = None, **solve_kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """``n`` samples and their log-density from one augmented PF-ODE solve t_max → t_min."""
        kwargs: dict[str, Any] = dict(method="dopri5", rtol=1e-5, atol=1e-5) | solve_kwargs
        return likelihood.sample_with_log_prob(
            self.velocity, self.prior_sample(n, generator=generator),
            base_log_prob=self.prior_log_prob, t0=self.t_min, t1=self.t_max,
            generator=generator, **kwargs,
        )  # fmt: skip

    def encode(self, x: Tensor, **options: Any) -> Tensor:
        """Data → noise along the PF-ODE (t_min → t_max); ``options`` as ``probability_flow``."""
        ts = torch.tensor([self.t_min, self.t_max], dtype=x.dtype, device=x.device)
        return probability_flow(self.velocity, x, ts, **options)[0]

    def decode(self, z: Tensor, **options: Any) -> Tensor:
        """Noise → data along the PF-ODE (t_max → t_min)."""
        ts = torch.tensor([self.t_max, self.t_min], dtype=z.dtype, device=z.device)
        return probability_flow(self.velocity, z, ts, **options)[0]
