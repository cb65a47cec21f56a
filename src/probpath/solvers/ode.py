"""ODE solvers: :func:`odeint`, a drop-in for ``torchdiffeq.odeint``.

Explicit Runge–Kutta methods given as Butcher tableaux (``_tableaus.py``) and run by
one generic step. Fixed-grid methods (euler, midpoint, heun, rk4) never synchronise
with the device; adaptive methods (bosh3, dopri5) read the error norm on the host once
per step to choose the next step size. Source: Hairer, Nørsett & Wanner, *Solving
Ordinary Differential Equations I* (2nd ed.), Ch. II.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ._checks import Layout, State, check_method, check_options, check_t, check_tolerances
from ._norms import make_norm
from ._rk import Func, SolverError, SolverStats, combine, rk_stages, solve_fixed
from ._step_size import StepControl, check_step, initial_step
from ._tableaus import ButcherTableau, Terms

__all__ = ["SolverError", "SolverStats", "odeint"]

MAX_NUM_STEPS = 100_000
"""Default ``options['max_num_steps']``: finite, so a stiff or singular problem fails
with a message instead of hanging."""


def _error_norm(
    ks: list[Tensor],
    e_terms: Terms,
    dt: float,
    rtol: float,
    atol: float,
    ay: Tensor,
    y_new: Tensor,
    norm: Callable[[Tensor], float],
) -> tuple[float, Tensor]:
    """``norm(r)`` of the scaled error ``r = err / (atol + rtol max(|y_n|, |y_{n+1}|))``, with
    ``err = h sum_i (b_i - b̂_i) k_i``, and ``|y_{n+1}|`` (the next step's ``|y_n|``)."""
    # r = err / (atol + rtol m) = (err / rtol) / (m + atol / rtol): two ops fewer
    err = torch.mul(ks[e_terms[0][0]], e_terms[0][1] * dt / rtol)
    err = combine(err, ks, e_terms[1:], dt / rtol)
    ay_new = y_new.abs()
    return norm(err.div_(torch.maximum(ay, ay_new).add_(atol / rtol))), ay_new


def _check_budget(n_steps: int, max_steps: int, t: float, t_end: float) -> None:
    if n_steps >= max_steps:
        raise SolverError(
            f"reached max_num_steps={max_steps} at t={t:g} before t={t_end:g}; the "
            "problem may be stiff or the tolerances too tight: loosen rtol/atol, or "
            "raise options['max_num_steps']"
        )


def _check_finite_state(y: Tensor, k: Tensor, t: float) -> None:
    """Raise when a non-finite error norm comes from the state or ``func`` at ``t`` itself
    (a smaller step cannot help), not from the step's later stages."""
    if not (bool(torch.isfinite(y).all()) and bool(torch.isfinite(k).all())):
        raise SolverError(
            f"the state or func(t, y) is not finite (nan or inf) at t={t:g}; func may blow up there"
        )


def _dense_output(
    dense: Callable[[float], tuple[float, ...]],
    y: Tensor,
    ks: list[Tensor],
    t: float,
    dt: float,
    s: float,
) -> Tensor:
    """``y`` at a time ``s`` inside the accepted step from ``t`` by ``dt``, from the method's
    continuous extension ``y + dt sum_i w_i(theta) k_i``, ``theta = (s - t) / dt``."""
    w = dense((s - t) / dt)
    return combine(y, ks, [(j, x) for j, x in enumerate(w) if x != 0.0], dt)


def _solve_adaptive(
    f: Func,
    tab: ButcherTableau,
    y0: Tensor,
    k0: Tensor,
    ts: list[float],
    rtol: float,
    atol: float,
    opts: dict[str, Any],
    stats: SolverStats | None,
    layout: Layout,
) -> State:
    """Adaptive steps from ``ts[0]`` to ``ts[-1]`` (accepted when the error norm is <= 1,
    sized by :class:`StepControl`); the outputs between steps come from dense output."""
    dtype, device = layout.dtype, layout.device

    def tt(t: float) -> Tensor:
        return torch.scalar_tensor(t, dtype=dtype, device=device)

    norm = make_norm(opts.get("norm", "rms"), layout)
    max_steps = opts.get("max_num_steps", MAX_NUM_STEPS)
    control = StepControl.of(tab, opts)
    a_terms, e_terms, c1, dense = tab.a_terms, tab.e_terms, tab.c[1:], tab.dense
    # error control is never differentiated; skip the context switch when grad is off
    no_grad = torch.no_grad() if torch.is_grad_enabled() else contextlib.nullcontext()
    assert dense is not None and tab.fsal

    t0, t_end = ts[0], ts[-1]
    direction = 1.0 if t_end > t0 else -1.0
    if opts.get("first_step") is not None:
        h, nfe = float(opts["first_step"]), 1
    else:
        h, nfe = initial_step(f, y0, k0, t0, t_end, tab, rtol, atol, norm, tt), 2
    y = y0
    with torch.no_grad():
        ay = y.abs()
    t, prev_err, n_acc, n_rej, i_out, outs = t0, 1.0, 0, 0, 1, [y0]
    eps, nonfinite = torch.finfo(dtype).eps, False
    try:
        while i_out < len(ts):
            _check_budget(n_acc + n_rej, max_steps, t, t_end)
            dt = direction * h
            last = (t + dt - t_end) * direction >= 0
            if last:
                dt = t_end - t
            check_step(dt, t, t_end, eps, nonfinite)
            t_new = t_end if last else t + dt
            ks, y_new = rk_stages(f, a_terms, [tt(t + ci * dt) for ci in c1], y, k0, dt)
            nfe += len(a_terms)
            with no_grad:
                err_norm, ay_new = _error_norm(ks, e_terms, dt, rtol, atol, ay, y_new, norm)
            if not math.isfinite(err_norm):
                _check_finite_state(y, k0, t)
                n_rej += 1
                h, nonfinite = abs(dt) * control.dfactor, True
                continue
            nonfinite = False
            if err_norm > 1.0:
                n_rej += 1
                h = abs(dt) * control.after_reject(err_norm)
                continue
            while i_out < len(ts) and (ts[i_out] - t_new) * direction < 0:
                outs.append(_dense_output(dense, y, ks, t, dt, ts[i_out]))
                i_out += 1
            if i_out < len(ts) and ts[i_out] == t_new:
                outs.append(y_new)
                i_out += 1
            t, y, k0, ay = t_new, y_new, ks[-1], ay_new
            n_acc += 1
            h = abs(dt) * control.after_accept(err_norm, prev_err)
            prev_err = max(err_norm, 1e-4)
    finally:  # also counts the work of a failed solve
        if stats is not None:
            stats.nfe += nfe
            stats.n_accepted += n_acc
            stats.n_rejected += n_rej
    return layout.stack(outs)


def _first_call(
    func: Callable[[Tensor, Any], Any], t0: float, y0: State, layout: Layout
) -> tuple[Func, Tensor]:
    """``func`` on flat states and its flat value at ``(t0, y0)``, the first stage of every
    method; the output is checked against ``y0`` here, once, not per step."""
    out0 = func(torch.scalar_tensor(t0, dtype=layout.dtype, device=layout.device), y0)
    cast = layout.check_output(out0)
    return layout.wrap(func, cast), layout.flatten(out0).to(layout.dtype)


def odeint(
    func: Callable[[Tensor, Any], Any],
    y0: State,
    t: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-7,
    atol: float = 1e-9,
    options: Mapping[str, Any] | None = None,
    stats: SolverStats | None = None,
) -> State:
    r"""Solve ``dy/dt = func(t, y)``, ``y(t[0]) = y0``, returning ``y`` at every ``t``.

    The call and semantics of ``torchdiffeq.odeint``: switch by changing the import.
    An explicit Runge–Kutta step with tableau ``(a, b, c)`` is

    .. math:: k_i = f(t + c_i h,\ y + h \sum_{j<i} a_{ij} k_j), \qquad
              y_{n+1} = y_n + h \sum_i b_i k_i.

    Adaptive methods also form ``err = h sum_i (b_i - b̂_i) k_i`` from an embedded
    lower-order solution, accept a step when ``norm(r) <= 1`` with the scaled error
    ``r = err / (atol + rtol * max(|y_n|, |y_{n+1}|))`` and set the next step with a PI
    controller ``h * safety * ||r_n||^(-1.2/k) * ||r_{n-1}||^(0.2/k)`` (Hairer, Nørsett
    & Wanner, *Solving ODEs I*, Sec. II.4; II: IV.2). The first step follows Hairer's
    HINIT; outputs between steps come from dense output (dopri5's continuous extension
    of order 4, a cubic Hermite for bosh3), and the last step is clipped to ``t[-1]``,
    so ``func`` is never called outside the span of ``t``.

    Args:
        func: ``func(t, y)``, ``t`` a 0-dim tensor of ``y``'s dtype and device, ``y``
            shaped like ``y0``; returns ``dy/dt`` with the same structure, shape, dtype.
        y0: initial state, a tensor (any shape, e.g. ``(batch, ...)``) or a tuple of
            tensors of one floating dtype and device.
        t: 1-D tensor of output times, strictly increasing or decreasing.
        method: ``"dopri5"`` (Dormand–Prince 5(4)) or ``"bosh3"`` (Bogacki–Shampine
            3(2)), adaptive; ``"euler"``, ``"midpoint"``, ``"heun"``, ``"rk4"`` (3/8
            rule), fixed grid.
        rtol, atol: relative and absolute tolerance (> 0) of the adaptive methods.
        options: adaptive — ``first_step`` (initial step size), ``max_num_steps``
            (default 100_000; accepted plus rejected steps), ``safety`` (0.9),
            ``ifactor`` (10), ``dfactor`` (0.2) and ``norm``: ``"rms"`` (default, as
            torchdiffeq: for a tuple state, the largest RMS over its parts), ``"max"``,
            ``"per_sample"`` (max over the batch, i.e. the first dimension, of each
            sample's RMS: a step is accepted only if every sample meets the tolerance),
            or a callable that receives the scaled error ``r`` in the structure of
            ``y0`` (a tuple of tensors for a tuple state) and returns a 0-dim tensor
            (a seminorm may ignore parts; see :func:`rms_norm`). Fixed grid —
            ``step_size`` (each interval of ``t`` is cut into equal steps no larger)
            or ``grid_points`` (step points; ``t`` is merged in); neither: step on
            ``t``. ``check_finite`` (default True): one check after the loop.
        stats: a :class:`SolverStats` whose counters the solve adds to.

    Returns:
        ``y`` at every time, shape ``(len(t), *y0.shape)``; a tuple of such for a tuple.

    Raises:
        SolverError: step-size underflow, ``max_num_steps`` reached, non-finite state.

    Example:
        >>> import torch
        >>> y = odeint(lambda t, y: -y, torch.ones(2), torch.tensor([0.0, 1.0]))
        >>> torch.allclose(y[-1], torch.full((2,), torch.e**-1.0), atol=1e-6)
        True
    """
    if not callable(func):
        raise TypeError(f"func must be callable as func(t, y), got {type(func).__name__}")
    tab = check_method(method)
    rtol, atol = check_tolerances(rtol, atol)
    opts = check_options(tab, options)
    ts = check_t(t)
    layout = Layout.of(y0)
    if isinstance(t, Tensor) and t.device != layout.device and t.device.type != "cpu":
        raise ValueError(f"t is on {t.device} but y0 on {layout.device}; move them together")
    flat = layout.flatten(y0)
    if len(ts) == 1:
        return layout.stack([flat])
    f, k0 = _first_call(func, ts[0], y0, layout)
    if tab.error_order:
        return _solve_adaptive(f, tab, flat, k0, ts, rtol, atol, opts, stats, layout)
    return solve_fixed(f, tab, flat, k0, ts, opts, stats, layout)
