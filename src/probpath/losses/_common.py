"""Shared checks and reductions of the losses (private; the batch checks they share with the
samplers are in :mod:`probpath._batch`)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from torch import Tensor

from probpath._batch import check_like
from probpath._batch import sqnorm as _sqnorm

Reduction = Literal["mean", "none"]
Score = Callable[[Tensor], Tensor]


def _check_out(out: Tensor, x: Tensor, what: str = "score(x)") -> Tensor:
    return check_like(out, x, what, "a score is a gradient with respect to x")


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
