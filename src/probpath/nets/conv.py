"""Small convolutional networks with the time as an extra input channel (FFJORD's
"concat" layers, Grathwohl et al. 2019): a vector field for a CNF on images and an energy
for an EBM on images.

Both use smooth activations only (a CNF's field must be differentiable in x for the
divergence; an energy is differentiated twice by implicit score matching and by
Langevin dynamics' score), and no normalisation: each output row depends on its input
row alone, as the divergence estimators require.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probpath._time import shared_time
from probpath.nets._blocks import check_image
from probpath.nets.embedding import broadcast_time
from probpath.nets.mlp import ACTIVATIONS

__all__ = ["ConcatConv2d", "ConvEnergy", "ConvField"]


class ConcatConv2d(nn.Conv2d):
    """``conv([t 1, x])``: a convolution whose input has the time as a constant first channel.

    Computed without building the concatenated batch: by linearity,
    ``conv([t 1, x]) = conv_x(x) + t conv_t(1)``, and ``conv_t(1)`` (the time channel's
    kernel run over a one-image map of ones, zero-padded as the batch is) costs one image.

    Example:
        >>> layer = ConcatConv2d(2, 4, 3, padding=1)
        >>> x, t = torch.randn(5, 2, 8, 8), torch.rand(5)
        >>> ref = torch.nn.functional.conv2d(
        ...     torch.cat([t[:, None, None, None].expand(5, 1, 8, 8), x], 1),
        ...     layer.weight, layer.bias, padding=1)
        >>> torch.allclose(layer(x, t), ref, atol=1e-6)
        True
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
    ) -> None:
        super().__init__(in_channels + 1, out_channels, kernel_size, stride, padding)

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:  # type: ignore[override]
        t = shared_time(broadcast_time(t, x)).reshape(-1, 1, 1, 1)
        ones = torch.ones(1, 1, *x.shape[2:], dtype=x.dtype, device=x.device)
        w_t, w_x = self.weight[:, :1], self.weight[:, 1:]
        time_map = F.conv2d(ones, w_t, None, self.stride, self.padding)
        return F.conv2d(x, w_x, self.bias, self.stride, self.padding) + t * time_map


def _checked(in_channels: int, hidden: Sequence[int], activation: str) -> nn.Module:
    if activation not in ACTIVATIONS:
        raise ValueError(
            f"unknown activation {activation!r}; valid: {', '.join(sorted(ACTIVATIONS))}"
        )
    if in_channels < 1 or not hidden or any(h < 1 for h in hidden):
        raise ValueError(
            f"need in_channels >= 1 and a non-empty list of positive widths, got "
            f"{in_channels}, {tuple(hidden)}"
        )
    return ACTIVATIONS[activation]()


class ConvField(nn.Module):
    """``f(x, t) -> (batch, C, H, W)``: 3x3 :class:`ConcatConv2d` layers of widths
    ``hidden`` at full resolution, ``act`` between them, the last layer linear: the
    time-dependent field of FFJORD's image CNFs (Grathwohl et al. 2019, Sec. 5.1: three
    layers of 64 channels, softplus).

    Example:
        >>> field = ConvField(1, hidden=(8, 8))
        >>> field(torch.randn(2, 1, 28, 28), 0.5).shape
        torch.Size([2, 1, 28, 28])
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: Sequence[int] = (64, 64, 64),
        activation: str = "softplus",
    ) -> None:
        super().__init__()
        self.act = _checked(in_channels, hidden, activation)
        self.in_channels = in_channels
        widths = [in_channels, *hidden, in_channels]
        self.layers = nn.ModuleList(
            ConcatConv2d(c_in, c_out, 3, padding=1) for c_in, c_out in itertools.pairwise(widths)
        )

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        check_image(x, self.in_channels)
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(h, t)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h


class ConvEnergy(nn.Module):
    """``E(x, t) -> (batch, 1)``: a :class:`ConcatConv2d` of width ``hidden[0]``, then one of
    stride 2 per further width (a side n becomes ceil(n/2)), ``act`` after each, the mean
    over pixels and a linear layer.

    Same call and output as :class:`~probpath.nets.MLP` with ``out_dim=1``, which the EBM
    evaluates at t = 0; the time input also lets one energy serve every noise level.

    Example:
        >>> energy = ConvEnergy(1, hidden=(8, 16))
        >>> energy(torch.randn(3, 1, 8, 8), 0.0).shape
        torch.Size([3, 1])
    """

    def __init__(
        self,
        in_channels: int = 1,
        hidden: Sequence[int] = (32, 64, 64),
        activation: str = "silu",
    ) -> None:
        super().__init__()
        self.act = _checked(in_channels, hidden, activation)
        self.in_channels = in_channels
        widths = [in_channels, *hidden]
        self.layers = nn.ModuleList(
            ConcatConv2d(c_in, c_out, 3, stride=1 if i == 0 else 2, padding=1)
            for i, (c_in, c_out) in enumerate(itertools.pairwise(widths))
        )
        self.head = nn.Linear(widths[-1], 1)

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        check_image(x, self.in_channels)
        h = x
        for layer in self.layers:
            h = self.act(layer(h, t))
        return self.head(h.mean(dim=(2, 3)))
