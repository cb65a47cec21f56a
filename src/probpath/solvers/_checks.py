"""Argument validation for :func:`probpath.solvers.odeint`, run once per solve.

Every check raises ``ValueError`` or ``TypeError`` with a message that says what was
wrong and how to fix it; nothing here runs inside the stepping loops.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ._tableaus import ADAPTIVE, FIXED, ButcherTableau

__all__ = ["Layout", "State", "check_method", "check_options", "check_t", "check_tolerances"]

State = Tensor | tuple[Tensor, ...]

_FIXED_OPTIONS = frozenset({"step_size", "grid_points", "check_finite"})
_ADAPTIVE_OPTIONS = frozenset(
    {"first_step", "max_num_steps", "norm", "safety", "ifactor", "dfactor"}
)


def check_method(method: str) -> ButcherTableau:
    """The tableau named ``method``, or a ``ValueError`` listing the valid names."""
    if not isinstance(method, str) or (method not in FIXED and method not in ADAPTIVE):
        valid = ", ".join(repr(m) for m in (*ADAPTIVE, *FIXED))
        raise ValueError(f"unknown method {method!r}; choose one of {valid}")
    return ADAPTIVE.get(method) or FIXED[method]


def check_tolerances(rtol: float, atol: float) -> tuple[float, float]:
    """``rtol`` and ``atol`` as positive finite Python floats."""
    out = []
    for name, v in (("rtol", rtol), ("atol", atol)):
        if isinstance(v, Tensor):
            if v.numel() != 1:
                raise TypeError(f"{name} must be a number, got a tensor of shape {tuple(v.shape)}")
            v = v.item()
        if not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise ValueError(
                f"{name} must be a positive finite number, got {v!r}; typical values are "
                "rtol=1e-5..1e-7 and atol=1e-6..1e-9 (smaller is more accurate and slower)"
            )
        out.append(float(v))
    return out[0], out[1]


def check_t(t: Tensor) -> list[float]:
    """The output times as Python floats (one host transfer per solve)."""
    if not isinstance(t, Tensor):
        raise TypeError(f"t must be a 1-D tensor of times, got {type(t).__name__}")
    if t.ndim != 1 or t.numel() == 0:
        raise ValueError(f"t must be a non-empty 1-D tensor of times, got shape {tuple(t.shape)}")
    if t.is_complex():
        raise TypeError("t must be real")
    ts = [float(v) for v in t.detach().tolist()]
    if not all(math.isfinite(v) for v in ts):
        raise ValueError(f"t must be finite, got {ts}")
    d = [b - a for a, b in itertools.pairwise(ts)]
    if not (all(x > 0 for x in d) or all(x < 0 for x in d)):
        raise ValueError(
            "t must be strictly increasing or strictly decreasing (no repeats), got "
            f"{ts if len(ts) <= 8 else [*ts[:8], '...']}"
        )
    return ts


def check_options(tableau: ButcherTableau, options: Mapping[str, Any] | None) -> dict[str, Any]:
    """``options`` as a dict, after rejecting keys the method does not use."""
    opts = dict(options or {})
    valid = _ADAPTIVE_OPTIONS if tableau.error_order else _FIXED_OPTIONS
    unknown = sorted(set(opts) - valid)
    if unknown:
        kind = "adaptive" if tableau.error_order else "fixed-grid"
        raise ValueError(
            f"options {unknown} are not used by the {kind} method {tableau.name!r}; "
            f"its options are {sorted(valid)}"
        )
    if "step_size" in opts and "grid_points" in opts:
        raise ValueError("give either options['step_size'] or options['grid_points'], not both")
    for key in ("step_size", "first_step"):
        v = opts.get(key)
        if v is not None and (not math.isfinite(float(v)) or float(v) <= 0):
            raise ValueError(f"options[{key!r}] must be a positive number, got {v!r}")
    n = opts.get("max_num_steps")
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ValueError(f"options['max_num_steps'] must be a positive int, got {n!r}")
    return opts


@dataclass(frozen=True)
class Layout:
    """How a state (a tensor or a tuple of tensors) maps to the one tensor the step
    code works on. A single tensor is used as is (the step is elementwise); a tuple
    is flattened and concatenated into one 1-D tensor."""

    is_tuple: bool
    shapes: tuple[torch.Size, ...]
    numels: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device

    @staticmethod
    def of(y0: State) -> Layout:
        ys = y0 if isinstance(y0, tuple) else (y0,)
        if isinstance(y0, list) or len(ys) == 0 or not all(isinstance(y, Tensor) for y in ys):
            raise TypeError("y0 must be a tensor or a non-empty tuple of tensors")
        dtype, device = ys[0].dtype, ys[0].device
        for i, y in enumerate(ys):
            if not y.is_floating_point():
                raise TypeError(
                    f"y0{f'[{i}]' if isinstance(y0, tuple) else ''} has dtype {y.dtype}; the "
                    "state must be floating point (e.g. y0.double() or y0.float())"
                )
            if y.dtype != dtype or y.device != device:
                raise TypeError(
                    "all tensors of a tuple state must share dtype and device, got "
                    f"{[(str(z.dtype), str(z.device)) for z in ys]}"
                )
        shapes = tuple(y.shape for y in ys)
        return Layout(isinstance(y0, tuple), shapes, tuple(y.numel() for y in ys), dtype, device)

    def flatten(self, y: State) -> Tensor:
        if not self.is_tuple:
            assert isinstance(y, Tensor)
            return y
        return torch.cat([z.reshape(-1) for z in y])

    def unflatten(self, flat: Tensor) -> State:
        if not self.is_tuple:
            return flat
        return tuple(v.view(s) for v, s in zip(flat.split(self.numels), self.shapes, strict=True))

    def stack(self, outs: list[Tensor]) -> State:
        """Stack flat states at every output time into the user's structure."""
        sol = torch.stack(outs)
        if not self.is_tuple:
            return sol
        return tuple(
            v.reshape(len(outs), *s)
            for v, s in zip(sol.split(self.numels, dim=1), self.shapes, strict=True)
        )

    def wrap(
        self, func: Callable[..., Any], cast: bool = False
    ) -> Callable[[Tensor, Tensor], Tensor]:
        """``func`` on flat states: ``func`` itself for a single tensor (no overhead); with
        ``cast`` (:meth:`check_output`), its output cast up to the state's dtype."""
        if not (self.is_tuple or cast):
            return func

        def f(t: Tensor, y: Tensor) -> Tensor:
            return self.flatten(func(t, self.unflatten(y))).to(self.dtype)

        return f

    def lowered(self, dtype: torch.dtype) -> bool:
        """Whether ``dtype`` is the lower precision of an autocast region on the state's
        device, whose outputs the solver casts up to the state's dtype."""
        kind = self.device.type
        return torch.is_autocast_enabled(kind) and dtype == torch.get_autocast_dtype(kind)

    def check_output(self, out: Any) -> bool:
        """Check ``func``'s first output against ``y0`` (structure, shape, dtype); returns
        whether it must be cast up to the state's dtype: a network under autocast (e.g.
        ``bf16``) returns its lower precision, and the state stays in its own."""
        if not self.is_tuple:
            if not isinstance(out, Tensor):
                raise TypeError(f"func(t, y) must return a tensor like y, got {type(out).__name__}")
            outs: tuple[Any, ...] = (out,)
        else:
            if not isinstance(out, (tuple, list)) or len(out) != len(self.shapes):
                raise TypeError(
                    f"func(t, y) must return a tuple of {len(self.shapes)} tensors like y, "
                    f"got {type(out).__name__}"
                )
            outs = tuple(out)
        for i, (o, shape) in enumerate(zip(outs, self.shapes, strict=True)):
            where = f"[{i}]" if self.is_tuple else ""
            if not isinstance(o, Tensor):
                raise TypeError(f"func(t, y){where} must be a tensor, got {type(o).__name__}")
            if o.dtype != self.dtype and not self.lowered(o.dtype):
                raise TypeError(
                    f"func(t, y){where} has dtype {o.dtype} but y has dtype {self.dtype}; "
                    "cast the output (or y0) so that they match"
                )
            if o.shape != shape:
                raise ValueError(
                    f"func(t, y){where} has shape {tuple(o.shape)} but y{where} has shape "
                    f"{tuple(shape)}; dy/dt must have the shape of y"
                )
        return any(o.dtype != self.dtype for o in outs)
