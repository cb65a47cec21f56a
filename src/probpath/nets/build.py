"""One entry point that builds the network of a model from the data's shape: ``--net
auto|mlp|unet`` on the command line, ``net=`` in a model's config.

=================  ==============================  ==========================================
role               call                            ``"mlp"`` / ``"unet"`` (image data)
=================  ==============================  ==========================================
``"field"``        ``net(x, t, y=None)`` -> like x  :class:`MLP` / :class:`UNet`
``"cnf"``          ``net(x, t)`` -> like x          :class:`MLP` / :class:`ConvField`
``"classifier"``   ``net(x, t)`` -> (batch, K)      :class:`MLP` / :class:`UNetEncoder`
``"energy"``       ``net(x, t)`` -> (batch, 1)      :class:`MLP` / :class:`ConvEnergy`
=================  ==============================  ==========================================

``"field"`` is the network of every diffusion-family model (DDPM, NCSN, score SDE, flow
matching) in any parametrisation; ``"cnf"`` a CNF's field (smooth, no normalisation,
FFJORD's convolutional setting); ``"classifier"`` the noisy classifier's logits;
``"energy"`` the EBM's energy (evaluated at t = 0). ``"auto"`` picks ``"unet"`` for image
data (shape ``(C, H, W)``) and ``"mlp"`` otherwise. An MLP on images sees them flattened.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from probpath.nets.conv import ConvEnergy, ConvField
from probpath.nets.mlp import MLP
from probpath.nets.unet import UNet, UNetEncoder

__all__ = ["NET_KINDS", "NET_ROLES", "build_net", "resolve_net", "unet_config_for"]

NET_KINDS = ("auto", "mlp", "unet")
NET_ROLES = ("field", "cnf", "classifier", "energy")


def unet_config_for(shape: Sequence[int]) -> dict[str, Any]:
    """Sizes of the :class:`UNet` (and :class:`UNetEncoder`) for images of ``shape``
    ``(C, H, W)``, small enough to train on two CPU cores.

    Levels: halve the smaller side while it is even and at least 4, up to 4 levels
    (8 -> 4 -> 2; 28 -> 14 -> 7; 32 -> 16 -> 8 -> 4). Widths: the full-resolution level
    dominates the cost, so it gets 32 channels up to 16x16 pixels and 16 above, and the
    levels below, with 4x fewer pixels each, widen: ``32 * (1, 2, 2, 2)`` or
    ``16 * (1, 2, 4, 4)``. One residual block per level, self-attention in the middle
    only, GroupNorm with 8 groups. Parameters and step times: docs/nets.md.

    Example:
        >>> config = unet_config_for((1, 28, 28))
        >>> config["base_channels"], config["channel_mult"]
        (16, (1, 2, 4))
    """
    if len(shape) != 3 or any(int(s) < 1 for s in shape):
        raise ValueError(f"images have a shape (C, H, W) of positive sizes, got {tuple(shape)}")
    side, levels = min(int(shape[1]), int(shape[2])), 1
    small = max(int(shape[1]), int(shape[2])) <= 16
    while levels < 4 and side % 2 == 0 and side >= 4:
        side, levels = side // 2, levels + 1
    return {
        "base_channels": 32 if small else 16,
        "channel_mult": ((1, 2, 2, 2) if small else (1, 2, 4, 4))[:levels],
        "num_res_blocks": 1,
        "attention_levels": (),
        "norm_groups": 8,
    }


def resolve_net(kind: str, shape: Sequence[int]) -> str:
    """``"mlp"`` or ``"unet"``: ``kind`` itself, or for ``"auto"`` the U-Net when the data
    are images (``shape = (C, H, W)``) and the MLP otherwise.

    Example:
        >>> resolve_net("auto", (1, 8, 8)), resolve_net("auto", (2,))
        ('unet', 'mlp')
    """
    if kind not in NET_KINDS:
        raise ValueError(f"unknown network {kind!r}; valid: {', '.join(NET_KINDS)}")
    if kind == "auto":
        return "unet" if len(shape) == 3 else "mlp"
    if kind == "unet" and len(shape) != 3:
        raise ValueError(
            f"the U-Net and the convolutional networks need images of shape (C, H, W); the "
            f"data have shape {tuple(shape)}: use net='mlp'"
        )
    return kind


class Flattened(nn.Module):
    """``net(x.flatten(1), ...)``, reshaped to ``x``'s shape when ``field`` is set: an MLP
    on images."""

    def __init__(self, net: nn.Module, field: bool) -> None:
        super().__init__()
        self.net, self.field = net, field

    def forward(self, x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        out = self.net(x.flatten(1), *args, **kwargs)
        return out.view(x.shape) if self.field else out


def _mlp(role: str, dim: int, n_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    if role == "field":
        return MLP(dim, n_classes=n_classes, **kwargs)
    out_dim = {"cnf": dim, "classifier": n_classes, "energy": 1}[role]
    return MLP(dim, out_dim=out_dim, **kwargs)


def _conv(role: str, shape: Sequence[int], n_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    channels = int(shape[0])
    if role == "field":
        return UNet(channels, n_classes=n_classes, **{**unet_config_for(shape), **kwargs})
    if role == "classifier":
        sizes = {**unet_config_for(shape), **kwargs}
        return UNetEncoder(channels, out_features=n_classes, **sizes)
    return (ConvField if role == "cnf" else ConvEnergy)(channels, **kwargs)


def build_net(
    kind: str, shape: Sequence[int], *, role: str = "field", n_classes: int = 0, **kwargs: Any
) -> nn.Module:
    """The network of kind ``kind`` (``"auto"``, ``"mlp"``, ``"unet"``) and ``role`` (see
    the module doc) for data of ``shape`` (one sample: ``(dim,)`` or ``(C, H, W)``).

    ``n_classes``: labels of a conditional field (0: unconditional; index ``n_classes`` is
    the null label) or the classifier's number of classes. ``kwargs`` go to the network's
    constructor: the MLP's ``hidden``, ``activation``, ... or, for the U-Net and its
    encoder, override :func:`unet_config_for`'s sizes.

    Example:
        >>> import torch
        >>> net = build_net("auto", (1, 8, 8), n_classes=10)
        >>> type(net).__name__, net(torch.randn(2, 1, 8, 8), 0.5).shape
        ('UNet', torch.Size([2, 1, 8, 8]))
        >>> mlp = build_net("mlp", (1, 8, 8), hidden=(32,))  # an MLP on flattened images
        >>> mlp(torch.randn(2, 1, 8, 8), 0.5).shape
        torch.Size([2, 1, 8, 8])
    """
    if role not in NET_ROLES:
        raise ValueError(f"unknown role {role!r}; valid: {', '.join(NET_ROLES)}")
    if n_classes < 0 or (role == "classifier" and n_classes < 2):
        raise ValueError(f"need n_classes >= 0 (>= 2 for a classifier), got {n_classes}")
    if n_classes and role in ("cnf", "energy"):
        raise ValueError(f"the {role} network takes no labels: pass n_classes=0")
    shape = tuple(int(s) for s in shape)
    if resolve_net(kind, shape) == "unet":
        return _conv(role, shape, n_classes, kwargs)
    net = _mlp(role, math.prod(shape), n_classes, kwargs)
    return net if len(shape) == 1 else Flattened(net, field=role in ("field", "cnf"))
