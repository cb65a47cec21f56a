"""The adjoint method: gradients of an ODE solve in memory independent of the step count.

Chen et al. (2018), "Neural Ordinary Differential Equations", Sec. 2; the seeds' Pontryagin
theorem (lectures 12-13). For ``z' = f(t, z, θ)`` and a loss ``L`` of the outputs, the adjoints
``a_z = ∂L/∂z(t)``, ``a_θ = ∂L/∂θ`` and ``a_t = ∂L/∂t`` obey, solved backwards in time::

    d a_z/dt = -a_z^T ∂f/∂z,    d a_θ/dt = -a_z^T ∂f/∂θ,    d a_t/dt = -a_z^T ∂f/∂t,

together with ``z`` itself (``dz/dt = f``), so no forward trajectory has to be stored.
The backward seminorm is Kidger, Chen & Lyons (2021), "Hey, that's not an ODE".
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import Tensor

from ._adjoint_problem import (
    AdjointProblem,
    backward_solve,
    params_to_differentiate,
    state_parts,
)
from ._checks import State
from .ode import SolverStats, odeint

__all__ = ["odeint_adjoint"]


class _AugmentedDynamics:
    """``d/dt [z, a_z, a_θ, a_t] = [f, -a_z^T ∂f/∂z, -a_z^T ∂f/∂θ, -a_z^T ∂f/∂t]`` on one vector.

    One evaluation of ``f`` with grad enabled and one ``torch.autograd.grad`` call give all
    three vector-Jacobian products; one ``torch.cat`` writes them into a flat tensor.
    """

    def __init__(
        self, problem: AdjointProblem, params: tuple[Tensor, ...], time_grad: bool
    ) -> None:
        self.func, self.flatten, self.unflatten = problem.func, problem.flatten, problem.unflatten
        self.params, self.time_grad = params, time_grad
        self.dim = sum(problem.sizes)

    def __call__(self, t: Tensor, aug: Tensor) -> Tensor:
        d = self.dim
        with torch.enable_grad():
            z = aug[:d].detach().requires_grad_(True)
            t_in = t.detach().requires_grad_(True) if self.time_grad else t
            f = self.flatten(self.func(t_in, self.unflatten(z)))
            wrt = (z, *self.params, t_in) if self.time_grad else (z, *self.params)
            vjps = torch.autograd.grad(f, wrt, -aug[d : 2 * d], allow_unused=True)
        pieces = [f.detach()]
        for vjp, x in zip(vjps, wrt, strict=True):  # None: f does not depend on x
            pieces.append(aug.new_zeros(x.numel()) if vjp is None else vjp.reshape(-1).to(aug))
        if not self.time_grad:
            pieces.append(aug.new_zeros(1))
        return torch.cat(pieces)


class _OdeintAdjoint(torch.autograd.Function):
    """Forward: solve under ``no_grad`` and save only the outputs. Backward: the adjoint ODE."""

    @staticmethod
    def forward(ctx: Any, problem: AdjointProblem, *inputs: Tensor) -> Any:
        n_state = len(problem.shapes)
        t, y0, params = inputs[0], inputs[1 : 1 + n_state], inputs[1 + n_state :]
        counts = SolverStats()
        with torch.no_grad():
            ys = odeint(
                problem.func, y0 if problem.is_tuple else y0[0], t, stats=counts, **problem.forward
            )
        if problem.stats is not None:
            problem.stats.nfe += counts.nfe
            problem.stats.n_accepted += counts.n_accepted
            problem.stats.n_rejected += counts.n_rejected
        # The backward solves carry z along the same path: the mean forward step is a good
        # first step for them, and saves the automatic first-step search.
        ctx.mean_step = abs(float(t[-1] - t[0])) / max(counts.n_accepted, 1)
        outs = tuple(ys) if problem.is_tuple else (ys,)
        ctx.problem = problem
        ctx.save_for_backward(t, *outs, *params)
        return outs

    @staticmethod
    def backward(ctx: Any, *grad_outs: Tensor) -> Any:
        problem: AdjointProblem = ctx.problem
        t, *saved = ctx.saved_tensors
        n_state = len(grad_outs)
        outs, params = saved[:n_state], tuple(saved[n_state:])
        n_t, time_grad = t.shape[0], bool(ctx.needs_input_grad[1])
        ys = torch.cat([y.reshape(n_t, -1) for y in outs], dim=1)  # (n_t, D): z(t_i)
        gs = torch.cat([g.reshape(n_t, -1) for g in grad_outs], dim=1)  # ∂L/∂y(t_i), direct
        d, n_p = ys.shape[1], sum(problem.param_sizes)
        dynamics = _AugmentedDynamics(problem, params, time_grad)
        aug = torch.cat([ys[-1], gs[-1], ys.new_zeros(n_p + 1)])
        t_grads = torch.zeros_like(t) if time_grad else None
        for i in range(n_t - 1, 0, -1):
            if t_grads is not None:  # moving the output time t_i moves y(t_i) along f
                f_i = problem.flatten(problem.func(t[i].to(ys), problem.unflatten(ys[i])))
                t_grads[i] = torch.dot(f_i, gs[i])
                aug[-1] -= t_grads[i].to(aug)
            span = t[i - 1 : i + 1].flip(0)
            kwargs = problem.backward
            if problem.guess_first_step:
                # about the mean forward step, but (k + 1/2) of them per interval: equal
                # steps never end one rounding error short of t_{i-1}
                width = abs(float(span[0] - span[1]))
                first = width / (math.ceil(width / ctx.mean_step) + 0.5)
                kwargs = {**kwargs, "options": {**kwargs["options"], "first_step": first}}
            aug = odeint(dynamics, aug, span, **kwargs)[1].clone()
            aug[:d] = ys[i - 1]  # restart z from the saved output: no drift of the reverse solve
            aug[d : 2 * d] += gs[i - 1]
        if t_grads is not None:
            t_grads[0] = aug[-1]
        grad_y0 = problem.unflatten(aug[d : 2 * d])
        grad_state = grad_y0 if isinstance(grad_y0, tuple) else (grad_y0,)
        grad_params = tuple(
            g.view_as(p).to(p.dtype)
            for g, p in zip(
                aug[2 * d : 2 * d + n_p].split(problem.param_sizes), params, strict=True
            )
        )
        return (None, t_grads, *grad_state, *grad_params)


def odeint_adjoint(
    func: Callable[..., State],
    y0: State,
    t: Tensor,
    *,
    rtol: float = 1e-7,
    atol: float = 1e-9,
    method: str = "dopri5",
    options: Mapping[str, Any] | None = None,
    stats: SolverStats | None = None,
    adjoint_rtol: float | None = None,
    adjoint_atol: float | None = None,
    adjoint_method: str | None = None,
    adjoint_options: Mapping[str, Any] | None = None,
    adjoint_params: Iterable[Tensor] | None = None,
    adjoint_stats: SolverStats | None = None,
) -> State:
    r"""Solve ``dy/dt = func(t, y)`` like :func:`odeint`, with gradients by the adjoint method.

    The forward solve runs under ``torch.no_grad()`` and only the outputs are kept, so memory
    does not grow with the number of solver steps. Backward, on each interval
    ``[t_{i-1}, t_i]`` the augmented state is solved from ``t_i`` back to ``t_{i-1}``
    (Pontryagin; Chen et al. 2018, Sec. 2; Kidger et al. 2021)::

        d/dt [z, a_z, a_θ, a_t] = [f, -a_z^T ∂f/∂z, -a_z^T ∂f/∂θ, -a_z^T ∂f/∂t]

    from ``z = y(t_i)``, adding the incoming ``∂L/∂y(t_i)`` to ``a_z`` at every output time.
    At the end ``a_z = ∂L/∂y0`` and ``a_θ = ∂L/∂θ``; the time gradients are
    ``∂L/∂t_i = ∂L/∂y(t_i) · f(t_i, y(t_i))`` for ``i > 0`` and ``∂L/∂t_0 = a_t(t_0)``.

    Args:
        func, y0, t, rtol, atol, method, options, stats: as for :func:`odeint`
            (``stats`` counts the forward solve).
        adjoint_rtol, adjoint_atol, adjoint_method: tolerances and method of the backward
            solve; the forward ones by default.
        adjoint_options: options of the backward solve; by default ``options`` without its
            ``norm``. Its ``norm`` may be ``"seminorm"`` (the error of ``a_θ`` and ``a_t``
            does not limit the step size: fewer backward steps, Kidger et al. 2021), a
            callable of the tuple ``(a_t, *z, *a_z, *a_params)`` returning a 0-dim tensor
            (torchdiffeq's convention), or absent: the forward norm on ``z`` and ``a_z``,
            the RMS of each parameter's adjoint and ``|a_t|``, the largest of them.
            Unless given, ``first_step`` is about the mean forward step (``z`` follows
            the same path backwards), which skips the automatic first-step search.
        adjoint_params: the tensors to differentiate; ``func.parameters()`` by default when
            ``func`` is an ``nn.Module``, required otherwise (``()`` if it closes over none).
        adjoint_stats: a :class:`SolverStats` given the totals of the backward solves.

    Example:
        >>> import torch
        >>> from probpath.solvers import odeint_adjoint
        >>> field = torch.nn.Linear(2, 2).double()
        >>> y0 = torch.ones(2, dtype=torch.float64, requires_grad=True)
        >>> t = torch.linspace(0.0, 1.0, 3, dtype=torch.float64)
        >>> ys = odeint_adjoint(lambda t, y: field(y), y0, t, adjoint_params=field.parameters())
        >>> ys.shape
        torch.Size([3, 2])
        >>> ys[-1].square().sum().backward()
        >>> y0.grad.shape, field.weight.grad.shape
        (torch.Size([2]), torch.Size([2, 2]))
    """
    parts = state_parts(y0)
    params = params_to_differentiate(func, adjoint_params)
    backward = backward_solve(
        rtol, atol, method, options, adjoint_rtol, adjoint_atol, adjoint_method, adjoint_options
    )
    backward["stats"] = adjoint_stats  # SolverStats adds up over the backward solves
    forward = dict(rtol=rtol, atol=atol, method=method, options=options)
    problem = AdjointProblem.of(func, y0, params, stats=stats, forward=forward, backward=backward)
    outs = _OdeintAdjoint.apply(problem, t, *parts, *params)
    return tuple(outs) if problem.is_tuple else outs[0]
