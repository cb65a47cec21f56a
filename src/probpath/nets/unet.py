"""A U-Net for images ``(batch, C, H, W)`` and its down-sampling half as a classifier.

The architecture of DDPM (Ho et al. 2020, Appendix B) as refined by Dhariwal & Nichol
(2021): residual blocks with GroupNorm and SiLU that receive a time (and label) embedding,
self-attention at chosen levels, stride-2 down-sampling, nearest-neighbour up-sampling,
and a skip connection from every block of the down path to one block of the up path.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probpath.nets._blocks import (
    Downsample,
    ResBlock,
    SelfAttention,
    TimeLabelEmbedding,
    Upsample,
    check_image,
    group_norm,
    zero_init,
)

__all__ = ["UNet", "UNetEncoder"]


class _Stage(nn.Module):
    """A residual block, followed by self-attention with ``heads`` heads unless ``None``."""

    def __init__(
        self, c_in: int, c_out: int, emb_dim: int, dropout: float, groups: int, heads: int | None
    ) -> None:
        super().__init__()
        self.res = ResBlock(c_in, c_out, emb_dim, dropout, groups)
        self.attn = SelfAttention(c_out, heads, groups) if heads else None

    def forward(self, x: Tensor, emb: Tensor) -> Tensor:
        h = self.res(x, emb)
        return h if self.attn is None else self.attn(h)


class _DownPath(nn.Module):
    """Stem, down levels and middle of the U-Net; ``forward`` returns the middle's output,
    the skips (every stage's output, down-sampled ones included) and the embedding."""

    def __init__(
        self,
        in_channels: int,
        base_channels: int,
        channel_mult: Sequence[int],
        num_res_blocks: int,
        attention_levels: Sequence[int],
        dropout: float,
        n_classes: int,
        heads: int,
        norm_groups: int,
    ) -> None:
        super().__init__()
        levels = len(channel_mult)
        bad = [lv for lv in attention_levels if not 0 <= lv < levels]
        sizes = (in_channels, base_channels, num_res_blocks, levels, *channel_mult)
        if min(sizes) < 1 or bad:
            raise ValueError(
                "need in_channels, base_channels, num_res_blocks >= 1, a non-empty "
                f"channel_mult of positive integers and attention levels in [0, {levels}); "
                f"got {in_channels}, "
                f"{base_channels}, {num_res_blocks}, {tuple(channel_mult)}, "
                f"{tuple(attention_levels)}"
            )
        emb_dim = 4 * base_channels
        self.widths = [base_channels * m for m in channel_mult]
        self.embed = TimeLabelEmbedding(base_channels, emb_dim, n_classes)
        self.stem = nn.Conv2d(in_channels, self.widths[0], 3, padding=1)
        self.levels = nn.ModuleList()
        self.downs = nn.ModuleList()
        self.skip_widths = [self.widths[0]]
        ch = self.widths[0]
        for level, width in enumerate(self.widths):
            heads_here = heads if level in attention_levels else None
            stages = nn.ModuleList()
            for _ in range(num_res_blocks):
                stages.append(_Stage(ch, width, emb_dim, dropout, norm_groups, heads_here))
                ch = width
                self.skip_widths.append(ch)
            self.levels.append(stages)
            if level < levels - 1:
                self.downs.append(Downsample(ch))
                self.skip_widths.append(ch)
        self.mid = nn.ModuleList(
            [
                ResBlock(ch, ch, emb_dim, dropout, norm_groups),
                SelfAttention(ch, heads, norm_groups),
                ResBlock(ch, ch, emb_dim, dropout, norm_groups),
            ]
        )

    def forward(
        self, x: Tensor, t: float | Tensor, y: Tensor | None
    ) -> tuple[Tensor, list[Tensor], Tensor]:
        emb = self.embed(x, t, y)
        h = self.stem(x)
        skips = [h]
        for level, stages in enumerate(self.levels):
            for stage in stages.children():
                h = stage(h, emb)
                skips.append(h)
            if level < len(self.downs):
                h = self.downs[level](h)
                skips.append(h)
        res1, attn, res2 = self.mid
        return res2(attn(res1(h, emb)), emb), skips, emb


class UNet(nn.Module):
    """``net(x, t, y=None) -> (batch, out_channels, H, W)`` for images ``x`` of any size.

    Level ``k`` of ``channel_mult`` works at ``ceil(H / 2^k) x ceil(W / 2^k)`` pixels with
    ``base_channels * channel_mult[k]`` channels and ``num_res_blocks`` residual blocks
    (``num_res_blocks + 1`` on the way up, one per skip); self-attention follows each
    block of the levels in ``attention_levels`` and sits in the middle. Down-sampling is a
    stride-2 convolution (a side n becomes ceil(n/2): 28 -> 14 -> 7 -> 4), up-sampling goes
    back to the skip's size, so odd sides work. GroupNorm uses ``gcd(norm_groups,
    channels)`` groups; keep the deepest level at 2x2 or more so that a group holds more
    than one value.

    The time t in [0, 1] enters through sinusoidal features of size ``base_channels`` and
    a two-layer MLP of width ``4 * base_channels`` (:class:`TimeLabelEmbedding`); labels
    ``y`` (long, ``(batch,)`` in ``[0, n_classes]``) add a learned embedding, index
    ``n_classes`` being the null label, and ``y=None`` the null label for every row (as
    :class:`~probpath.nets.MLP`).

    The output convolution starts at zero, so the untrained network predicts 0 for every
    input: the best constant for an eps, score or (centred data's) velocity target, an
    initial loss equal to the target's variance, and for a CNF the identity flow. The
    residual branches also start at zero, so each block starts as the identity.

    Example:
        >>> net = UNet(in_channels=1, base_channels=16, channel_mult=(1, 2), n_classes=10)
        >>> x = torch.randn(3, 1, 28, 28)
        >>> net(x, torch.rand(3), torch.tensor([0, 5, 10])).shape  # 10 = the null label
        torch.Size([3, 1, 28, 28])
    """

    def __init__(
        self,
        in_channels: int = 1,
        base_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_levels: Sequence[int] = (),
        dropout: float = 0.0,
        n_classes: int = 0,
        *,
        out_channels: int | None = None,
        heads: int = 1,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        if n_classes < 0 or not 0 <= dropout < 1:
            raise ValueError(
                f"need n_classes >= 0 and 0 <= dropout < 1, got {n_classes}, {dropout}"
            )
        self.in_channels = in_channels
        self.out_channels = in_channels if out_channels is None else out_channels
        self.n_classes = n_classes
        self.down = _DownPath(
            in_channels, base_channels, channel_mult, num_res_blocks, attention_levels,
            dropout, n_classes, heads, norm_groups,
        )  # fmt: skip
        emb_dim, widths, skips = 4 * base_channels, self.down.widths, list(self.down.skip_widths)
        self.ups = nn.ModuleList()  # from the deepest level up
        self.upsamplers = nn.ModuleList()
        ch = widths[-1]
        for level in reversed(range(len(widths))):
            heads_here = heads if level in attention_levels else None
            stages = nn.ModuleList()
            for _ in range(num_res_blocks + 1):
                c_in = ch + skips.pop()
                stages.append(
                    _Stage(c_in, widths[level], emb_dim, dropout, norm_groups, heads_here)
                )
                ch = widths[level]
            self.ups.append(stages)
            if level > 0:
                self.upsamplers.append(Upsample(ch))
        self.out_norm = group_norm(ch, norm_groups)
        self.out = zero_init(nn.Conv2d(ch, self.out_channels, 3, padding=1))

    def forward(self, x: Tensor, t: float | Tensor, y: Tensor | None = None) -> Tensor:
        """The prediction for images ``x`` at times ``t`` (a float, 0-dim or ``(batch,)``)."""
        check_image(x, self.in_channels)
        h, skips, emb = self.down(x, t, y)
        for i, stages in enumerate(self.ups):
            for stage in stages.children():
                h = stage(torch.cat([h, skips.pop()], dim=1), emb)
            if i < len(self.upsamplers):
                h = self.upsamplers[i](h, skips[-1].shape[-2:])
        return self.out(F.silu(self.out_norm(h)))


class UNetEncoder(nn.Module):
    """``net(x, t) -> (batch, out_features)``: the :class:`UNet`'s down path and middle,
    then GroupNorm, SiLU, the mean over pixels and a linear layer (the noisy classifier's
    encoder of Dhariwal & Nichol 2021, with mean instead of attention pooling).

    Arguments as :class:`UNet`'s; the default sizes match its defaults so that a classifier
    and a diffusion model of one data set see the same features.

    Example:
        >>> clf = UNetEncoder(in_channels=3, out_features=10, base_channels=16)
        >>> clf(torch.randn(2, 3, 32, 32), 0.5).shape
        torch.Size([2, 10])
    """

    def __init__(
        self,
        in_channels: int = 1,
        out_features: int = 10,
        base_channels: int = 32,
        channel_mult: Sequence[int] = (1, 2, 2),
        num_res_blocks: int = 1,
        attention_levels: Sequence[int] = (),
        dropout: float = 0.0,
        *,
        heads: int = 1,
        norm_groups: int = 32,
    ) -> None:
        super().__init__()
        if out_features < 1:
            raise ValueError(f"out_features must be >= 1, got {out_features}")
        self.in_channels = in_channels
        self.down = _DownPath(
            in_channels, base_channels, channel_mult, num_res_blocks, attention_levels,
            dropout, 0, heads, norm_groups,
        )  # fmt: skip
        width = self.down.widths[-1]
        self.norm = group_norm(width, norm_groups)
        self.head = nn.Linear(width, out_features)

    def forward(self, x: Tensor, t: float | Tensor) -> Tensor:
        """Features (e.g. logits) of images ``x`` at times ``t``."""
        check_image(x, self.in_channels)
        h, _, _ = self.down(x, t, None)
        return self.head(F.silu(self.norm(h)).mean(dim=(2, 3)))
