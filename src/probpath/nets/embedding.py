"""Time and label inputs for networks: broadcasting a time to the batch and embedding it,
checking class labels."""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = ["broadcast_time", "check_labels", "sinusoidal_embedding"]


def broadcast_time(t: float | Tensor, x: Tensor) -> Tensor:
    """Return ``t`` as a tensor of shape ``(batch,)`` matching ``x``'s batch, dtype and device.

    ``t`` may be a Python float, a 0-dim tensor or a tensor of shape ``(batch,)``.

    Example:
        >>> broadcast_time(0.5, torch.zeros(3, 2))
        tensor([0.5000, 0.5000, 0.5000])
    """
    batch = x.shape[0]
    t = torch.as_tensor(t, dtype=x.dtype, device=x.device)
    if t.dim() == 0:
        return t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(
            f"t must be a float, a 0-dim tensor or a tensor of shape (batch,) = ({batch},); "
            f"got shape {tuple(t.shape)}. Flatten a (batch, 1) time with t.view(-1)."
        )
    return t


def sinusoidal_embedding(t: Tensor, n_features: int, *, max_frequency: float = 1000.0) -> Tensor:
    """Sinusoidal features of a time ``t`` in [0, 1], shape ``(batch, n_features)``.

    emb(t) = [sin(w_1 t), ..., sin(w_k t), cos(w_1 t), ..., cos(w_k t)], with
    k = n_features / 2 frequencies w_j spaced geometrically from 1 to ``max_frequency``
    (Vaswani et al. 2017, "Attention is all you need", as used for DDPM's time input,
    with t rescaled from {1..1000} to [0, 1]).

    Example:
        >>> sinusoidal_embedding(torch.zeros(2), 4)
        tensor([[0., 0., 1., 1.],
                [0., 0., 1., 1.]])
    """
    if n_features < 2 or n_features % 2:
        raise ValueError(f"n_features must be an even integer >= 2, got {n_features}")
    half = n_features // 2
    freqs = torch.exp(
        torch.linspace(0.0, math.log(max_frequency), half, dtype=t.dtype, device=t.device)
    )
    angles = t[:, None] * freqs
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def check_labels(y: Tensor, batch: int, high: int) -> Tensor:
    """Return ``y`` after checking it is a long tensor of shape ``(batch,)`` in ``[0, high]``.

    Example:
        >>> check_labels(torch.tensor([0, 2]), 2, high=2)
        tensor([0, 2])
    """
    if not isinstance(y, Tensor) or y.dtype != torch.long or y.shape != (batch,):
        got = f"{y.dtype} of shape {tuple(y.shape)}" if isinstance(y, Tensor) else repr(y)
        raise ValueError(f"labels must be a long tensor of shape (batch,) = ({batch},), got {got}")
    if bool(((y < 0) | (y > high)).any()):
        raise ValueError(
            f"labels must lie in [0, {high}], got values from {int(y.min())} to {int(y.max())}"
        )
    return y
