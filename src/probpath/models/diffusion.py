r"""The shared base of every model on a Gaussian path (design.md, "One idea holds it together").

A :class:`DiffusionModel` is a network on the path ``x_t = alpha(t) x_0 + sigma(t) eps``
that predicts one *kind* (``eps``, ``x0``, ``score``, ``v`` or ``velocity``); through
:mod:`probpath.parametrize` it answers in every kind, so one model gets every sampler
(reverse SDE, predictor–corrector, the probability-flow ODE with any solver, EDM Heun) and
an exact log-likelihood by the instantaneous change of variables along the PF-ODE
(:func:`probpath.likelihood.ode_log_prob`). DDPM, NCSN, the score SDE and flow matching
are subclasses that only add their training loss (and, where they have one, samplers).

How a family plugs in (DDPM, NCSN, flow matching, the score SDE):

1. subclass, call ``super().__init__(dim=..., schedule=..., prediction=..., ...)`` and add
   your own keys to ``self.config`` (it must rebuild the model through
   ``probpath.models.build``);
2. implement ``loss(x, *, generator=None) -> (loss, logs)`` (use ``self.path.sample`` to
   noise the data and ``self.as_kind(kind)`` to read the network in your target's kind);
3. optionally add samplers: ``SAMPLERS = {**DiffusionModel.SAMPLERS, "ancestral":
   SamplerSpec(run, lambda options: 1, "eps", None)}`` (run, NFE per step, kind read,
   default steps, solver options) where ``run(model, x_T, steps, generator, options) ->
   (samples, nfe)``, and set ``default_sampler``. The CLI reads ``model.samplers`` and
   calls ``model.sample_with_nfe(n, sampler=..., steps=...)``;
4. optionally define ``nll_bound(x) -> Tensor`` (e.g. DDPM's ELBO); ``probpath eval``
   reports it next to the exact NLL.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from probpath import likelihood
from probpath.models._sampling import SamplerDispatch, SamplerSpec
from probpath.models.base import LossOutput
from probpath.nets import MLP
from probpath.parametrize import KINDS, convert_model
from probpath.paths import GaussianPath, make_schedule
from probpath.samplers.ode import edm_times, heun_edm, probability_flow
from probpath.samplers.sde import predictor_corrector, reverse_sde_euler
from probpath.sdes import SDE

__all__ = ["DiffusionModel", "SamplerSpec"]

_FIXED_NFE = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}


def _run_euler_maruyama(m: DiffusionModel, x: Tensor, steps: int | None, g: Any, o: dict) -> Any:
    ts = m.time_grid(steps or 1000, x)
    return reverse_sde_euler(m.score, x, ts, schedule=m.schedule, generator=g, **o)


def _run_pc(m: DiffusionModel, x: Tensor, steps: int | None, g: Any, o: dict) -> Any:
    ts = m.time_grid(steps or 500, x)
    return predictor_corrector(m.score, x, ts, schedule=m.schedule, generator=g, **o)


def _run_pf_ode(m: DiffusionModel, x: Tensor, steps: int | None, g: Any, o: dict) -> Any:
    o = dict(o)
    method = o.pop("method", "dopri5" if steps is None else "heun")
    if steps is None and method in _FIXED_NFE:
        steps = 100
    ts = m.time_grid(1 if steps is None else steps, x)
    return probability_flow(m.velocity, x, ts, method=method, generator=g, **o)


def _run_heun(m: DiffusionModel, x: Tensor, steps: int | None, g: Any, o: dict) -> Any:
    ts = edm_times(m.schedule, steps or 20, t_min=m.t_min, t_max=m.t_max, **o)
    return heun_edm(m.eps, x, ts.to(x), schedule=m.schedule, generator=g)


def _pf_ode_nfe(o: dict[str, Any]) -> int | None:
    return _FIXED_NFE.get(o.get("method", "heun"))


class DiffusionModel(SamplerDispatch, nn.Module):
    """A network on a Gaussian path, in any parametrisation, with every sampler.

    Args:
        dim: data dimension.
        schedule: a :func:`probpath.paths.make_schedule` name ("vp", "subvp", "vp-cosine",
            "ve", "ot", "ddpm-linear", "ddpm-cosine"); ``schedule_kwargs`` its arguments.
        prediction: the network's output kind: "eps", "x0", "score", "v" or "velocity".
        hidden, activation, time_embedding: the :class:`~probpath.nets.MLP`; the network
            sees ``t`` in [0, 1] (a DDPM index i is ``t = i / T``).
        t_min: the data end of sampling and likelihood (default 1e-5 for "ot", else 1e-3).
        t_max: the noise end; default 1, or ``1 - t_min`` where alpha(1) = 0.
        net: any callable ``net(x, t)`` instead of the MLP (e.g. an analytic oracle in tests,
            or a U-Net); it is not part of ``config``.

    Sampling: ``samplers`` lists the accepted names; ``sample(n, sampler=..., steps=...)``
    returns samples and ``sample_with_nfe`` also the NFE used.

    Example:
        >>> model = DiffusionModel(dim=2, schedule="vp", hidden=[16])
        >>> model.samplers
        ('euler-maruyama', 'heun', 'pc', 'pf-ode')
        >>> x, nfe = model.sample_with_nfe(4, sampler="heun", steps=5)
        >>> x.shape, nfe
        (torch.Size([4, 2]), 10)
        >>> model.log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    SAMPLERS: ClassVar[dict[str, SamplerSpec]] = {
        "euler-maruyama": SamplerSpec(_run_euler_maruyama, lambda o: 1, "score", 1000),
        "pc": SamplerSpec(_run_pc, lambda o: 1 + o.get("n_corrector", 1), "score", 500),
        "pf-ode": SamplerSpec(
            _run_pf_ode, _pf_ode_nfe, "velocity", None, ("method", "rtol", "atol", "options")
        ),
        "heun": SamplerSpec(_run_heun, lambda o: 2, "eps", 20),
    }
    default_sampler: ClassVar[str] = "pf-ode"
    _anchor: Tensor

    def __init__(
        self,
        dim: int = 2,
        schedule: str = "vp",
        schedule_kwargs: dict[str, Any] | None = None,
        prediction: str = "eps",
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "silu",
        time_embedding: str = "sinusoidal",
        t_min: float | None = None,
        t_max: float | None = None,
        *,
        net: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        if prediction not in KINDS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {KINDS}")
        kwargs = dict(schedule_kwargs or {})
        self.schedule = make_schedule(schedule, **kwargs)
        self.path = GaussianPath(self.schedule)
        t_min = (1e-5 if schedule == "ot" else 1e-3) if t_min is None else float(t_min)
        if t_max is None:
            t_max = 1.0 if float(self.schedule(torch.tensor(1.0)).alpha) > 0 else 1.0 - t_min
        if not 0.0 < t_min < t_max <= 1.0:
            raise ValueError(f"need 0 < t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
        self.dim, self.prediction, self.t_min, self.t_max = dim, prediction, t_min, float(t_max)
        self.config: dict[str, Any] = dict(
            dim=dim,
            schedule=schedule,
            schedule_kwargs=kwargs,
            prediction=prediction,
            hidden=list(hidden),
            activation=activation,
            time_embedding=time_embedding,
            t_min=t_min,
            t_max=self.t_max,
        )
        self.net = MLP(dim, hidden, activation, time_embedding) if net is None else net
        self.sde = SDE(self.schedule)
        # follows .to(dtype/device) even when the network has no parameters
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    # --- predictions in every kind -------------------------------------------------------
    def predict(self, x: Tensor, t: Tensor) -> Tensor:
        """The raw network output (of kind ``self.prediction``), ``t`` of shape (batch,)."""
        return self.net(x, t)

    def as_kind(self, kind: str) -> Callable[[Tensor, Tensor], Tensor]:
        """``(x, t) -> prediction of kind`` through :func:`probpath.parametrize.convert_model`."""
        return convert_model(self.predict, self.schedule, self.prediction, kind)

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """s(x, t) ≈ ∇ log p_t(x) = -E[eps | x_t] / sigma."""
        return self.as_kind("score")(x, t)

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """The PF-ODE drift ``alpha' x0 + sigma' eps = f x - g^2 s / 2``."""
        return self.as_kind("velocity")(x, t)

    def eps(self, x: Tensor, t: Tensor) -> Tensor:
        """E[eps | x_t]."""
        return self.as_kind("eps")(x, t)

    def x0(self, x: Tensor, t: Tensor) -> Tensor:
        """E[x_0 | x_t] (Tweedie's denoiser)."""
        return self.as_kind("x0")(x, t)

    def loss(self, x: Tensor, *, generator: torch.Generator | None = None) -> LossOutput:
        """The training objective: each family defines its own (DSM, L_simple, CFM, ...)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no training loss: DiffusionModel is a base class; "
            "use a family such as 'sde', 'ddpm' or 'flow_matching'"
        )

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
        **solve_kwargs: Any,
    ) -> Tensor:
        r"""log p_{t_min}(x) = log p_prior(z(t_max)) + ∫ tr ∂u/∂x dt along the PF-ODE, (batch,).

        Song et al. 2021, Sec. 4.3 and App. D.2: the instantaneous change of variables
        (:func:`probpath.likelihood.ode_log_prob`) with the velocity ``u`` of
        :meth:`velocity`, from ``t_min`` to ``t_max``, and the prior of :meth:`prior_log_prob`.
        """
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}")
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
