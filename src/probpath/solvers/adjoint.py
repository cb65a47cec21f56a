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
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ._checks import Layout, State
from ._norms import make_norm, rms_norm
from ._tableaus import ADAPTIVE
from .ode import SolverStats, odeint

__all__ = ["odeint_adjoint"]

Norm = Callable[[Tensor], Any]  # flat scaled error -> 0-dim tensor or float


@dataclass(frozen=True)
class _Problem:
    """Everything the backward pass needs that is not a tensor."""

    func: Callable[..., Any]
    is_tuple: bool
    shapes: tuple[torch.Size, ...]  # of the state's parts (one part for a tensor state)
    param_shapes: tuple[torch.Size, ...]
    stats: SolverStats | None  # the user's counters of the forward solve
    forward: dict[str, Any]  # keyword arguments of the forward odeint (without stats)
    backward: dict[str, Any]  # keyword arguments of each backward odeint
    guess_first_step: bool  # adaptive backward solve without a user-given first_step

    def unflatten(self, z: Tensor) -> State:
        if not self.is_tuple:
            return z.view(self.shapes[0])
        return tuple(p.view(s) for p, s in zip(z.split(self.sizes), self.shapes, strict=True))

    def flatten(self, y: State) -> Tensor:
        if isinstance(y, Tensor):
            return y.reshape(-1)
        return torch.cat([part.reshape(-1) for part in y])

    @property
    def sizes(self) -> list[int]:
        return [s.numel() for s in self.shapes]

    @property
    def param_sizes(self) -> list[int]:
        return [s.numel() for s in self.param_shapes]


class _AugmentedDynamics:
    """``d/dt [z, a_z, a_θ, a_t] = [f, -a_z^T ∂f/∂z, -a_z^T ∂f/∂θ, -a_z^T ∂f/∂t]`` on one vector.

    One evaluation of ``f`` with grad enabled and one ``torch.autograd.grad`` call give all
    three vector-Jacobian products; one ``torch.cat`` writes them into a flat tensor.
    """

    def __init__(self, problem: _Problem, params: tuple[Tensor, ...], time_grad: bool) -> None:
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
    def forward(ctx: Any, problem: _Problem, *inputs: Tensor) -> Any:
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
        problem: _Problem = ctx.problem
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


def _largest(norms: list[Any]) -> Any:
    if all(isinstance(n, Tensor) for n in norms):
        return torch.stack(norms).max()
    return max(float(n) for n in norms)


def _adjoint_norm(choice: Any, forward_norm: Any, problem: _Problem, y0: State) -> Norm:
    """Error norm of the backward solve of the flat ``[z, a_z, a_θ, a_t]``."""
    d, sizes = sum(problem.sizes), list(problem.param_sizes)
    n_p = sum(sizes)
    if callable(forward_norm):
        state_norm: Norm = lambda r: forward_norm(problem.unflatten(r))  # noqa: E731
    elif forward_norm == "rms":  # the default: tensor-valued, one host sync per step
        state_norm = lambda r: rms_norm(problem.unflatten(r))  # noqa: E731
    else:
        state_norm = make_norm(forward_norm, Layout.of(y0))

    def seminorm(r: Tensor) -> Any:
        # Kidger et al. (2021): a_θ and a_t are integrals that never feed back into the
        # dynamics, so their error need not limit the step size.
        return _largest([state_norm(r[:d]), state_norm(r[d : 2 * d])])

    def full(r: Tensor) -> Any:
        parts = r[2 * d : 2 * d + n_p].split(sizes)
        rms = [torch.linalg.vector_norm(p) / math.sqrt(p.numel()) for p in parts]
        return _largest([seminorm(r), r[-1].abs(), *rms])

    def custom(r: Tensor) -> Any:
        z, a_z = problem.unflatten(r[:d]), problem.unflatten(r[d : 2 * d])
        pieces = r[2 * d : 2 * d + n_p].split(sizes)
        a_params = [p.view(s) for p, s in zip(pieces, problem.param_shapes, strict=True)]
        z_parts, a_parts = (z, a_z) if problem.is_tuple else ((z,), (a_z,))
        return choice((r[-1], *z_parts, *a_parts, *a_params))

    if choice is None:
        return full
    if isinstance(choice, str) and choice == "seminorm":
        return seminorm
    if callable(choice):
        return custom
    raise ValueError(
        "adjoint_options['norm'] must be 'seminorm' (Kidger et al. 2021: ignore the parameter "
        "and time adjoints when choosing steps), a callable taking (a_t, *z, *a_z, *a_params) "
        f"and returning a 0-dim tensor, or left out for a norm over every channel; got {choice!r}"
    )


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
    if isinstance(y0, Tensor):
        parts: tuple[Tensor, ...] = (y0,)
    elif isinstance(y0, tuple) and y0 and all(isinstance(p, Tensor) for p in y0):
        parts = y0
    else:
        raise TypeError(f"y0 must be a tensor or a non-empty tuple of tensors, got {type(y0)}")
    if adjoint_params is None:
        if not isinstance(func, nn.Module):
            raise ValueError(
                "odeint_adjoint cannot see the tensors a plain function closes over, so it "
                "cannot return their gradients: pass them as adjoint_params=(w, b, ...), "
                "or adjoint_params=() if func uses none, or make func an nn.Module"
            )
        adjoint_params = func.parameters()
    all_params = tuple(adjoint_params)
    if not all(isinstance(p, Tensor) for p in all_params):
        raise TypeError("adjoint_params must be an iterable of tensors")
    params = tuple(p for p in all_params if p.requires_grad)
    for name, opts in (("options", options), ("adjoint_options", adjoint_options)):
        if opts is not None and not isinstance(opts, Mapping):
            raise TypeError(f"{name} must be a dict or None, got {type(opts).__name__}")
    if adjoint_method is None:
        adjoint_method = method
    elif adjoint_method != method and options and adjoint_options is None:
        raise ValueError(
            "adjoint_method differs from method, so the forward options cannot be reused for "
            "the backward solve: pass adjoint_options as well (e.g. adjoint_options={})"
        )
    forward_options = dict(options or {})
    backward_options = (
        {k: v for k, v in forward_options.items() if k != "norm"}
        if adjoint_options is None
        else dict(adjoint_options)
    )
    backward = dict(
        rtol=rtol if adjoint_rtol is None else adjoint_rtol,
        atol=atol if adjoint_atol is None else adjoint_atol,
        method=adjoint_method,
        options=backward_options,
        stats=adjoint_stats,  # SolverStats adds up over the backward solves
    )
    problem = _Problem(
        func=func,
        is_tuple=isinstance(y0, tuple),
        shapes=tuple(p.shape for p in parts),
        param_shapes=tuple(p.shape for p in params),
        stats=stats,
        forward=dict(rtol=rtol, atol=atol, method=method, options=options),
        backward=backward,
        guess_first_step=adjoint_method in ADAPTIVE and "first_step" not in backward_options,
    )
    if adjoint_method in ADAPTIVE or "norm" in backward_options:  # fixed grids take no norm
        norm = _adjoint_norm(
            backward_options.get("norm"), forward_options.get("norm", "rms"), problem, y0
        )
        backward_options["norm"] = norm
    outs = _OdeintAdjoint.apply(problem, t, *parts, *params)
    return tuple(outs) if problem.is_tuple else outs[0]
