"""The generic explicit Runge–Kutta step and the fixed-grid solver behind ``odeint``.

One step of a tableau ``(a, b, c)`` is ``k_i = f(t + c_i h, y + h sum_{j<i} a_ij k_j)``,
``y_1 = y + h sum_i b_i k_i`` (Hairer, Nørsett & Wanner, *Solving ODEs I*, Sec. II.1).
The fixed-grid loop makes no host–device synchronisation and branches on no tensor
value, so it runs asynchronously on CUDA and traces under ``torch.compile``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._checks import Layout, State
from ._tableaus import ButcherTableau

__all__ = ["Func", "SolverError", "SolverStats", "combine", "rk_stages", "solve_fixed"]

Terms = Sequence[tuple[int, float]]
Func = Callable[[Tensor, Tensor], Tensor]


class SolverError(RuntimeError):
    """A solve that cannot continue: step-size underflow, too many steps, or a
    non-finite state."""


@dataclass
class SolverStats:
    """Counters a solve adds to: pass ``stats=SolverStats()`` to :func:`odeint`.

    Attributes:
        nfe: number of evaluations of ``func``.
        n_accepted: accepted steps (every step of a fixed-grid method).
        n_rejected: steps rejected by the error control (adaptive methods).

    Counts are added, never reset, so one object can total several solves.

    Example:
        >>> import torch
        >>> from probpath.solvers import odeint
        >>> stats = SolverStats()
        >>> _ = odeint(lambda t, y: -y, torch.ones(3), torch.linspace(0, 1, 3),
        ...            method="rk4", stats=stats)
        >>> stats
        SolverStats(nfe=8, n_accepted=2, n_rejected=0)
    """

    nfe: int = 0
    n_accepted: int = 0
    n_rejected: int = 0


def combine(y: Tensor, ks: list[Tensor], terms: Terms, h: float) -> Tensor:
    """``y + h * sum_j c_j k_j`` over the non-zero ``(j, c_j)``: one fused op per term,
    out of place (autograd-safe)."""
    for j, c in terms:
        y = torch.add(y, ks[j], alpha=c * h)
    return y


def rk_stages(
    f: Func,
    a_terms: Sequence[Terms],
    times: Sequence[Tensor],
    y: Tensor,
    k0: Tensor,
    h: float,
) -> tuple[list[Tensor], Tensor]:
    """All stage derivatives of one step from ``(y, k0 = f(t, y))``, given the times of
    stages 1, 2, ...; also the input of the last stage (for FSAL: the new state)."""
    ks = [k0]
    yi = y
    for terms, ti in zip(a_terms, times, strict=True):
        yi = combine(y, ks, terms, h)
        ks.append(f(ti, yi))
    return ks, yi


def _check_finite(sol: Tensor, ts: list[float]) -> None:
    ok = torch.isfinite(sol.reshape(len(ts), -1)).all(dim=1).tolist()
    if not all(ok):
        bad = ts[ok.index(False)]
        raise SolverError(
            f"the solution is not finite (nan or inf) at t={bad:g}; func may blow up there, "
            "or the steps are too large for this problem (use smaller steps or an adaptive "
            "method such as 'dopri5')"
        )


def _fixed_grid(ts: list[float], opts: dict[str, Any]) -> tuple[list[float], list[int]]:
    """Step points and the indices of the output times among them; every output time
    is a step point, so outputs carry the method's full order."""
    if opts.get("grid_points") is not None:
        g = [float(x) for x in torch.as_tensor(opts["grid_points"]).reshape(-1).tolist()]
        lo, hi = min(ts[0], ts[-1]), max(ts[0], ts[-1])
        pts = sorted({*ts, *(x for x in g if lo < x < hi)}, reverse=ts[-1] < ts[0])
        where = {x: i for i, x in enumerate(pts)}
        return pts, [where[x] for x in ts]
    step = opts.get("step_size")
    grid, idx = [ts[0]], [0]
    for a, b in itertools.pairwise(ts):
        n = 1 if step is None else max(1, math.ceil(abs(b - a) / float(step) * (1 - 1e-12)))
        grid.extend(a + (b - a) * i / n for i in range(1, n))
        grid.append(b)
        idx.append(len(grid) - 1)
    return grid, idx


def solve_fixed(
    f: Func,
    tab: ButcherTableau,
    y0: Tensor,
    k0: Tensor,
    ts: list[float],
    opts: dict[str, Any],
    stats: SolverStats | None,
    layout: Layout,
) -> State:
    grid, out_idx = _fixed_grid(ts, opts)
    is_out = [False] * len(grid)
    for i in out_idx:
        is_out[i] = True
    n_st, c = tab.stages, tab.c
    stage_t = torch.tensor(
        [a + ci * (b - a) for a, b in itertools.pairwise(grid) for ci in c],
        dtype=layout.dtype,
        device=layout.device,
    ).unbind()
    a_terms, b_terms = tab.a_terms, tab.b_terms
    y, outs = y0, [y0]
    for n in range(len(grid) - 1):
        h = grid[n + 1] - grid[n]
        times = stage_t[n * n_st : (n + 1) * n_st]
        ks, _ = rk_stages(f, a_terms, times[1:], y, f(times[0], y) if n else k0, h)
        y = combine(y, ks, b_terms, h)
        if is_out[n + 1]:
            outs.append(y)
    if stats is not None:
        stats.nfe += (len(grid) - 1) * n_st
        stats.n_accepted += len(grid) - 1
    sol = torch.stack(outs)
    if opts.get("check_finite", True):
        _check_finite(sol, ts)
    return layout.stack(outs)
