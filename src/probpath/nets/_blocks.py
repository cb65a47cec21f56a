"""Building blocks of the U-Net and its encoder: the time (and label) embedding, a residual
block, self-attention, down- and up-sampling (Ho et al. 2020, "Denoising diffusion
probabilistic models", Appendix B; Dhariwal & Nichol 2021, "Diffusion models beat GANs").

Every block acts on each row of the batch alone (GroupNorm normalises within a sample,
attention mixes the pixels of one image), so per-sample Jacobians, and with them the
divergences of the likelihood code, are well defined.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probpath._time import shared_time
from probpath.nets.embedding import broadcast_time, check_labels, sinusoidal_embedding

__all__ = [
    "Downsample",
    "ResBlock",
    "SelfAttention",
    "TimeLabelEmbedding",
    "Upsample",
    "check_image",
    "group_norm",
    "zero_init",
]


def check_image(x: Tensor, channels: int) -> None:
    """Raise a ValueError unless ``x`` has shape ``(batch, channels, H, W)``."""
    if x.dim() != 4 or x.shape[1] != channels:
        raise ValueError(
            f"x must be a batch of images of shape (batch, {channels}, H, W), got {tuple(x.shape)}"
        )


def group_norm(channels: int, max_groups: int) -> nn.GroupNorm:
    """GroupNorm with ``gcd(max_groups, channels)`` groups: the most groups up to
    ``max_groups`` that divide ``channels`` (32 groups of 4 at 128 channels, as DDPM)."""
    return nn.GroupNorm(math.gcd(max_groups, channels), channels)


def zero_init(module: nn.Module) -> nn.Module:
    """Set every parameter of ``module`` to zero and return it."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class TimeLabelEmbedding(nn.Module):
    """``emb(t, y) = W_2 silu(W_1 e(t) + b_1) + b_2 + E[y]``, e the sinusoidal features of
    :func:`~probpath.nets.sinusoidal_embedding` (``n_features`` of them), E a learned table
    over ``n_classes + 1`` labels whose last row is the null label of classifier-free
    guidance (Ho & Salimans 2022). Returns ``silu(emb)``, the input every residual block
    projects: shape ``(1, dim)`` when every row shares one time and no label is given
    (the samplers' calls), else ``(batch, dim)``.
    """

    def __init__(self, n_features: int, dim: int, n_classes: int = 0) -> None:
        super().__init__()
        sinusoidal_embedding(torch.zeros(1), n_features)  # validates the size
        self.n_features, self.n_classes = n_features, n_classes
        self.mlp = nn.Sequential(nn.Linear(n_features, dim), nn.SiLU(), nn.Linear(dim, dim))
        self.label = nn.Embedding(n_classes + 1, dim) if n_classes > 0 else None

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        t = shared_time(broadcast_time(t, x)).reshape(-1)
        emb = self.mlp(sinusoidal_embedding(t, self.n_features))
        if self.label is not None:
            if y is None:
                emb = emb + self.label.weight[self.n_classes :]
            else:
                emb = emb + self.label(check_labels(y, x.shape[0], self.n_classes))
        elif y is not None:
            raise ValueError("this network is unconditional (n_classes=0): call it without y")
        return F.silu(emb)


class ResBlock(nn.Module):
    """``skip(x) + conv_2(drop(silu(gn_2(conv_1(silu(gn_1(x))) + W e + b))))``, e the
    embedding (``conv_1`` has no bias of its own: ``b`` is one).

    ``conv_2`` starts at zero, so the block starts as the identity (Goyal et al. 2017's
    zero-initialised last layer of a residual branch; DDPM's code does the same), and
    ``skip`` is a 1x1 convolution when the width changes.
    """

    def __init__(
        self, c_in: int, c_out: int, emb_dim: int, dropout: float, max_groups: int
    ) -> None:
        super().__init__()
        self.norm1 = group_norm(c_in, max_groups)
        self.conv1 = nn.Conv2d(c_in, c_out, 3, padding=1, bias=False)  # the shift's bias serves
        self.emb = nn.Linear(emb_dim, c_out)
        self.norm2 = group_norm(c_out, max_groups)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.conv2 = zero_init(nn.Conv2d(c_out, c_out, 3, padding=1))
        self.skip = nn.Conv2d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x))) + self.emb(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h


class SelfAttention(nn.Module):
    """``x + W_o softmax(q k^T / sqrt(d)) v`` over the pixels of each image, with
    ``(q, k, v) = W_qkv gn(x)`` (1x1 convolutions), ``heads`` heads of ``d = C / heads``
    channels; ``W_o`` starts at zero (the block starts as the identity).

    Written with matmuls rather than ``F.scaled_dot_product_attention``: on CPU the fused
    kernel has no double backward, which losses on the network's x-derivatives (sliced
    score matching, maximum likelihood with a trace estimator) need; and it was no faster
    (forward and backward at 28x28 pixels, 32 channels, batch 64, one thread).
    """

    def __init__(self, channels: int, heads: int, max_groups: int) -> None:
        super().__init__()
        if heads < 1 or channels % heads:
            raise ValueError(f"heads must divide the {channels} channels, got {heads}")
        self.heads = heads
        self.norm = group_norm(channels, max_groups)
        self.qkv = nn.Conv2d(channels, 3 * channels, 1)
        self.out = zero_init(nn.Conv2d(channels, channels, 1))

    def forward(self, x: Tensor) -> Tensor:
        b, c, height, width = x.shape
        d = c // self.heads
        q, k, v = self.qkv(self.norm(x)).reshape(b * self.heads, 3, d, height * width).unbind(1)
        q = q.transpose(1, 2) * (1 / math.sqrt(d))  # scaling q, not the pixels^2 logits
        weights = torch.softmax(torch.bmm(q, k), dim=-1)
        h = torch.bmm(v, weights.transpose(1, 2))  # (b * heads, d, pixels)
        return x + self.out(h.reshape(b, c, height, width))


class Downsample(nn.Conv2d):
    """A 3x3 convolution of stride 2 and padding 1: a side of n pixels becomes ceil(n / 2)."""

    def __init__(self, channels: int) -> None:
        super().__init__(channels, channels, 3, stride=2, padding=1)


class Upsample(nn.Module):
    """Nearest-neighbour up-sampling to the size of the matching skip, then a 3x3
    convolution: exactly undoes :class:`Downsample`'s size, even or odd (7 -> 4 -> 7)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: Tensor, size: tuple[int, int]) -> Tensor:
        return self.conv(F.interpolate(x, size=size, mode="nearest"))
