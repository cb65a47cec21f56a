"""Shared checks and reductions of the losses (private)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor

Reduction = Literal["mean", "none"]
Score = Callable[[Tensor], Tensor]


def _check_out(out: Tensor, x: Tensor, what: str = "score(x)") -> Tensor:
    if not isinstance(out, Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"{what} must return a tensor shaped like x {tuple(x.shape)}, got {shape}; "
            "a score is a gradient with respect to x."
        )
    return out


def _sqnorm(v: Tensor) -> Tensor:
    """Squared Euclidean norm of each batch element, shape (batch,)."""
    return v.reshape(v.shape[0], -1).pow(2).sum(1)


def _reduce(per_example: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "none":
        return per_example
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")


def _dsm(score_value: Tensor, eps: Tensor, sigma: Tensor) -> Tensor:
    r"""Per-example :math:`\tfrac12\|s + \varepsilon/\sigma\|^2`; ``sigma`` is (batch,) or 0-d."""
    sigma = sigma.reshape(-1, *([1] * (eps.dim() - 1))) if sigma.dim() == 1 else sigma
    return 0.5 * _sqnorm(score_value + eps / sigma)
