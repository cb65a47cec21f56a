r"""Flow matching with conditional Gaussian probability paths (Lipman et al. 2023).

The seeds (lecture 13) fit a vector field by
:math:`\mathbb{E}_t\mathbb{E}_{x\sim p_t}\|u(x, t) - u_\theta(x, t)\|^2`; conditional flow
matching makes it trainable by regressing :math:`u_\theta` on the velocity of the path
:math:`x_t = \alpha(t) x_0 + \sigma(t) x_1` given the pair (data x_0, noise x_1)
(:func:`probpath.losses.conditional_flow_matching`). The minimiser is the marginal field,
which is the probability-flow ODE drift of the same path, so the model *is* a
:class:`~probpath.models.diffusion.DiffusionModel` predicting ``"velocity"``: it samples with
any ODE solver, has an exact log-likelihood by the instantaneous change of variables, and,
through velocity → score conversion, the reverse-SDE and predictor–corrector samplers.

Clock. The seeds (and Lipman et al.) put the base N(0, I) at t = 0 and the data at t = 1;
probpath puts the data at t = 0 and the noise at t = 1. So ``t = 1 - t_seeds`` and
``u(x, t) = -u_seeds(x, 1 - t)``; their CondOT path ``mu_t = t x_1``,
``sigma_t = 1 - (1 - sigma_min) t`` is our ``path="ot"``:
``alpha(t) = 1 - t``, ``sigma(t) = sigma_min + (1 - sigma_min) t``.

Minibatch OT (``ot_coupling=True``; Tong et al. 2024, Pooladian et al. 2023): the noise of
each batch is re-paired with the data by the exact optimal assignment
(:func:`probpath.coupling.ot_coupling`). The ends of the path keep their laws, so the ODE
samplers and the likelihood stay exact for the learned field, but x_1 is no longer
independent of x_0: the Gaussian-path identities behind velocity → score conversion fail,
and the score-based samplers are switched off for such a model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor

from probpath.coupling import ot_coupling
from probpath.losses import conditional_flow_matching
from probpath.models._path_samplers import pf_ode_entry
from probpath.models._shape import NetSpec, check_batch
from probpath.models.base import LossOutput
from probpath.models.diffusion import DiffusionModel, PathSampling, SamplerEntry
from probpath.samplers._common import Callback
from probpath.solvers import FIXED_STEP_NFE

__all__ = ["FlowMatching"]

PATHS = ("ot", "vp", "ve")
_ODE_METHODS = ("euler", "midpoint", "rk4")
_SCORE_SAMPLERS = ("euler-maruyama", "pc", "heun")  # need E[eps | x_t]: independent pairs


def _fixed_step_ode(method: str) -> SamplerEntry[PathSampling]:
    """The learned ODE with the fixed-step solver ``method``, 100 steps by default."""

    def run(
        m: PathSampling,
        x: Tensor,
        *,
        steps: int = 100,
        generator: torch.Generator | None = None,
        callback: Callback | None = None,
    ) -> tuple[Tensor, int]:
        return pf_ode_entry(
            m, x, steps=steps, method=method, generator=generator, callback=callback
        )

    nfe = FIXED_STEP_NFE[method]
    return SamplerEntry(run, lambda o: nfe)


def _dopri5(
    m: PathSampling,
    x: Tensor,
    *,
    steps: int = 1,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    options: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    """The learned ODE with adaptive dopri5 at ``rtol``/``atol``; ``steps``: the intervals of
    the output grid (the solver picks its own steps)."""
    return pf_ode_entry(
        m, x, steps=steps, method="dopri5", rtol=rtol, atol=atol, options=options,
        generator=generator, callback=callback,
    )  # fmt: skip


class FlowMatching(DiffusionModel):
    """Conditional flow matching on a Gaussian path ("fm" in the registry).

    Args:
        dim, shape: the data's dimension or one example's shape (see :class:`DiffusionModel`).
        path: ``"ot"`` (CondOT, straight lines, Lipman et al. 2023 eq. 20), ``"vp"``
            (variance preserving, their eq. 19 in our clock) or ``"ve"`` (variance exploding).
        sigma_min: the noise left at the data end, ``sigma(0)`` ("ot", default 0) or the
            smallest VE noise level ("ve", default 0.01); not used by "vp".
        ot_coupling: pair each batch's noise with its data by the exact minibatch OT plan.
        schedule_kwargs: any other arguments of the schedule (e.g. ``beta_max`` for "vp").
        hidden, activation, time_embedding, net, net_config, t_min, t_max, n_classes,
            p_uncond: as :class:`DiffusionModel`; the MLP's time enters by concatenation
            (``"concat"``) by default: the sinusoidal features' high frequencies make the
            learned ODE stiff in t for adaptive solvers.

    Samplers: ``"euler"``, ``"midpoint"``, ``"rk4"`` (fixed steps, default 100) and
    ``"dopri5"`` (adaptive, the default) integrate the learned ODE; ``"pf-ode"`` takes any
    ``method``; ``"euler-maruyama"``, ``"pc"`` and ``"heun"`` go through the score.

    Example:
        >>> model = FlowMatching(dim=2, hidden=[16], ot_coupling=True)
        >>> loss, logs = model.loss(torch.randn(8, 2))
        >>> sorted(logs), model.sample(3, sampler="euler", steps=4).shape
        (['cfm'], torch.Size([3, 2]))
        >>> model.samplers
        ('dopri5', 'dpm', 'euler', 'midpoint', 'pf-ode', 'rk4')
    """

    SAMPLERS: ClassVar[Mapping[str, SamplerEntry[PathSampling]]] = {
        **DiffusionModel.SAMPLERS,
        **{m: _fixed_step_ode(m) for m in _ODE_METHODS},
        "dopri5": SamplerEntry(_dopri5, lambda o: None),
    }
    default_sampler = "dopri5"

    def __init__(
        self,
        dim: int | None = None,
        path: str = "ot",
        sigma_min: float | None = None,
        ot_coupling: bool = False,
        schedule_kwargs: dict[str, Any] | None = None,
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "silu",
        time_embedding: str = "concat",
        t_min: float | None = None,
        t_max: float | None = None,
        *,
        shape: Sequence[int] | None = None,
        net: NetSpec = "auto",
        net_config: dict[str, Any] | None = None,
        n_classes: int = 0,
        p_uncond: float = 0.1,
    ) -> None:
        if path not in PATHS:
            raise ValueError(f"unknown path {path!r}; flow matching accepts {', '.join(PATHS)}")
        if not isinstance(ot_coupling, bool):
            raise TypeError(f"ot_coupling must be true or false, got {ot_coupling!r}")
        kwargs = dict(schedule_kwargs or {})
        if sigma_min is not None:
            if path == "vp":
                raise ValueError("sigma_min applies to path='ot' or 've'; the VP path has none")
            kwargs["sigma_min"] = float(sigma_min)
        super().__init__(
            dim=dim,
            schedule=path,
            schedule_kwargs=kwargs,
            prediction="velocity",
            hidden=hidden,
            activation=activation,
            time_embedding=time_embedding,
            t_min=t_min,
            t_max=t_max,
            shape=shape,
            net=net,
            net_config=net_config,
            n_classes=n_classes,
            p_uncond=p_uncond,
        )
        base = {k: v for k, v in self.config.items() if k not in ("schedule", "prediction")}
        self.config = dict(base, path=path, sigma_min=sigma_min, ot_coupling=ot_coupling)
        self.ot_coupling = ot_coupling

    def _unavailable(self, sampler: str) -> str | None:
        """The score samplers, with ``ot_coupling`` (see the module doc)."""
        if not (self.ot_coupling and sampler in _SCORE_SAMPLERS):
            return None
        odes = ", ".join(s for s in sorted(self.SAMPLERS) if s not in _SCORE_SAMPLERS)
        return (
            f"sampler {sampler!r} needs the score, which an OT-coupled flow-matching "
            f"model does not define (its noise depends on the data); use an ODE sampler: {odes}"
        )

    def loss(
        self, x: Tensor, *, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> LossOutput:
        """CFM loss on the batch ``x`` (data at t = 0) with N(0, I) noise at t = 1, logging
        ``cfm``; times are uniform on [t_min, 1] (the VP velocity is infinite at t = 0).
        With labels ``y``, classifier-free training (:meth:`with_labels`)."""
        check_batch(x, self.shape)
        noise = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
        if self.ot_coupling:
            noise = ot_coupling(x, noise)
        velocity = self.with_labels(self.predict, x, y, generator)
        loss = conditional_flow_matching(
            velocity, x, self.path, x1=noise, t_min=self.t_min, generator=generator
        )
        return loss, {"cfm": loss.detach()}
