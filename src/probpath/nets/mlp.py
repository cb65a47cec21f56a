"""A multilayer perceptron with a time input: the vector field of every family on 2-D toys."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from probpath._time import shared_time
from probpath.nets.embedding import broadcast_time, check_labels, sinusoidal_embedding

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
    """Time-dependent MLP ``model(x, t) -> (batch, out_dim)``, optionally label-conditional.

    Every layer sees the time features next to its input, as FFJORD's "concat" layers
    (Grathwohl et al. 2019): h_{k+1} = act(W_k [h_k, e(t)] + b_k), with e(t) = t
    (``time_embedding="concat"``) or sinusoidal features of t (``"sinusoidal"``).
    The last layer is linear.

    Labels (``n_classes > 0``): ``model(x, t, y)`` with ``y`` a long tensor (batch,) in
    ``[0, n_classes]``; a learned embedding ``E[y]`` joins the time features at every layer,
    e = [e(t), E[y]]. Index ``n_classes`` is the *null* label (no conditioning), as in
    classifier-free guidance (Ho & Salimans 2022): ``y=None`` means the null label for
    every row, so one network is both p(x | y) and p(x).

    Args:
        dim: input dimension.
        hidden: widths of the hidden layers.
        activation: one of ``ACTIVATIONS``.
        time_embedding: ``"concat"`` (t itself) or ``"sinusoidal"``.
        out_dim: output dimension, ``dim`` by default (a vector field).
        n_time_features: number of sinusoidal features (``"sinusoidal"`` only).
        n_classes: number of labels (0: unconditional).
        n_label_features: width of the label embedding.

    Example:
        >>> net = MLP(2, hidden=(16, 16))
        >>> net(torch.randn(5, 2), 0.3).shape
        torch.Size([5, 2])
        >>> cond = MLP(2, hidden=(16,), n_classes=3)
        >>> cond(torch.randn(2, 2), 0.3, torch.tensor([0, 3])).shape  # 3 = the null label
        torch.Size([2, 2])
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
        n_classes: int = 0,
        n_label_features: int = 16,
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
        if n_classes < 0 or (n_classes > 0 and n_label_features < 1):
            raise ValueError(
                f"need n_classes >= 0 and n_label_features >= 1, got {n_classes}, "
                f"{n_label_features}"
            )
        self.dim = dim
        self.out_dim = dim if out_dim is None else out_dim
        self.time_embedding = time_embedding
        self.n_time_features = 1 if time_embedding == "concat" else n_time_features
        if time_embedding == "sinusoidal":
            sinusoidal_embedding(torch.zeros(1), n_time_features)  # validates the size
        self.n_classes = n_classes
        self.label_embedding = (
            nn.Embedding(n_classes + 1, n_label_features) if n_classes > 0 else None
        )
        n_cond = self.n_time_features + (n_label_features if n_classes > 0 else 0)
        widths = [dim, *hidden, self.out_dim]
        self.layers = nn.ModuleList(
            nn.Linear(w_in + n_cond, w_out) for w_in, w_out in itertools.pairwise(widths)
        )
        self.act = ACTIVATIONS[activation]()

    def embed_time(self, t: float | Tensor, x: Tensor) -> Tensor:
        """Time features: shape ``(1, n_time_features)`` when every row shares one time
        (a float, a 0-dim tensor or a stride-0 ``t.expand(batch)``), else ``(batch, ...)``."""
        # one shared time: one row of features and a one-row bias in forward, measured at
        # 0.81-0.86x the sampling time of a 3x128 field at batch 1000 (1 thread, EM, PF-ODE
        # Euler, ancestral: benchmarks/bench_sampler_overhead.py --tricks)
        t = shared_time(broadcast_time(t, x))
        t = t.reshape(-1)
        if self.time_embedding == "concat":
            return t[:, None]
        return sinusoidal_embedding(t, self.n_time_features)

    def embed_label(self, y: Tensor | None, x: Tensor) -> Tensor:
        """Label features ``E[y]``: shape ``(batch, n_label_features)``, or
        ``(1, n_label_features)`` for ``y=None`` (the null label on every row)."""
        if self.label_embedding is None:
            raise ValueError("this MLP is unconditional (n_classes=0): call it without y")
        if y is None:
            return self.label_embedding.weight[self.n_classes : self.n_classes + 1]
        return self.label_embedding(check_labels(y, x.shape[0], self.n_classes))

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        """``h_{k+1} = act(W_k [h_k, c] + b_k)``, c the time (and label) features.

        When every row shares its conditioning (one time, no label or the null label: the
        calls of the samplers and ODE solvers) c is one row, and each layer is computed as
        ``W_k^h h_k + (W_k^c c + b_k)``: a one-row bias instead of a concatenated batch
        (0.8x the forward time of a 3x128 field at batch 1000-2000).
        """
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}")
        feats = [self.embed_time(t, x)]
        if self.label_embedding is not None or y is not None:
            feats.append(self.embed_label(y, x))
        shared = all(f.shape[0] == 1 for f in feats)
        c = torch.cat([f if shared else f.expand(x.shape[0], -1) for f in feats], dim=-1)
        h = x
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            assert isinstance(layer, nn.Linear)
            if shared:
                w, width = layer.weight, h.shape[1]
                bias = torch.addmm(layer.bias, c, w[:, width:].T)
                h = torch.addmm(bias, h, w[:, :width].T)
            else:
                h = layer(torch.cat([h, c], dim=-1))
            if i < last:
                h = self.act(h)
        return h
