"""How the adaptive methods of :func:`~probpath.solvers.odeint` size their steps: the
starting step (Hairer's HINIT), a PI controller on the error norm, and the underflow check.
Source: Hairer, Nørsett & Wanner, *Solving ODEs I* (2nd ed.), Sec. II.4; II: IV.2."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._rk import Func, SolverError
from ._tableaus import ButcherTableau

__all__ = ["StepControl", "check_step", "initial_step"]

_KI, _KP = 1.0, 0.2
"""PI controller gains in units of 1/k (k = ``error_order``): the integral gain 1/k is
the classical controller (and torchdiffeq's); the small proportional gain damps step
size oscillation (Söderlind 2002; Hairer & Wanner II, Sec. IV.2)."""


def initial_step(
    f: Func,
    y0: Tensor,
    k0: Tensor,
    t0: float,
    t_end: float,
    tab: ButcherTableau,
    rtol: float,
    atol: float,
    norm: Callable[[Tensor], float],
    tt: Callable[[float], Tensor],
) -> float:
    """Hairer, Nørsett & Wanner (1993), Sec. II.4, "Starting step size" (algorithm
    HINIT): ``h0 = 0.01 ||y0|| / ||f0||``, refined by one Euler step so that
    ``h^k max(||f0||, ||f'||) = 0.01``, from ``t0`` towards ``t_end``. Costs one evaluation
    of ``func``."""
    direction, span = (1.0 if t_end > t0 else -1.0), abs(t_end - t0)
    with torch.no_grad():
        scale = y0.abs().mul_(rtol).add_(atol)
        d0, d1 = norm(y0 / scale), norm(k0 / scale)
        h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
        h0 = min(h0, span)  # never evaluate func outside the span of t
        y1 = torch.add(y0, k0, alpha=direction * h0)
    k1 = f(tt(t0 + direction * h0), y1)
    with torch.no_grad():
        d2 = norm((k1 - k0) / scale) / h0
    dmax = max(d1, d2)
    if not math.isfinite(dmax):
        h1 = h0
    elif dmax <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / dmax) ** (1.0 / tab.error_order)
    return min(100 * h0, h1)


@dataclass(frozen=True)
class StepControl:
    """The step-size rule of an adaptive method: a PI controller on the error norm r
    (``r <= 1`` accepts), clipped to ``[dfactor, ifactor]`` times the last step."""

    order: float
    safety: float
    ifactor: float
    dfactor: float

    @classmethod
    def of(cls, tab: ButcherTableau, opts: Mapping[str, Any]) -> StepControl:
        return cls(
            tab.error_order,
            float(opts.get("safety", 0.9)),
            float(opts.get("ifactor", 10.0)),
            float(opts.get("dfactor", 0.2)),
        )

    def after_accept(self, err_norm: float, prev_err: float) -> float:
        """Growth factor ``safety r^-(KI+KP)/k r_prev^(KP/k)`` in ``[1, ifactor]``."""
        if err_norm == 0:
            return self.ifactor
        grow = self.safety * err_norm ** (-(_KI + _KP) / self.order)
        return min(self.ifactor, max(1.0, grow * prev_err ** (_KP / self.order)))

    def after_reject(self, err_norm: float) -> float:
        """Shrink factor ``safety r^(-1/k)``, at least ``dfactor``."""
        return max(self.dfactor, self.safety * err_norm ** (-1.0 / self.order))


def check_step(dt: float, t: float, t_end: float, eps: float, nonfinite: bool) -> None:
    """Raise when the step has underflowed (relative to t): the solve cannot progress."""
    if abs(dt) > 4 * eps * max(abs(t), abs(t_end), 1e-300):
        return
    if nonfinite:
        raise SolverError(
            f"func(t, y) is not finite (nan or inf) just after t={t:g}, however small "
            "the step; check func (and its inputs) there"
        )
    raise SolverError(
        f"step size underflow at t={t:g} (step {abs(dt):.3g}): the solution may "
        "blow up near this time, or the problem is stiff; check func there, "
        "loosen rtol/atol, or use a fixed-grid method"
    )
