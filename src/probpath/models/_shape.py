"""The data shape, the network and the trace estimator of a model family (private).

Every family takes its data the same way: ``dim=D`` for vectors or ``shape=(C, H, W)`` for
images (``dim=D`` is ``shape=(D,)``; with ``shape`` given, ``dim`` is its product), and its
network by kind, ``net="auto" | "mlp" | "unet"`` with ``net_config`` overrides
(:func:`probpath.nets.build_net`), or as any callable (an analytic oracle in tests).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, overload

from torch import Tensor, nn

from probpath.nets import build_net, resolve_net

__all__ = [
    "EXACT_TRACE_MAX_DIM",
    "NetSpec",
    "check_batch",
    "data_shape",
    "family_net",
    "resolve_trace",
]

NetSpec = str | Callable[..., Tensor]
"""A network kind (``"auto"``, ``"mlp"``, ``"unet"``) or the network itself."""


def data_shape(dim: int | None, shape: Sequence[int] | None) -> tuple[int, ...]:
    """The shape of one example: ``shape``, or ``(dim,)`` (``(2,)`` when neither is given);
    ``dim`` must then agree with ``prod(shape)``.

    Example:
        >>> data_shape(3, None), data_shape(None, [1, 8, 8]), data_shape(64, (1, 8, 8))
        ((3,), (1, 8, 8), (1, 8, 8))
    """
    if shape is None:
        size = 2 if dim is None else dim
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ValueError(f"dim (the data dimension) must be a positive int, got {size!r}")
        return (size,)
    if isinstance(shape, (str, bytes)) or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape
    ):
        raise ValueError(
            f"shape (one example's shape: [D] or [C, H, W]) must be positive ints, got {shape!r}"
        )
    out = tuple(shape)
    if len(out) not in (1, 3):
        raise ValueError(f"shape must be [D] (vectors) or [C, H, W] (images), got {list(out)}")
    if dim is not None and dim != math.prod(out):
        raise ValueError(
            f"dim={dim} disagrees with shape {list(out)} (dim is its product, "
            f"{math.prod(out)}); give one of them"
        )
    return out


def check_batch(x: Tensor, shape: tuple[int, ...]) -> None:
    """Raise a ValueError unless ``x`` is a batch ``(batch, *shape)``.

    Example:
        >>> import torch
        >>> check_batch(torch.zeros(4, 1, 8, 8), (1, 8, 8))
        >>> check_batch(torch.zeros(4, 3), (2,))
        Traceback (most recent call last):
        ...
        ValueError: x must have shape (batch, 2), got (4, 3)
    """
    if not isinstance(x, Tensor) or tuple(x.shape[1:]) != shape or x.dim() != len(shape) + 1:
        got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"x must have shape (batch, {', '.join(map(str, shape))}), got {got}")


@overload
def family_net(
    net: str,
    shape: tuple[int, ...],
    *,
    role: str,
    mlp: Mapping[str, Any],
    net_config: Mapping[str, Any] | None,
    n_classes: int = 0,
) -> tuple[nn.Module, str, dict[str, Any]]: ...


@overload
def family_net(
    net: NetSpec,
    shape: tuple[int, ...],
    *,
    role: str,
    mlp: Mapping[str, Any],
    net_config: Mapping[str, Any] | None,
    n_classes: int = 0,
) -> tuple[Callable[..., Tensor], str, dict[str, Any]]: ...


def family_net(
    net: NetSpec,
    shape: tuple[int, ...],
    *,
    role: str,
    mlp: Mapping[str, Any],
    net_config: Mapping[str, Any] | None,
    n_classes: int = 0,
) -> tuple[Callable[..., Tensor], str, dict[str, Any]]:
    """``(network, kind, net_config)`` of a family: ``build_net(kind, shape, role=role,
    n_classes=n_classes, **kwargs)``, the MLP's ``kwargs`` being the family's ``mlp`` keys
    (hidden, activation, ...) updated by ``net_config``, the U-Net's ``net_config`` alone.

    ``kind`` is :func:`probpath.nets.resolve_net` of ``net`` (what the family saves in its
    config); a callable ``net`` is returned as is, with the kind ``"auto"`` resolves to.

    Example:
        >>> net, kind, _ = family_net("auto", (1, 8, 8), role="field", mlp={},
        ...                           net_config={"base_channels": 8, "channel_mult": [1]})
        >>> type(net).__name__, kind
        ('UNet', 'unet')
    """
    config = dict(net_config or {})
    if not isinstance(net, str):
        if not callable(net):
            raise TypeError(f"net must be 'auto', 'mlp', 'unet' or a callable, got {net!r}")
        return net, resolve_net("auto", shape), config
    kind = resolve_net(net, shape)
    kwargs = {**mlp, **config} if kind == "mlp" else config
    return build_net(kind, shape, role=role, n_classes=n_classes, **kwargs), kind, config


EXACT_TRACE_MAX_DIM = 3
"""``trace="auto"`` takes the exact trace up to this dimension and Hutchinson's estimate
above it. The exact trace costs d vector-Jacobian products against Hutchinson's one: one
evaluation of a CNF's field with it costs 1.4x / 1.6x Hutchinson's at d = 2 (likelihood /
training), 1.8x / 2.1x at d = 3, 2.1x / 2.3x at d = 4, 3.6x / 4.2x at d = 8 and 23x / 27x at
d = 64 (3 x 128 MLP, batch 512, benchmarks/bench_cnf_trace.py): exact while it costs about
twice Hutchinson's at most, where its freedom from probe noise comes nearly free."""


def resolve_trace(trace: str, dim: int) -> str:
    """``"exact"`` or ``"hutchinson"``: ``trace`` itself, or for ``"auto"`` the exact trace
    when ``dim <= EXACT_TRACE_MAX_DIM``.

    Example:
        >>> resolve_trace("auto", 2), resolve_trace("auto", 64), resolve_trace("exact", 64)
        ('exact', 'hutchinson', 'exact')
    """
    if trace not in ("auto", "exact", "hutchinson"):
        raise ValueError(f"trace must be 'auto', 'exact' or 'hutchinson', got {trace!r}")
    if trace == "auto":
        return "exact" if dim <= EXACT_TRACE_MAX_DIM else "hutchinson"
    return trace
