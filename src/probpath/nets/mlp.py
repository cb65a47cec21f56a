"""A multilayer perceptron with a time input: the vector field of every family on 2-D toys."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from probpath.nets.embedding import broadcast_time, sinusoidal_embedding

__all__ = ["ACTIVATIONS", "MLP"]

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "tanh": nn.Tanh,
    "softplus": nn.Softplus,
    "silu": nn.SiLU,
    "gelu": nn.GELU,
    "elu": nn.ELU,
}
"""Smooth activations (a CNF needs a field that is differentiable in x)."""

TIME_EMBEDDINGS = ("concat", "sinusoidal")


class MLP(nn.Module):
    """Time-dependent MLP ``model(x, t) -> (batch, out_dim)``.

    Every layer sees the time features next to its input, as FFJORD's "concat" layers
    (Grathwohl et al. 2019): h_{k+1} = act(W_k [h_k, e(t)] + b_k), with e(t) = t
    (``time_embedding="concat"``) or sinusoidal features of t (``"sinusoidal"``).
    The last layer is linear.

    Args:
        dim: input dimension.
        hidden: widths of the hidden layers.
        activation: one of ``ACTIVATIONS``.
        time_embedding: ``"concat"`` (t itself) or ``"sinusoidal"``.
        out_dim: output dimension, ``dim`` by default (a vector field).
        n_time_features: number of sinusoidal features (``"sinusoidal"`` only).

    Example:
        >>> net = MLP(2, hidden=(16, 16))
        >>> net(torch.randn(5, 2), 0.3).shape
        torch.Size([5, 2])
    """

    def __init__(
        self,
        dim: int,
        hidden: Sequence[int] = (64, 64, 64),
        activation: str = "tanh",
        time_embedding: str = "concat",
        out_dim: int | None = None,
        *,
        n_time_features: int = 16,
    ) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; valid: {', '.join(sorted(ACTIVATIONS))}"
            )
        if time_embedding not in TIME_EMBEDDINGS:
            raise ValueError(
                f"unknown time_embedding {time_embedding!r}; valid: {', '.join(TIME_EMBEDDINGS)}"
            )
        if dim < 1 or any(h < 1 for h in hidden):
            raise ValueError(f"dim and hidden widths must be positive, got {dim}, {hidden}")
        self.dim = dim
        self.out_dim = dim if out_dim is None else out_dim
        self.time_embedding = time_embedding
        self.n_time_features = 1 if time_embedding == "concat" else n_time_features
        if time_embedding == "sinusoidal":
            sinusoidal_embedding(torch.zeros(1), n_time_features)  # validates the size
        widths = [dim, *hidden, self.out_dim]
        self.layers = nn.ModuleList(
            nn.Linear(w_in + self.n_time_features, w_out)
            for w_in, w_out in itertools.pairwise(widths)
        )
        self.act = ACTIVATIONS[activation]()

    def embed_time(self, t: float | Tensor, x: Tensor) -> Tensor:
        """Time features of shape ``(batch, n_time_features)``."""
        t = broadcast_time(t, x)
        if self.time_embedding == "concat":
            return t[:, None]
        return sinusoidal_embedding(t, self.n_time_features)

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}")
        e = self.embed_time(t, x)
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(torch.cat([h, e], dim=-1))
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h
