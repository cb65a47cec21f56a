r"""Continuous normalizing flow trained by maximum likelihood (FFJORD).

A network f_θ(z, t) moves data to the base along dz/dt = f_θ(z, t); the instantaneous
change of variables (the seeds, lectures 12–13; Grathwohl et al. 2019, eq. 4) gives

.. math:: \log p(x) = \log \mathcal N(z(1); 0, I) + \int_0^1 \operatorname{tr}
          \frac{\partial f_θ}{\partial z}(z(t), t)\,dt,\qquad z(0) = x,

on probpath's clock (data at t = 0, base at t = 1; the seeds write the same formula with
the base at t_0 and the data at t_1, hence their minus sign). The trace is exact (cheap in
low dimension) or Hutchinson's estimate with one Rademacher or Gaussian probe per solve;
``trace="auto"`` picks the exact one up to dimension 3 (:data:`EXACT_TRACE_MAX_DIM`).
On images ``(C, H, W)`` the field is FFJORD's convolutional one
(:class:`probpath.nets.ConvField`, Grathwohl et al. 2019, Sec. 5.1) with Hutchinson's
Rademacher trace.
Training minimises the mean NLL, either by backpropagating through the solver's steps or
with the adjoint method, optionally plus RNODE's regularisers (Finlay et al. 2020)
λ_K ∫||f||² dt + λ_J ∫||εᵀ∂f/∂z||² dt, computed as extra channels of the same solve.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from probpath.likelihood import (
    Integrand,
    jacobian_frobenius,
    kinetic_energy,
    solve_augmented,
    standard_normal_log_prob,
)
from probpath.models._shape import (
    EXACT_TRACE_MAX_DIM,
    check_batch,
    data_shape,
    family_net,
    resolve_trace,
)
from probpath.models.base import LossOutput
from probpath.solvers import SolverStats, odeint

__all__ = ["CNF", "EXACT_TRACE_MAX_DIM"]


class CNF(nn.Module):
    """FFJORD: a free-form continuous normalizing flow.

    Args:
        dim: data dimension (vectors; default 2); ``shape``: one example's shape instead,
            ``[C, H, W]`` for images (``dim`` is its product).
        net: ``"auto"`` (:class:`~probpath.nets.ConvField` for images, else the MLP),
            ``"mlp"`` or ``"unet"`` (the convolutional field; :func:`probpath.nets.build_net`,
            role ``"cnf"``), ``net_config`` overriding its arguments (e.g.
            ``{"hidden": [32, 32, 32]}``); ``config`` keeps the resolved kind.
        hidden, activation, time_embedding: the :class:`~probpath.nets.MLP` field's.
        trace: ``"exact"`` (d vector-Jacobian products), ``"hutchinson"`` (one, unbiased) or
            ``"auto"`` (default: exact up to d = 3, :data:`EXACT_TRACE_MAX_DIM`), for training
            and evaluation; ``config`` keeps the resolved one.
        probe: Hutchinson probe, ``"rademacher"`` (lower variance) or ``"gaussian"``.
        method, rtol, atol: the ODE solver and its tolerances for ``log_prob``, sampling
            and encoding (evaluation).
        train_rtol, train_atol: the tolerances of the training loss's solve, looser than
            the evaluation's: a third fewer function evaluations per step, while the
            likelihood of the trained field read at 1e-5 agrees with the 1e-3 one to
            ~1e-3 nats (docs/cnf.md, "Defaults and why").
        adjoint: gradients by the adjoint method (memory independent of the number of
            steps) instead of backpropagation through the solver (faster on small problems;
            see docs/cnf.md).
        kinetic_reg, jacobian_reg: RNODE weights λ_K, λ_J (0 disables). The default
            λ_K = 0.01 keeps the field's NFE flat while it sharpens (on 8gaussians ~31
            instead of ~75 after 1000 steps) at no cost in likelihood.

    Example:
        >>> model = CNF(dim=2, hidden=(16, 16))
        >>> x = torch.randn(8, 2)
        >>> model.log_prob(x).shape, model.sample(3).shape
        (torch.Size([8]), torch.Size([3, 2]))
        >>> loss, logs = model.loss(x)
        >>> sorted(logs)
        ['kinetic', 'nfe', 'nll']
    """

    train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 3000,
        "batch_size": 512,
        "lr": 4e-3,
        "warmup_steps": 50,
        "schedule": "cosine",
    }
    """``probpath train --model cnf`` defaults (flags and config files override them):
    with the model's defaults, measured to reach the entropy within 0.01 nats on 8gaussians
    and 0.11 on checkerboard in under 10 minutes at 1 thread (docs/benchmarks.md, "CNF")."""

    image_train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 300,
        "batch_size": 64,
        "lr": 4e-3,
        "warmup_steps": 20,
        "schedule": "cosine",
    }
    """On images (the convolutional field, Hutchinson's trace): every step is an adaptive
    ODE solve, so a few hundred steps of a small batch. On digits (8x8) these reached 2.39
    test bits/dim where lr 1e-3 stayed at 2.96, the Gaussian baseline (docs/benchmarks.md,
    "Images")."""

    def __init__(
        self,
        dim: int | None = None,
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "tanh",
        time_embedding: str = "concat",
        trace: str = "auto",
        probe: str = "rademacher",
        method: str = "dopri5",
        rtol: float = 1e-5,
        atol: float = 1e-5,
        train_rtol: float = 1e-3,
        train_atol: float = 1e-3,
        adjoint: bool = False,
        kinetic_reg: float = 0.01,
        jacobian_reg: float = 0.0,
        *,
        shape: Sequence[int] | None = None,
        net: str = "auto",
        net_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.shape = data_shape(dim, shape)
        self.dim = math.prod(self.shape)
        trace = resolve_trace(trace, self.dim)
        if probe not in ("rademacher", "gaussian"):
            raise ValueError(f"probe must be 'rademacher' or 'gaussian', got {probe!r}")
        if min(rtol, atol, train_rtol, train_atol) <= 0:
            raise ValueError(
                f"tolerances must be positive, got rtol={rtol}, atol={atol}, "
                f"train_rtol={train_rtol}, train_atol={train_atol}"
            )
        if kinetic_reg < 0 or jacobian_reg < 0:
            raise ValueError("kinetic_reg and jacobian_reg are penalty weights: use values >= 0")
        self.net, kind, net_config = family_net(
            net, self.shape, role="cnf", net_config=net_config,
            mlp=dict(hidden=tuple(hidden), activation=activation, time_embedding=time_embedding),
        )  # fmt: skip
        self.config: dict[str, Any] = dict(
            dim=self.dim,
            shape=list(self.shape),
            net=kind,
            net_config=net_config,
            hidden=list(hidden),
            activation=activation,
            time_embedding=time_embedding,
            trace=trace,
            probe=probe,
            method=method,
            rtol=rtol,
            atol=atol,
            train_rtol=train_rtol,
            train_atol=train_atol,
            adjoint=adjoint,
            kinetic_reg=kinetic_reg,
            jacobian_reg=jacobian_reg,
        )
        self.adjoint = adjoint
        self._last_backward: SolverStats | None = None

    def velocity(self, x: Tensor, t: Tensor) -> Tensor:
        """The vector field f_θ(x, t), ``t`` of shape (batch,) or a scalar."""
        return self.net(x, t)

    def _solve_kwargs(self, training: bool = False) -> dict[str, Any]:
        c = self.config
        prefix = "train_" if training else ""
        return dict(
            trace=c["trace"],
            probe=c["probe"],
            method=c["method"],
            rtol=c[prefix + "rtol"],
            atol=c[prefix + "atol"],
            adjoint=self.adjoint,
            adjoint_params=tuple(self.net.parameters()),
        )

    def log_prob(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        n_probes: int = 1,
        fast: bool = False,
    ) -> Tensor:
        """log p(x) in nats, shape (batch,); with the Hutchinson trace an unbiased estimate,
        averaged over ``n_probes`` independent probes (variance / n_probes); ``fast=True``
        solves at the training tolerances (the trainer's periodic evaluation)."""
        check_batch(x, self.shape)
        sol = solve_augmented(
            self.net, x, t_start=0.0, t_end=1.0, generator=generator, n_probes=n_probes,
            **self._solve_kwargs(fast),
        )  # fmt: skip
        return standard_normal_log_prob(sol.z) - sol.delta_log_p

    def loss(self, x: Tensor, *, generator: torch.Generator | None = None) -> LossOutput:
        """Mean NLL (+ RNODE penalties), logging ``nll``, ``nfe`` (forward) and, with the
        adjoint, ``nfe_backward`` of the previous step's backward solve."""
        check_batch(x, self.shape)
        c = self.config
        names_integrands: list[tuple[str, float, Integrand]] = [
            (name, w, g)
            for name, w, g in (
                ("kinetic", c["kinetic_reg"], kinetic_energy),
                ("jacobian", c["jacobian_reg"], jacobian_frobenius),
            )
            if w > 0
        ]
        stats, back = SolverStats(0, 0, 0), SolverStats(0, 0, 0)
        sol = solve_augmented(
            self.net,
            x,
            t_start=0.0,
            t_end=1.0,
            generator=generator,
            integrands=[g for _, _, g in names_integrands],
            stats=stats,
            adjoint_stats=back if self.adjoint else None,
            **self._solve_kwargs(training=True),
        )
        nll = -(standard_normal_log_prob(sol.z) - sol.delta_log_p).mean()
        loss = nll
        logs = {"nll": float(nll.detach()), "nfe": float(stats.nfe)}
        for (name, w, _), r in zip(names_integrands, sol.integrals, strict=True):
            penalty = r.mean()
            loss = loss + w * penalty
            logs[name] = float(penalty.detach())
        if self.adjoint:
            if self._last_backward is not None:
                logs["nfe_backward"] = float(self._last_backward.nfe)
            self._last_backward = back
        return loss, logs

    def _flow(self, y: Tensor, ts: Tensor) -> Tensor:
        def f(t: Tensor, y: Tensor) -> Tensor:
            return self.net(y, t)

        c = self.config
        out = odeint(f, y, ts, rtol=c["rtol"], atol=c["atol"], method=c["method"])
        assert isinstance(out, Tensor)
        return out

    def encode(self, x: Tensor) -> Tensor:
        """Data (t = 0) to base (t = 1): z = x + ∫_0^1 f dt."""
        check_batch(x, self.shape)
        return self._flow(x, torch.tensor([0.0, 1.0], dtype=x.dtype, device=x.device))[-1]

    def decode(self, z: Tensor) -> Tensor:
        """Base (t = 1) to data (t = 0): x = z - ∫_0^1 f dt."""
        check_batch(z, self.shape)
        return self._flow(z, torch.tensor([1.0, 0.0], dtype=z.dtype, device=z.device))[-1]

    def _base(self, n: int, generator: torch.Generator | None) -> Tensor:
        p = next(self.parameters())
        return torch.randn(n, *self.shape, generator=generator, dtype=p.dtype, device=p.device)

    def sample(
        self, n: int, *, generator: torch.Generator | None = None, grad: bool = False
    ) -> Tensor:
        """``n`` samples: z ~ N(0, I) decoded from t = 1 to t = 0, shape (n, *shape); with an
        autograd graph through the solve only for ``grad=True``."""
        with torch.set_grad_enabled(grad):
            return self.decode(self._base(n, generator))

    def sample_with_log_prob(
        self, n: int, *, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        """``n`` samples and their log-density, from one augmented solve t = 1 → 0."""
        z = self._base(n, generator)
        sol = solve_augmented(
            self.net, z, t_start=1.0, t_end=0.0, generator=generator, **self._solve_kwargs()
        )
        return sol.z, standard_normal_log_prob(z) + sol.delta_log_p

    def trajectories(
        self, z_or_n: Tensor | int, n_times: int = 50, *, generator: torch.Generator | None = None
    ) -> Tensor:
        """Paths from the base (t = 1) to data (t = 0) at ``n_times`` equally spaced times,
        shape (n_times, n, *shape); ``z_or_n`` is a base sample or a number of points."""
        if n_times < 2:
            raise ValueError(f"n_times must be at least 2 (both ends), got {n_times}")
        z = self._base(z_or_n, generator) if isinstance(z_or_n, int) else z_or_n
        check_batch(z, self.shape)
        return self._flow(z, torch.linspace(1.0, 0.0, n_times, dtype=z.dtype, device=z.device))
