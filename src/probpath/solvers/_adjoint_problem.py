"""What an adjoint solve needs besides tensors (:class:`AdjointProblem`), built from the
arguments of :func:`~probpath.solvers.odeint_adjoint`, and the error norm of its backward
solves (with Kidger, Chen & Lyons' 2021 seminorm)."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from ._checks import Layout, State
from ._norms import make_norm, rms_norm
from ._rk import SolverStats
from ._tableaus import ADAPTIVE

__all__ = [
    "AdjointProblem",
    "adjoint_norm",
    "backward_solve",
    "params_to_differentiate",
    "state_parts",
]

Norm = Callable[[Tensor], Any]  # flat scaled error -> 0-dim tensor or float


@dataclass(frozen=True)
class AdjointProblem:
    """Everything the backward pass of :func:`~probpath.solvers.odeint_adjoint` needs that is
    not a tensor."""

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

    @classmethod
    def of(
        cls,
        func: Callable[..., Any],
        y0: State,
        params: tuple[Tensor, ...],
        *,
        stats: SolverStats | None,
        forward: dict[str, Any],
        backward: dict[str, Any],
    ) -> AdjointProblem:
        """The problem of solving ``func`` from ``y0`` and differentiating ``params``; sets
        the norm of the backward solve (:func:`adjoint_norm`) in ``backward["options"]``."""
        options = backward["options"]
        problem = cls(
            func=func,
            is_tuple=isinstance(y0, tuple),
            shapes=tuple(p.shape for p in state_parts(y0)),
            param_shapes=tuple(p.shape for p in params),
            stats=stats,
            forward=forward,
            backward=backward,
            guess_first_step=backward["method"] in ADAPTIVE and "first_step" not in options,
        )
        if backward["method"] in ADAPTIVE or "norm" in options:  # fixed grids take no norm
            forward_norm = (forward["options"] or {}).get("norm", "rms")
            options["norm"] = adjoint_norm(options.get("norm"), forward_norm, problem, y0)
        return problem


def _largest(norms: list[Any]) -> Any:
    if all(isinstance(n, Tensor) for n in norms):
        return torch.stack(norms).max()
    return max(float(n) for n in norms)


def adjoint_norm(choice: Any, forward_norm: Any, problem: AdjointProblem, y0: State) -> Norm:
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


def state_parts(y0: State) -> tuple[Tensor, ...]:
    """The tensors of the state ``y0``: itself, or the parts of a tuple state."""
    if isinstance(y0, Tensor):
        return (y0,)
    if isinstance(y0, tuple) and y0 and all(isinstance(p, Tensor) for p in y0):
        return y0
    raise TypeError(f"y0 must be a tensor or a non-empty tuple of tensors, got {type(y0)}")


def params_to_differentiate(
    func: Callable[..., State], adjoint_params: Iterable[Tensor] | None
) -> tuple[Tensor, ...]:
    """The tensors of ``adjoint_params`` (``func.parameters()`` of an ``nn.Module`` by
    default) that require grad."""
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
    return tuple(p for p in all_params if p.requires_grad)


def backward_solve(
    rtol: float,
    atol: float,
    method: str,
    options: Mapping[str, Any] | None,
    adjoint_rtol: float | None,
    adjoint_atol: float | None,
    adjoint_method: str | None,
    adjoint_options: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """``rtol``, ``atol``, ``method`` and ``options`` of the backward solves: the forward ones
    where the ``adjoint_`` ones are not given, the options without the forward ``norm``."""
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
    backward_options = (
        {k: v for k, v in (options or {}).items() if k != "norm"}
        if adjoint_options is None
        else dict(adjoint_options)
    )
    return dict(
        rtol=rtol if adjoint_rtol is None else adjoint_rtol,
        atol=atol if adjoint_atol is None else adjoint_atol,
        method=adjoint_method,
        options=backward_options,
    )
