"""Everything a model on a Gaussian path gets from its ``predict`` alone (private).

Shared by :class:`probpath.models.DiffusionModel` and :class:`probpath.guidance.GuidedModel`:
predictions in every kind, the samplers' clock and prior, the exact PF-ODE likelihood, and
:class:`PathSampling`, what a sampler entry reads from such a model.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import Tensor

from probpath import likelihood
from probpath._schedules import evaluate
from probpath._time import pad_like, shared_time
from probpath.models._shape import check_batch, resolve_trace
from probpath.parametrize import coefficients, convert_model
from probpath.paths import Schedule
from probpath.samplers.ode import probability_flow
from probpath.sdes import SDE, ProbabilityFlowODE

__all__ = ["PathPredictions", "PathSampling", "Prediction"]

Prediction = Callable[[Tensor, Tensor], Tensor]
"""``(x, t) -> tensor shaped like x``, ``t`` of shape (batch,): one kind of prediction."""

_View = TypeVar("_View", bound="PathSampling")


class PathPredictions:
    """Every kind, the samplers' start and clock, and the exact likelihood, from ``predict``.

    A mixin for anything that predicts along a Gaussian path: it needs ``predict(x, t, y)``
    (of kind ``prediction``) and the path it predicts on: ``schedule``, ``sde``, ``shape``
    (one example's, ``dim`` its size), ``t_min``, ``t_max`` (:meth:`_predict_on_path_of`
    takes them from another model), and :meth:`_like`, a 0-dim tensor giving the dtype and
    device of new tensors (by default the ``_anchor`` buffer).
    """

    prediction: str
    schedule: Schedule
    sde: SDE
    shape: tuple[int, ...]
    dim: int
    t_min: float
    t_max: float
    _anchor: Tensor

    def predict(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The raw prediction, of kind ``self.prediction``."""
        raise NotImplementedError(f"{type(self).__name__} must define predict")

    def _like(self) -> Tensor:
        """A 0-dim tensor with the dtype and device of new tensors."""
        return self._anchor

    def _predict_on_path_of(self, other: PathPredictions) -> None:
        """Take every input above but ``predict`` and :meth:`_like` from ``other``: a view of
        another model (e.g. :class:`probpath.guidance.GuidedModel`) predicts on its path."""
        self.prediction, self.schedule, self.sde = other.prediction, other.schedule, other.sde
        self.shape, self.dim = other.shape, other.dim
        self.t_min, self.t_max = other.t_min, other.t_max

    # --- predictions in every kind -------------------------------------------------------
    def as_kind(self, kind: str, *, check: bool = True) -> Callable[..., Tensor]:
        """``(x, t, y=None) -> prediction of kind`` (:func:`probpath.parametrize.convert_model`;
        ``predict`` itself for its own kind); ``check=False``: no divisor check (no host read),
        for a sampler's step."""
        if kind == self.prediction:
            return self.predict
        return convert_model(self.predict, self.schedule, self.prediction, kind, check=check)

    def score(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """s(x, t) ≈ ∇ log p_t(x) = -E[eps | x_t] / sigma."""
        return self.as_kind("score")(x, t, y=y)

    def velocity(
        self, x: Tensor, t: Tensor, y: Tensor | None = None, *, check: bool = True
    ) -> Tensor:
        """The PF-ODE drift ``f x - g^2 s / 2 = alpha' E[x0|x] + sigma' E[eps|x]``: the
        network itself when it predicts the velocity, else the drift of
        :class:`probpath.sdes.ProbabilityFlowODE` (its ``coefficients_at``) composed with the
        linear map prediction -> score (:func:`probpath.parametrize.coefficients`): one
        schedule evaluation and two operations on the batch; ``check``: as in :meth:`as_kind`."""
        if self.prediction == "velocity":
            return self.predict(x, t, y)
        # no host read in a sampler's step; the samplers' t.expand(batch) evaluated as one
        # time: 0.95x the PF-ODE Euler sampling time of a 3x128 MLP model at batch 1000
        # (benchmarks/bench_sampler_overhead.py --tricks)
        s = evaluate(self.schedule, shared_time(t))
        a, b = coefficients(self.prediction, "score", s, check=check)  # score = a x + b pred
        c_x, c_s = ProbabilityFlowODE.coefficients_at(s)  # drift = c_x x + c_s score
        pred = self.predict(x, t, y)
        return torch.addcmul(pred * pad_like(c_s * b, x), pad_like(c_x + c_s * a, x), x)

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
        ref = self._like() if like is None else like
        return torch.linspace(self.t_max, self.t_min, steps + 1, dtype=ref.dtype, device=ref.device)

    def prior_sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws of the prior at t_max, N(0, (alpha^2 + sigma^2) I)."""
        a = self._like()
        return self.sde.prior_sample(
            (n, *self.shape), t=self.t_max, generator=generator, dtype=a.dtype, device=a.device
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
        trace: str = "auto",
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
        ``trace``: ``"exact"``, ``"hutchinson"`` (unbiased; ``n_probes`` probes averaged) or
        ``"auto"`` (exact up to ``dim`` 3, :data:`probpath.models.EXACT_TRACE_MAX_DIM`).
        ``fast=True`` (the trainer's periodic evaluation) solves at rtol = atol = 1e-3.
        """
        check_batch(x, self.shape)
        if fast:
            rtol, atol = max(rtol, 1e-3), max(atol, 1e-3)
        return likelihood.ode_log_prob(
            self.velocity, x, base_log_prob=self.prior_log_prob, t0=self.t_min, t1=self.t_max,
            trace=resolve_trace(trace, self.dim), n_probes=n_probes, generator=generator,
            method=method, rtol=rtol, atol=atol, **solve_kwargs,
        )  # fmt: skip

    def sample_with_log_prob(
        self, n: int, *, generator: torch.Generator | None = None, **solve_kwargs: Any
    ) -> tuple[Tensor, Tensor]:
        """``n`` samples and their log-density from one augmented PF-ODE solve t_max → t_min
        (``trace`` as :meth:`log_prob`)."""
        kwargs: dict[str, Any] = dict(method="dopri5", rtol=1e-5, atol=1e-5) | solve_kwargs
        kwargs["trace"] = resolve_trace(kwargs.get("trace", "auto"), self.dim)
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


@dataclass(frozen=True)
class PathSampling:
    """What a sampler entry reads from a model on a Gaussian path.

    ``eps``, ``x0``, ``score``, ``velocity``: the predictions in each kind; ``time_grid(steps,
    like)``: ``steps + 1`` equal times from ``t_max`` to ``t_min``; ``schedule``, ``t_min``,
    ``t_max``: the path and the ends of sampling. Built by :meth:`of` from the object whose
    predictions are sampled (the model, or a guided view of it); a family whose samplers read
    more subclasses it (DDPM's chain, NCSN's levels), so a guided view, which gets its view
    from the model, cannot miss a field.
    """

    eps: Prediction
    x0: Prediction
    score: Prediction
    velocity: Prediction
    time_grid: Callable[[int, Tensor], Tensor]
    schedule: Schedule
    t_min: float
    t_max: float

    @classmethod
    def of(cls: type[_View], p: PathPredictions, **family: Any) -> _View:
        """The view of ``p``'s predictions and path, with the subclass's ``family`` fields."""
        eps, x0, score = (p.as_kind(k, check=False) for k in ("eps", "x0", "score"))
        velocity = functools.partial(p.velocity, check=False)  # the grid is checked once
        return cls(
            eps=eps, x0=x0, score=score, velocity=velocity, time_grid=p.time_grid,
            schedule=p.schedule, t_min=p.t_min, t_max=p.t_max, **family,
        )  # fmt: skip
