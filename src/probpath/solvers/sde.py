r"""Fixed-step solvers for Itô SDEs ``dy = f(t, y) dt + g(t, y) dW``, forward or reverse in time.

Names follow torchsde: drift ``f(t, y)``, diffusion ``g(t, y)``, ``noise_type`` and
``method``. Two Itô-correct schemes (Kloeden & Platen 1992, *Numerical Solution of SDEs*):

``"euler"`` (Euler--Maruyama, KP 9.1 / the lecture notes' "Discretization of SDE")::

    y_{n+1} = y_n + f(t_n, y_n) h + g(t_n, y_n) ΔW_n,        ΔW_n ~ N(0, |h| I)

strong order 0.5 in general, 1.0 for additive noise (g independent of y); weak order 1.

``"milstein"`` (derivative-free Milstein, KP eq. 11.1.5, the Itô form; torchsde's
``milstein`` with ``derivative_free``)::

    ȳ_n     = y_n + f h + g √|h|
    y_{n+1} = y_n + f h + g ΔW_n + (g(t_n, ȳ_n) - g) (ΔW_n² - |h|) / (2 √|h|)

The last term approximates the Itô correction ½ g g'(ΔW² - |h|) with one extra diffusion
evaluation and no derivatives. Strong order 1.0 for ``"scalar"`` noise (always commutative)
and for ``"diagonal"`` noise when ``g_i`` depends on ``y`` only through ``y_i`` (e.g.
geometric Brownian motion); it reduces to Euler--Maruyama for additive noise. Weak order 1.
Stochastic Heun is not offered: it converges to the *Stratonovich* solution.
General (non-commutative) noise would need Lévy areas, so ``milstein`` refuses it.

Reverse time: a decreasing ``t`` integrates backwards with signed steps ``h < 0``; the
Brownian increments still have variance ``|h|`` (score-SDE reverse samplers,
Song et al. 2021, eq. 6 discretized by Euler--Maruyama).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from typing import Literal

import torch
from torch import Tensor

__all__ = ["sdeint"]

Method = Literal["euler", "milstein"]
NoiseType = Literal["diagonal", "scalar", "general"]
SDEFunc = Callable[[Tensor, Tensor], Tensor]

_METHODS = ("euler", "milstein")
_NOISE_TYPES = ("diagonal", "scalar", "general")
_CHUNK_ELEMENTS = 1 << 22  # Brownian increments drawn per randn call (32 MiB in float64)


def _step_grid(ts: list[float], dt: float) -> tuple[list[float], list[float], list[int]]:
    """Step start times, signed step sizes, and the index of the last step of each interval.

    Each interval ``[t_k, t_{k+1}]`` takes ``ceil(|Δ| / dt)`` steps of size ``dt`` (the last one
    shortened) so that steps land exactly on every output time.
    """
    starts: list[float] = []
    steps: list[float] = []
    ends: list[int] = []
    for a, b in pairwise(ts):
        n = max(1, math.ceil(abs(b - a) / dt * (1 - 1e-10)))
        h = math.copysign(dt, b - a)
        points = [a + j * h for j in range(n)] + [b]
        starts.extend(points[:-1])
        steps.extend(q - p for p, q in pairwise(points))
        ends.append(len(steps) - 1)
    return starts, steps, ends


def _noise_term(diff: Tensor, dw: Tensor | float, noise_type: str) -> Tensor:
    """Contract the diffusion with a Brownian increment: ``g dW`` for each noise type."""
    if noise_type == "diagonal":
        return diff * dw
    if noise_type == "scalar":
        return (diff * dw)[..., 0]
    return (diff @ dw[..., None])[..., 0] if isinstance(dw, Tensor) else diff.sum(-1) * dw


def _check_call(name: str, out: object, y: Tensor, noise_type: str) -> None:
    """Validate the first drift or diffusion output against the state's shape."""
    if not isinstance(out, Tensor):
        raise TypeError(f"{name}(t, y) must return a Tensor, got {type(out).__name__}.")
    shape, want = tuple(out.shape), tuple(y.shape)
    if name == "f":
        ok, rule = shape == want, f"the state's shape {want}"
    elif noise_type == "diagonal":
        ok, rule = _broadcasts(shape, want), f"the state's shape {want} (or broadcast to it)"
    elif noise_type == "scalar":
        ok, rule = _broadcasts(shape, (*want, 1)), f"{(*want, 1)} (or broadcast to it)"
    else:
        ok = len(shape) == 3 and shape[:2] == want
        rule = f"(batch, d, m) = ({want[0]}, {want[1]}, m) for noise_type='general'"
    if not ok:
        raise ValueError(f"{name}(t, y) returned shape {shape}, expected {rule}.")


def _broadcasts(shape: tuple[int, ...], target: tuple[int, ...]) -> bool:
    try:
        return torch.broadcast_shapes(shape, target) == torch.Size(target)
    except RuntimeError:
        return False


def _check_args(y0: Tensor, t: Tensor, dt: float, method: str, noise_type: str) -> list[float]:
    if not isinstance(y0, Tensor) or not y0.is_floating_point() or y0.dim() < 1:
        raise TypeError("y0 must be a floating-point Tensor of shape (batch, ...).")
    if not isinstance(t, Tensor) or t.dim() != 1 or t.numel() < 1:
        raise ValueError("t must be a 1-D tensor of output times, e.g. torch.linspace(0, 1, 5).")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
    if noise_type not in _NOISE_TYPES:
        raise ValueError(f"noise_type must be one of {_NOISE_TYPES}, got {noise_type!r}.")
    if noise_type == "general" and y0.dim() != 2:
        raise ValueError("noise_type='general' needs a state of shape (batch, d).")
    if noise_type == "general" and method == "milstein":
        raise ValueError(
            "method='milstein' needs commutative noise (use 'diagonal' or 'scalar'); general "
            "noise would need Lévy areas. Use method='euler'."
        )
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not 0 < dt < math.inf:
        raise ValueError(
            f"dt must be a finite step size > 0, got {dt!r}; the direction of integration "
            "comes from t (decreasing t integrates backwards)."
        )
    ts = t.tolist()  # one host sync, before the loop
    diffs = [b - a for a, b in pairwise(ts)]
    if not (all(d > 0 for d in diffs) or all(d < 0 for d in diffs)) or not all(
        map(math.isfinite, ts)
    ):
        raise ValueError(f"t must be finite and strictly increasing or decreasing, got {ts}.")
    return ts


def sdeint(
    f: SDEFunc,
    g: SDEFunc,
    y0: Tensor,
    t: Tensor,
    *,
    dt: float,
    method: Method = "euler",
    noise_type: NoiseType = "diagonal",
    generator: torch.Generator | None = None,
    bm: Tensor | None = None,
) -> Tensor:
    r"""Solve the Itô SDE ``dy = f(t, y) dt + g(t, y) dW`` on a fixed grid; return ``y`` at ``t``.

    Args:
        f: drift ``f(t, y)`` returning the state's shape; ``t`` is a 0-d tensor.
        g: diffusion ``g(t, y)``; its shape sets the noise (torchsde's conventions):

            * ``"diagonal"``: shape of ``y`` (or broadcastable, e.g. ``(batch, 1)`` or a 0-d
              tensor), one Brownian motion per coordinate, ``g * dW``;
            * ``"scalar"``: shape ``(*y.shape, 1)`` (or broadcastable), one Brownian motion
              per batch element shared by all coordinates;
            * ``"general"``: ``y`` is ``(batch, d)`` and ``g`` is ``(batch, d, m)``; ``m``
              Brownian channels, ``g @ dW``.
        y0: initial state, shape ``(batch, ...)``.
        t: 1-D strictly monotone output times; ``t[0]`` is the start. Decreasing ``t``
            integrates backwards in time.
        dt: step size ``> 0``; each interval between output times is split into
            ``ceil(|Δt| / dt)`` steps, the last one shortened to land on the output time.
        method: ``"euler"`` (Euler--Maruyama) or ``"milstein"`` (see the module docstring).
        noise_type: ``"diagonal"``, ``"scalar"`` or ``"general"``.
        generator: ``torch.Generator`` for the Brownian increments (same seed, same path).
        bm: optional pre-drawn increments ``ΔW`` of shape ``(n_steps, *noise_shape)`` in the
            order they are used, with variance ``|h|`` each (``noise_shape`` is ``y.shape``,
            ``(batch, 1, ..., 1)`` with ``y.dim() + 1`` dims, or ``(batch, m)``). Lets strong
            errors be measured on a known Brownian path. ``generator`` is then unused.

    Returns:
        Tensor of shape ``(len(t), *y0.shape)``, ``y`` at every output time (like odeint).

    Example:
        >>> theta, sigma = 1.0, 0.5  # Ornstein-Uhlenbeck
        >>> ys = sdeint(lambda t, y: -theta * y, lambda t, y: sigma * torch.ones_like(y),
        ...             torch.zeros(4096, 1), torch.tensor([0.0, 1.0]), dt=0.01,
        ...             generator=torch.Generator().manual_seed(0))
        >>> ys.shape
        torch.Size([2, 4096, 1])
        >>> var = sigma**2 / (2 * theta) * (1 - math.exp(-2 * theta))  # 0.108
        >>> abs(ys[-1].var().item() - var) < 0.01
        True
    """
    ts = _check_args(y0, t, dt, method, noise_type)
    starts, steps, ends = _step_grid(ts, float(dt))
    n_steps = len(steps)
    dtype, device = y0.dtype, y0.device
    times = torch.tensor(starts, dtype=dtype).to(device).unbind(0)
    sqrt_abs = torch.tensor(steps, dtype=dtype).abs().sqrt().to(device)
    if bm is not None and (not isinstance(bm, Tensor) or bm.shape[:1] != (n_steps,)):
        raise ValueError(
            f"bm must be a tensor of {n_steps} Brownian increments (n_steps, *noise_shape) for "
            f"this t and dt, got {tuple(bm.shape) if isinstance(bm, Tensor) else type(bm)}."
        )

    out = [y0]
    y = y0
    noise: tuple[Tensor, ...] = ()
    chunk = n_steps
    end_iter = iter(ends)
    next_end = next(end_iter, -1)
    for k in range(n_steps):
        tk, h = times[k], steps[k]
        drift, diff = f(tk, y), g(tk, y)
        if k == 0:
            _check_call("f", drift, y, noise_type)
            _check_call("g", diff, y, noise_type)
            noise_shape = _noise_shape(y, diff, noise_type)
            if bm is not None:
                if bm.shape[1:] != noise_shape:
                    raise ValueError(
                        f"bm has increments of shape {tuple(bm.shape[1:])}, expected "
                        f"{tuple(noise_shape)} for noise_type={noise_type!r}."
                    )
                noise = bm.to(dtype=dtype, device=device).unbind(0)
            else:
                chunk = max(1, min(n_steps, _CHUNK_ELEMENTS // max(1, noise_shape.numel())))
        if bm is None and k % chunk == 0:
            scale = sqrt_abs[k : k + chunk]
            draw = torch.randn(
                (scale.numel(), *noise_shape), generator=generator, dtype=dtype, device=device
            )
            noise = draw.mul_(scale.view(-1, *([1] * len(noise_shape)))).unbind(0)
        dw = noise[k % chunk] if bm is None else noise[k]
        euler = torch.add(y, drift, alpha=h)
        if noise_type == "diagonal":
            y_next = torch.addcmul(euler, diff, dw)  # one fused op on the hot path
        else:
            y_next = euler + _noise_term(diff, dw, noise_type)
        if method == "milstein":
            sq = math.sqrt(abs(h))
            y_bar = euler + _noise_term(diff, sq, noise_type)
            weight = (dw * dw - abs(h)) / (2 * sq)
            y_next = y_next + _noise_term(g(tk, y_bar) - diff, weight, noise_type)
        y = y_next
        if k == next_end:
            out.append(y)
            next_end = next(end_iter, -1)
    return torch.stack(out)


def _noise_shape(y: Tensor, diff: Tensor, noise_type: str) -> torch.Size:
    if noise_type == "diagonal":
        return y.shape
    if noise_type == "scalar":
        return torch.Size((y.shape[0], *([1] * y.dim())))
    return torch.Size((y.shape[0], diff.shape[-1]))
