"""Checks and reductions over a batch of states, shared by the losses and the samplers (private).

A state ``x`` has shape ``(batch, ...)``; every function here works per batch element.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["check_like", "check_state", "sqnorm"]


def check_state(x: Tensor) -> None:
    """Raise if ``x`` is not a floating tensor with a non-empty batch dimension."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (batch, ...), got {type(x).__name__}.")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must have a non-empty leading batch dimension, got {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}.")


def check_like(out: object, x: Tensor, what: str, hint: str = "") -> Tensor:
    """``out``, checked to be a tensor shaped like ``x``: the output of ``what`` (e.g.
    ``"model(x, t)"``) at the state ``x``; ``hint`` ends the error message.

    Example:
        >>> import torch
        >>> check_like(torch.zeros(2, 3), torch.ones(2, 3), "model(x, t)").shape
        torch.Size([2, 3])
    """
    if not isinstance(out, Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        end = f"; {hint}." if hint else "."
        raise ValueError(
            f"{what} must return a tensor shaped like x {tuple(x.shape)}, got {shape}{end}"
        )
    return out


def sqnorm(v: Tensor) -> Tensor:
    """Squared Euclidean norm of each batch element, shape (batch,)."""
    return v.reshape(v.shape[0], -1).pow(2).sum(1)
