"""Helpers shared by the samplers: input checks (with :mod:`probpath._batch`), noise, and
calling the model.

Every sampler has the leading signature ``(model, x, ts, *, generator=None,
callback=None)``, calls ``model(x, t)`` with ``t`` of shape ``(batch,)`` and returns the
samples and the number of function evaluations (NFE). None of them switches gradients off.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from probpath._batch import check_like, check_state, sqnorm

__all__ = [
    "Callback",
    "Model",
    "as_grid",
    "call_model",
    "check_state",
    "decreasing_grid",
    "linear_step",
    "linear_steps",
    "per_step",
    "randn_like",
    "sqnorm",
    "ula_step",
]

Model = Callable[[Tensor, Tensor], Tensor]
"""``model(x, t) -> tensor``, with ``x`` of shape ``(batch, ...)`` and ``t`` of shape (batch,)."""

Callback = Callable[[int, Tensor], None]
"""``callback(step, x)``: called after every step with the step index and the new state."""


def as_grid(ts: Tensor, x: Tensor, name: str = "ts") -> Tensor:
    """``ts`` as a non-empty finite 1-D tensor with the dtype and device of ``x``."""
    if not isinstance(ts, Tensor) or ts.dim() != 1 or ts.numel() == 0:
        got = tuple(ts.shape) if isinstance(ts, Tensor) else type(ts).__name__
        raise ValueError(f"{name} must be a non-empty 1-D tensor, got {got}.")
    if not bool(torch.isfinite(ts).all()):
        raise ValueError(f"{name} must be finite, got {ts.tolist()}.")
    return ts.to(dtype=x.dtype, device=x.device)


def decreasing_grid(ts: Tensor, x: Tensor) -> Tensor:
    """:func:`as_grid`, checked to be strictly decreasing with at least two times: the grid of
    every sampler that runs from noise (t = 1) towards data (t = 0)."""
    ts = as_grid(ts, x)
    if len(ts) < 2 or not bool((ts[1:] < ts[:-1]).all()):
        raise ValueError(
            "ts must be a strictly decreasing grid of at least 2 times (t = 1 is noise, "
            f"t = 0 data), got {ts.tolist()}"
        )
    return ts


def per_step(value: float | Tensor, n: int, x: Tensor, name: str) -> Tensor:
    """A positive finite scalar or a 1-D tensor of length ``n`` as a tensor of shape (n,)."""
    v = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if v.dim() == 0:
        v = v.expand(n)
    if v.shape != (n,):
        raise ValueError(f"{name} must be a number or a 1-D tensor of length {n}, got {v.shape}.")
    if not bool((v > 0).all()) or not bool(torch.isfinite(v).all()):
        raise ValueError(f"{name} must be positive and finite, got {v.tolist()}.")
    return v


def randn_like(x: Tensor, generator: torch.Generator | None) -> Tensor:
    """Standard normal noise shaped like ``x``, drawn from ``generator``."""
    return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)


def ula_step(x: Tensor, score: Tensor, eta: Tensor, generator: torch.Generator | None) -> Tensor:
    r"""One unadjusted Langevin step :math:`x + \tfrac{\eta}{2} s + \sqrt{\eta}\,\varepsilon`
    (``eta`` a tensor, checked by the caller: no host read)."""
    return x + 0.5 * eta * score + eta.sqrt() * randn_like(x, generator)


def call_model(model: Model, x: Tensor, t: Tensor) -> Tensor:
    """``model(x, t)`` with the scalar ``t`` broadcast to shape (batch,); output shaped like x."""
    return check_like(model(x, t.expand(x.shape[0])), x, "model(x, t)")


def linear_steps(
    model: Model,
    x: Tensor,
    ts: Tensor,
    coefs: tuple[Tensor, Tensor, Tensor],
    generator: torch.Generator | None,
    callback: Callback | None,
) -> tuple[Tensor, int]:
    """``x <- c_x[k] x + c_m[k] model(x, t_k) + c_z[k] z_k`` for k = 0 .. len(ts) - 2.

    The loop of every sampler whose step is linear in the state, the model output and
    fresh noise (DDPM, DDIM, reverse-SDE Euler–Maruyama): the caller computes the
    coefficients of all steps before the loop, so a step is the model call plus three
    fused operations, and reading them (``tolist``) is the loop's one host
    synchronisation. ``c_z[k] = 0`` draws no noise. Returns ``(x, nfe)``.
    """
    c_x, c_m, c_z = (c.tolist() for c in coefs)
    for k in range(len(ts) - 1):
        x = linear_step(model, x, ts[k], c_x[k], c_m[k], c_z[k], generator)
        if callback is not None:
            callback(k, x)
    return x, len(ts) - 1


def linear_step(
    model: Model,
    x: Tensor,
    t: Tensor,
    c_x: float,
    c_m: float,
    c_z: float,
    generator: torch.Generator | None,
) -> Tensor:
    """``c_x x + c_m model(x, t) + c_z z`` (no noise drawn when ``c_z = 0``): one NFE."""
    out = torch.add(x.mul(c_x), call_model(model, x, t), alpha=c_m)
    return out.add_(randn_like(x, generator), alpha=c_z) if c_z != 0.0 else out
