r"""Fixed-step solvers for Itô SDEs ``dy = f(t, y) dt + g(t, y) dW``, forward or reverse in time.

The call is torchsde's, ``sdeint(sde, y0, ts, bm=None, method="euler", dt=1e-3)``, and so is
the SDE: any object with a drift ``sde.f(t, y)``, a diffusion ``sde.g(t, y)`` and a
``sde.noise_type`` (``"diagonal"``, ``"scalar"`` or ``"general"``; ``sde.sde_type``, when
present, must be ``"ito"``), e.g. the SDEs of :mod:`probpath.sdes`, a torchsde module, or
``types.SimpleNamespace(f=..., g=..., noise_type="diagonal")``. Two Itô-correct schemes
(Kloeden & Platen 1992, *Numerical Solution of SDEs*):

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

Reverse time: a decreasing ``ts`` integrates backwards with signed steps ``h < 0``; the
Brownian increments still have variance ``|h|``. (The reverse SDE of a score model,
:class:`probpath.sdes.ReverseSDE`, is instead written on the increasing clock ``tau = -t``,
so torchsde can solve it too.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from itertools import pairwise
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

__all__ = ["SDELike", "sdeint"]

Method = Literal["euler", "milstein"]
BrownianIncrement = Callable[[float, float], Tensor]
"""``bm(ta, tb) -> W(tb) - W(ta)`` for ``ta < tb``: torchsde's ``BrownianInterval`` call."""


class SDELike(Protocol):
    """What :func:`sdeint` reads from an SDE (torchsde's protocol): ``f``, ``g``, ``noise_type``."""

    noise_type: str

    def f(self, t: Tensor, y: Tensor) -> Tensor: ...

    def g(self, t: Tensor, y: Tensor) -> Tensor: ...


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


def _noise_type(sde: Any) -> str:
    """``sde.noise_type``, after checking that ``sde`` has torchsde's f, g and an Itô type."""
    if not all(callable(getattr(sde, name, None)) for name in ("f", "g")):
        raise TypeError(
            "sde must have methods f(t, y) (drift) and g(t, y) (diffusion) and an attribute "
            "noise_type, as in torchsde; e.g. types.SimpleNamespace(f=lambda t, y: -y, "
            f"g=lambda t, y: torch.ones_like(y), noise_type='diagonal'), got {type(sde).__name__}."
        )
    noise_type = getattr(sde, "noise_type", None)
    if noise_type not in _NOISE_TYPES:
        raise ValueError(f"sde.noise_type must be one of {_NOISE_TYPES}, got {noise_type!r}.")
    if getattr(sde, "sde_type", "ito") != "ito":
        raise ValueError(
            f"sde.sde_type is {sde.sde_type!r}: these schemes solve Itô SDEs ('ito'); convert a "
            "Stratonovich drift with the Itô correction f + ½ g ∂g/∂y first."
        )
    return noise_type


def _check_args(y0: Tensor, t: Tensor, dt: float, method: str, noise_type: str) -> list[float]:
    if not isinstance(y0, Tensor) or not y0.is_floating_point() or y0.dim() < 1:
        raise TypeError("y0 must be a floating-point Tensor of shape (batch, ...).")
    if not isinstance(t, Tensor) or t.dim() != 1 or t.numel() < 1:
        raise ValueError("t must be a 1-D tensor of output times, e.g. torch.linspace(0, 1, 5).")
    if method not in _METHODS:
        raise ValueError(f"method must be one of {_METHODS}, got {method!r}.")
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
    sde: SDELike,
    y0: Tensor,
    ts: Tensor,
    bm: Tensor | BrownianIncrement | None = None,
    method: Method = "euler",
    dt: float = 1e-3,
    *,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Solve the Itô SDE ``dy = sde.f(t, y) dt + sde.g(t, y) dW`` on a fixed grid; return
    ``y`` at ``ts``. torchsde's call and SDE protocol, so ``torchsde.sdeint`` and this take
    the same objects and arguments.

    Args:
        sde: an object with drift ``f(t, y)`` (the state's shape; ``t`` a 0-d tensor),
            diffusion ``g(t, y)`` and ``noise_type``, which sets the shape of ``g``:

            * ``"diagonal"``: shape of ``y`` (or broadcastable, e.g. ``(batch, 1)`` or a 0-d
              tensor), one Brownian motion per coordinate, ``g * dW``;
            * ``"scalar"``: shape ``(*y.shape, 1)`` (or broadcastable), one Brownian motion
              per batch element shared by all coordinates;
            * ``"general"``: ``y`` is ``(batch, d)`` and ``g`` is ``(batch, d, m)``; ``m``
              Brownian channels, ``g @ dW``.
        y0: initial state, shape ``(batch, ...)``.
        ts: 1-D strictly monotone output times; ``ts[0]`` is the start. Decreasing ``ts``
            integrates backwards in time.
        bm: the Brownian motion, optional: pre-drawn increments ``ΔW`` of shape
            ``(n_steps, *noise_shape)`` in the order they are used, variance ``|h|`` each
            (``noise_shape`` is ``y.shape``, ``(batch, 1, ..., 1)`` with ``y.dim() + 1`` dims,
            or ``(batch, m)``), or a callable ``bm(ta, tb) = W(tb) - W(ta)`` such as
            ``torchsde.BrownianInterval`` (queried with ``ta < tb`` whatever the direction).
            Lets strong errors be measured on a known Brownian path; ``generator`` is then
            unused.
        method: ``"euler"`` (Euler--Maruyama) or ``"milstein"`` (see the module docstring).
        dt: step size ``> 0``; each interval between output times is split into
            ``ceil(|Δt| / dt)`` steps, the last one shortened to land on the output time.
        generator: ``torch.Generator`` for the Brownian increments (same seed, same path).

    Returns:
        Tensor of shape ``(len(ts), *y0.shape)``, ``y`` at every output time (like odeint).

    Example:
        >>> from types import SimpleNamespace
        >>> theta, sigma = 1.0, 0.5  # Ornstein-Uhlenbeck
        >>> ou = SimpleNamespace(f=lambda t, y: -theta * y,
        ...                      g=lambda t, y: sigma * torch.ones_like(y), noise_type="diagonal")
        >>> ys = sdeint(ou, torch.zeros(4096, 1), torch.tensor([0.0, 1.0]), dt=0.01,
        ...             generator=torch.Generator().manual_seed(0))
        >>> ys.shape
        torch.Size([2, 4096, 1])
        >>> var = sigma**2 / (2 * theta) * (1 - math.exp(-2 * theta))  # 0.108
        >>> abs(ys[-1].var().item() - var) < 0.01
        True
    """
    noise_type = _noise_type(sde)
    grid = _check_args(y0, ts, dt, method, noise_type)
    starts, steps, ends = _step_grid(grid, float(dt))
    _check_increment_count(bm, len(steps))
    times = torch.tensor(starts, dtype=y0.dtype).to(y0.device).unbind(0)
    out, y, last_steps = [y0], y0, set(ends)
    noise: _Increments | None = None
    for k, h in enumerate(steps):
        tk = times[k]
        drift, diff = sde.f(tk, y), sde.g(tk, y)
        if noise is None:
            points = [*starts, grid[-1]]
            noise = _first_increments(y, drift, diff, noise_type, points, bm, generator)
        dw = noise.at(k)
        euler = torch.add(y, drift, alpha=h)
        if noise_type == "diagonal":
            y_next = torch.addcmul(euler, diff, dw)  # one fused op on the hot path
        else:
            y_next = euler + _noise_term(diff, dw, noise_type)
        if method == "milstein":
            y_next = y_next + _milstein_term(sde, tk, euler, diff, dw, h, noise_type)
        y = y_next
        if k in last_steps:
            out.append(y)
    return torch.stack(out)


def _check_increment_count(bm: Tensor | BrownianIncrement | None, n_steps: int) -> None:
    if isinstance(bm, Tensor) and bm.shape[:1] != (n_steps,):
        raise ValueError(
            f"bm must be a tensor of {n_steps} Brownian increments (n_steps, *noise_shape) "
            f"for this ts and dt, got shape {tuple(bm.shape)}."
        )


def _first_increments(
    y: Tensor,
    drift: Tensor,
    diff: Tensor,
    noise_type: str,
    points: list[float],
    bm: Tensor | BrownianIncrement | None,
    generator: torch.Generator | None,
) -> _Increments:
    """Check the first drift and diffusion against the state ``y``, then set up the Brownian
    increments of the steps between ``points`` in the noise shape ``diff`` implies."""
    _check_call("f", drift, y, noise_type)
    _check_call("g", diff, y, noise_type)
    return _Increments(y, _noise_shape(y, diff, noise_type), points, bm, generator)


def _milstein_term(
    sde: SDELike, t: Tensor, euler: Tensor, diff: Tensor, dw: Tensor, h: float, noise_type: str
) -> Tensor:
    """Derivative-free Milstein's ``(g(t, ȳ) - g) (ΔW² - |h|) / (2 √|h|)`` with
    ``ȳ = y + f h + g √|h|`` (``euler = y + f h``; KP eq. 11.1.5)."""
    sq = math.sqrt(abs(h))
    y_bar = euler + _noise_term(diff, sq, noise_type)
    weight = (dw * dw - abs(h)) / (2 * sq)
    return _noise_term(sde.g(t, y_bar) - diff, weight, noise_type)


class _Increments:
    """The Brownian increment of each step: from ``bm`` (a tensor or ``bm(ta, tb)``), or
    drawn from ``generator`` in chunks of up to ``_CHUNK_ELEMENTS`` numbers (one ``randn``)."""

    def __init__(
        self,
        like: Tensor,
        shape: torch.Size,
        points: list[float],
        bm: Tensor | BrownianIncrement | None,
        generator: torch.Generator | None,
    ) -> None:
        steps = [b - a for a, b in pairwise(points)]  # the solver's signed steps
        self.like, self.shape, self.points = like, shape, points
        self.bm, self.generator, self.chunk = bm, generator, len(steps)
        self.drawn: tuple[Tensor, ...] = ()
        if isinstance(bm, Tensor):
            if bm.shape[1:] != shape:
                raise ValueError(
                    f"bm has increments of shape {tuple(bm.shape[1:])}, expected "
                    f"{tuple(shape)} (the noise shape of this noise_type)."
                )
            self.drawn = bm.to(like).unbind(0)
        elif bm is None:
            self.chunk = max(1, min(len(steps), _CHUNK_ELEMENTS // max(1, shape.numel())))
            self.sqrt_abs = torch.tensor(steps, dtype=like.dtype).abs().sqrt().to(like.device)
        elif not callable(bm):
            raise TypeError(f"bm must be a tensor, a callable bm(ta, tb) or None, got {bm!r}.")

    def at(self, k: int) -> Tensor:
        """``ΔW`` of step ``k`` (steps are taken in order)."""
        if isinstance(self.bm, Tensor):
            return self.drawn[k]
        if self.bm is not None:
            a, b = self.points[k], self.points[k + 1]
            return self.bm(min(a, b), max(a, b)).to(self.like)
        if k % self.chunk == 0:
            scale = self.sqrt_abs[k : k + self.chunk]
            draw = torch.randn(
                (scale.numel(), *self.shape),
                generator=self.generator,
                dtype=self.like.dtype,
                device=self.like.device,
            )
            self.drawn = draw.mul_(scale.view(-1, *([1] * len(self.shape)))).unbind(0)
        return self.drawn[k % self.chunk]


def _noise_shape(y: Tensor, diff: Tensor, noise_type: str) -> torch.Size:
    if noise_type == "diagonal":
        return y.shape
    if noise_type == "scalar":
        return torch.Size((y.shape[0], *([1] * y.dim())))
    return torch.Size((y.shape[0], diff.shape[-1]))
