"""Error norms for adaptive step-size control.

An adaptive step is accepted when ``norm(r) <= 1``, where ``r`` is the scaled error

    r = err / (atol + rtol * max(|y_old|, |y_new|))

(Hairer, Nørsett & Wanner, *Solving ODEs I*, Sec. II.4, eq. (4.10)–(4.11)). Each
built-in norm is turned into a function of the flat ``r`` returning a Python float:
one host synchronisation per step, the one the controller cannot avoid.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import Tensor

from ._checks import Layout, State

__all__ = ["NORMS", "make_norm", "rms_norm"]

NORMS = ("rms", "max", "per_sample")


def rms_norm(x: State) -> Tensor:
    """Root mean square ``sqrt(mean(x^2))``; for a tuple, the largest RMS of its parts.

    This is the default error norm of :func:`~probpath.solvers.odeint` (the same as
    torchdiffeq's). Use it to build a seminorm that ignores some parts of a tuple state
    (Kidger, Chen & Lyons, "Hey, that's not an ODE", ICML 2021):

    Example:
        >>> import torch
        >>> r = (torch.tensor([3.0, 4.0]), torch.tensor([100.0]))
        >>> round(float(rms_norm(r[:1])), 4)  # seminorm: the second part is ignored
        3.5355
    """
    parts = x if isinstance(x, tuple) else (x,)
    norms = [torch.linalg.vector_norm(p) / math.sqrt(max(p.numel(), 1)) for p in parts]
    return norms[0] if len(norms) == 1 else torch.stack(norms).max()


def make_norm(spec: str | Callable[[State], Tensor], layout: Layout) -> Callable[[Tensor], float]:
    """The norm of a flat scaled error ``r``, as a Python float."""
    if callable(spec):
        user = spec
        return lambda r: float(user(layout.unflatten(r)))
    if spec not in NORMS:
        raise ValueError(
            f"unknown norm {spec!r}; options['norm'] must be one of {list(NORMS)} or a "
            "callable taking the scaled error (shaped like y0) and returning a 0-dim tensor"
        )
    if spec == "per_sample":
        if any(len(s) == 0 for s in layout.shapes):
            raise ValueError("norm='per_sample' needs a batch dimension: y0 must have ndim >= 1")
        batches = {s[0] for s in layout.shapes}
        if len(batches) != 1:
            raise ValueError(
                "norm='per_sample' needs the same batch size (first dimension) in every "
                f"tensor of the state, got shapes {[tuple(s) for s in layout.shapes]}"
            )
    scales = [1.0 / math.sqrt(max(n, 1)) for n in layout.numels]
    if not layout.is_tuple:
        shape, scale = layout.shapes[0], scales[0]
        if spec == "rms":
            return lambda r: torch.linalg.vector_norm(r).item() * scale
        if spec == "max":
            return lambda r: torch.linalg.vector_norm(r, math.inf).item()
        b = shape[0]
        s = math.sqrt(b) * scale  # 1 / sqrt(elements per sample)
        return lambda r: torch.linalg.vector_norm(r.reshape(b, -1), dim=1).max().item() * s

    numels = layout.numels
    if spec == "max":
        return lambda r: torch.linalg.vector_norm(r, math.inf).item()
    if spec == "rms":

        def rms(r: Tensor) -> float:
            ns = torch.stack([torch.linalg.vector_norm(p) for p in r.split(numels)]).tolist()
            return max(n * s for n, s in zip(ns, scales, strict=True))

        return rms
    b = layout.shapes[0][0]
    per = [math.sqrt(b) * s for s in scales]

    def per_sample(r: Tensor) -> float:
        parts = [
            torch.linalg.vector_norm(p.view(b, -1), dim=1) * s
            for p, s in zip(r.split(numels), per, strict=True)
        ]
        return torch.stack(parts).max().item()

    return per_sample
