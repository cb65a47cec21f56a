r"""Exact log-likelihood along an ODE: the instantaneous change of variables.

For a state moving with a velocity field, dz/dt = v(z, t), the log-density along the path
obeys (the seeds' special case of Kolmogorov–Fokker–Planck, lectures 12–13; Chen et al. 2018,
Thm. 1)

.. math:: \frac{d}{dt}\log p_t(z(t)) = -\operatorname{tr}\frac{\partial v}{\partial z}(z(t), t).

probpath's clock puts data at t = 0 and the base N(0, I) at t = 1, so with z(0) = x

.. math:: \log p_0(x) = \log p_1(z(1)) + \int_0^1 \operatorname{tr}\frac{\partial v}{\partial z}
          (z(t), t)\,dt .

(The seeds put the base at t_0 and the data at t_1; swap the end points to read them.)
The solver integrates the augmented state ``(z, ℓ, r_1, ..., r_k)`` with
dℓ/dt = -tr ∂v/∂z, so ℓ = log p_end(z_end) - log p_start(z_start) in either direction,
and optional extra integrands dr_i/dt = g_i(point) (e.g. RNODE's regularisers, Finlay et al.
2020) ride along in the same solve. The trace is exact or Hutchinson's estimate
E[εᵀ (∂v/∂z) ε] with one probe ε drawn per solve (Grathwohl et al. 2019, FFJORD).

Every function takes a plain velocity ``v(x, t)`` with ``t`` of shape (batch,): a CNF's
network, a diffusion model's probability-flow drift, or a flow-matching field.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from probpath._gaussian import gaussian_kl, gaussian_log_prob, standard_normal_log_prob
from probpath.divergence import exact_divergence, hutchinson_divergence, sample_probe
from probpath.solvers import SolverStats, odeint, odeint_adjoint

__all__ = [
    "AugmentedSolution",
    "FieldPoint",
    "Integrand",
    "gaussian_kl",
    "gaussian_log_prob",
    "jacobian_frobenius",
    "kinetic_energy",
    "ode_log_prob",
    "sample_with_log_prob",
    "solve_augmented",
    "standard_normal_log_prob",
]

Velocity = Callable[[Tensor, Tensor], Tensor]
TRACES = ("exact", "hutchinson")


@dataclass(frozen=True)
class FieldPoint:
    """What the augmented field knows at one evaluation; extra integrands read it.

    Attributes:
        t: times, shape (batch,).
        z: state (requires grad), shape (batch, ...).
        velocity: v(z, t), shaped like ``z``.
        divergence: tr ∂v/∂z (exact or Hutchinson), shape (batch,).
        probe: the solve's probe ε (``None`` when none was drawn).
        create_graph: whether the caller differentiates through the solve.
        fn: ``y -> v(y, t)`` at this time (to re-evaluate when needed).
    """

    t: Tensor
    z: Tensor
    velocity: Tensor
    divergence: Tensor
    probe: Tensor | None
    create_graph: bool
    fn: Callable[[Tensor], Tensor]

    def probe_jacobian(self) -> Tensor:
        """The vector-Jacobian product εᵀ ∂v/∂z, shaped like ``z``."""
        if self.probe is None:
            raise ValueError("this solve drew no probe; pass a trace or integrands that need one")
        velocity, z = self.velocity, self.z
        if not self.create_graph:  # the divergence may have freed its graph; rebuild it
            z = z.detach().requires_grad_(True)
            velocity = self.fn(z)
        (vjp,) = torch.autograd.grad(
            velocity, z, self.probe, create_graph=self.create_graph, retain_graph=True
        )
        return vjp


Integrand = Callable[[FieldPoint], Tensor]
"""An extra channel g(point) -> (batch,) integrated along the same solve."""


def kinetic_energy(point: FieldPoint) -> Tensor:
    """RNODE's kinetic energy integrand ||v(z, t)||² (Finlay et al. 2020, eq. 4).

    Example:
        >>> p = FieldPoint(torch.zeros(1), torch.zeros(1, 2), torch.tensor([[3.0, 4.0]]),
        ...                torch.zeros(1), None, False, lambda y: y)
        >>> kinetic_energy(p)
        tensor([25.])
    """
    return point.velocity.pow(2).flatten(1).sum(1)


def jacobian_frobenius(point: FieldPoint) -> Tensor:
    """RNODE's Jacobian penalty ||εᵀ ∂v/∂z||², unbiased for ||∂v/∂z||_F² (Finlay et al. 2020).

    Uses the solve's probe ε (E[εεᵀ] = I gives E||εᵀJ||² = tr(JJᵀ) = ||J||_F²).

    Example:
        >>> z = torch.zeros(1, 2, requires_grad=True)
        >>> p = FieldPoint(torch.zeros(1), z, 3.0 * z, torch.zeros(1), torch.ones(1, 2),
        ...                True, lambda y: 3.0 * y)
        >>> jacobian_frobenius(p).tolist()  # ||3 ε||² with ε = (1, 1)
        [18.0]
    """
    return point.probe_jacobian().pow(2).flatten(1).sum(1)


@dataclass(frozen=True)
class AugmentedSolution:
    """End of an augmented solve from ``t_start`` to ``t_end``.

    Attributes:
        z: state at ``t_end``.
        delta_log_p: log p_{t_end}(z(t_end)) - log p_{t_start}(z(t_start)), shape (batch,).
        integrals: ∫_{t_start}^{t_end} g_i dt for each extra integrand, each (batch,).
    """

    z: Tensor
    delta_log_p: Tensor
    integrals: tuple[Tensor, ...]


class _AugmentedField:
    """``f(t, (z, ℓ, r...)) = (v, -tr ∂v/∂z, g_1, ..., g_k)`` in the solver's argument order."""

    def __init__(
        self, velocity: Velocity, trace: str, probe: Tensor | None, integrands: Sequence[Integrand]
    ) -> None:
        self.velocity, self.trace, self.probe, self.integrands = velocity, trace, probe, integrands

    def __call__(self, t: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        z = state[0]
        outer = torch.is_grad_enabled()
        tb = t.to(z.dtype).expand(z.shape[0])

        def fn(y: Tensor) -> Tensor:
            return self.velocity(y, tb)

        with torch.enable_grad():
            zg = z if (z.requires_grad and outer) else z.detach().requires_grad_(True)
            if self.trace == "exact":
                v, div = exact_divergence(fn, zg, create_graph=outer)
            else:
                assert self.probe is not None
                v, div = hutchinson_divergence(fn, zg, self.probe, create_graph=outer)
            point = FieldPoint(tb, zg, v, div, self.probe, outer, fn)
            extras = [g(point) for g in self.integrands]
        out = (v, -div, *extras)
        return out if outer else tuple(o.detach() for o in out)


def _default_adjoint_params(velocity: Velocity) -> tuple[Tensor, ...]:
    owner = velocity if isinstance(velocity, nn.Module) else getattr(velocity, "__self__", None)
    if isinstance(owner, nn.Module):
        return tuple(p for p in owner.parameters() if p.requires_grad)
    raise ValueError(
        "adjoint=True needs the parameters to differentiate: pass adjoint_params=... "
        "(use () for a field without parameters), or pass an nn.Module or its bound method."
    )


def solve_augmented(
    velocity: Velocity,
    z: Tensor,
    *,
    t_start: float,
    t_end: float,
    trace: str = "exact",
    probe: str = "rademacher",
    n_probes: int = 1,
    generator: torch.Generator | None = None,
    integrands: Sequence[Integrand] = (),
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    options: dict[str, Any] | None = None,
    adjoint: bool = False,
    adjoint_params: Iterable[Tensor] | None = None,
    adjoint_options: dict[str, Any] | None = None,
    stats: SolverStats | None = None,
    adjoint_stats: SolverStats | None = None,
) -> AugmentedSolution:
    """Integrate ``(z, ℓ, r...)`` from ``t_start`` to ``t_end``: the one augmented field.

    ℓ accumulates -tr ∂v/∂z (so it is the change of log-density along the path) and each
    r_i accumulates ``integrands[i]``. With ``trace="hutchinson"`` (or any integrand) one
    probe of kind ``probe`` is drawn for the whole solve from ``generator``; with
    ``n_probes > 1`` the batch is replicated with independent probes and ℓ and the r_i are
    averaged (variance / n_probes). ``adjoint=True`` uses ``odeint_adjoint`` (memory
    independent of the step count; seminorm by default); otherwise autograd backpropagates
    through the solver's steps. Works under ``torch.no_grad()``.

    Example:
        >>> sol = solve_augmented(lambda x, t: -x, torch.ones(1, 2), t_start=0.0, t_end=1.0)
        >>> round(sol.delta_log_p.item(), 4)  # -tr(-I) * 1 = 2
        2.0
    """
    if trace not in TRACES:
        raise ValueError(f"trace must be one of {TRACES}, got {trace!r}")
    if n_probes < 1:
        raise ValueError(f"n_probes must be a positive integer, got {n_probes}")
    if not isinstance(z, Tensor) or z.dim() < 2:
        raise ValueError("z must be a tensor of shape (batch, ...) with at least 2 dimensions")
    if not torch.isfinite(z).all():
        bad = (~torch.isfinite(z.flatten(1))).any(1).nonzero().flatten()[:5].tolist()
        raise ValueError(f"z has non-finite values (NaN or inf) in rows {bad}")
    batch = z.shape[0]
    eps = None
    if trace == "hutchinson" or integrands:
        if n_probes > 1:
            z = z.repeat(n_probes, *([1] * (z.dim() - 1)))
        eps = sample_probe(z, probe, generator=generator)  # type: ignore[arg-type]
    field = _AugmentedField(velocity, trace, eps, integrands)
    zeros = z.new_zeros(z.shape[0])
    y0 = (z, zeros, *(zeros for _ in integrands))
    ts = torch.tensor([t_start, t_end], dtype=z.dtype, device=z.device)
    kwargs: dict[str, Any] = dict(rtol=rtol, atol=atol, method=method, options=options)
    if adjoint:
        params = _default_adjoint_params(velocity) if adjoint_params is None else adjoint_params
        ys = odeint_adjoint(
            field,
            y0,
            ts,
            **kwargs,
            adjoint_params=tuple(params),
            adjoint_options=dict(norm="seminorm") if adjoint_options is None else adjoint_options,
            stats=stats,
            adjoint_stats=adjoint_stats,
        )
    else:
        ys = odeint(field, y0, ts, **kwargs, stats=stats)
    z_end, delta, *ints = (y[-1] for y in ys)
    if z_end.shape[0] != batch:  # average the probe replicas
        z_end = z_end[:batch]
        delta = delta.view(n_probes, batch).mean(0)
        ints = [r.view(n_probes, batch).mean(0) for r in ints]
    return AugmentedSolution(z_end, delta, tuple(ints))


def ode_log_prob(
    velocity: Velocity,
    x: Tensor,
    *,
    base_log_prob: Callable[[Tensor], Tensor] = standard_normal_log_prob,
    t0: float = 0.0,
    t1: float = 1.0,
    **solve_kwargs: Any,
) -> Tensor:
    r"""log p_{t0}(x) = log p_base(z(t1)) + ∫_{t0}^{t1} tr ∂v/∂z dt, shape (batch,).

    Integrates the augmented field of :func:`solve_augmented` from ``t0`` (data) to ``t1``
    (base); ``solve_kwargs`` are its keyword arguments (``trace``, ``probe``, ``n_probes``,
    ``generator``, ``method``, ``rtol``, ``atol``, ``options``, ``adjoint``,
    ``adjoint_params``, ``stats``, ...). With the Hutchinson trace the result is an unbiased
    estimate of the log-density's integral term.

    Example:
        >>> # v = -x/2 carries N(0, e^{-1} I) at t=0 to N(0, I) at t=1 (pure scaling)
        >>> x = torch.zeros(1, 2, dtype=torch.float64)
        >>> lp = ode_log_prob(lambda x, t: 0.5 * x, x)
        >>> import math
        >>> exact = -math.log(2 * math.pi) + 1.0  # log N(0; 0, e^{-1} I) in 2-D
        >>> abs(lp.item() - exact) < 1e-6
        True
    """
    sol = solve_augmented(velocity, x, t_start=t0, t_end=t1, **solve_kwargs)
    return base_log_prob(sol.z) - sol.delta_log_p


def sample_with_log_prob(
    velocity: Velocity,
    z: Tensor,
    *,
    base_log_prob: Callable[[Tensor], Tensor] = standard_normal_log_prob,
    t0: float = 0.0,
    t1: float = 1.0,
    **solve_kwargs: Any,
) -> tuple[Tensor, Tensor]:
    """Map base samples ``z`` (at ``t1``) to data (at ``t0``) with their log-density.

    The same augmented field as :func:`ode_log_prob`, run from t1 to t0:
    log p_{t0}(x) = log p_base(z) + ℓ(t0), ℓ = -∫_{t1}^{t0} tr ∂v/∂z dt.

    Example:
        >>> x, lp = sample_with_log_prob(lambda x, t: 0.5 * x, torch.randn(3, 2))
        >>> x.shape, lp.shape
        (torch.Size([3, 2]), torch.Size([3]))
    """
    sol = solve_augmented(velocity, z, t_start=t1, t_end=t0, **solve_kwargs)
    return sol.z, base_log_prob(z) + sol.delta_log_p
