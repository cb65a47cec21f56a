"""build_net: every role and kind gives the documented call and output shape."""

from __future__ import annotations

import pytest
import torch

from probpath.nets import MLP, ConvEnergy, ConvField, UNet, UNetEncoder, build_net, resolve_net

IMAGE = (1, 8, 8)
SMALL = {"base_channels": 8, "norm_groups": 4}


@pytest.mark.parametrize(
    ("role", "kwargs", "cls", "out"),
    [
        ("field", SMALL, UNet, IMAGE),
        ("cnf", {"hidden": (4,)}, ConvField, IMAGE),
        ("classifier", SMALL, UNetEncoder, (3,)),
        ("energy", {"hidden": (4, 4)}, ConvEnergy, (1,)),
    ],
)
def test_image_nets(role: str, kwargs: dict, cls: type, out: tuple[int, ...]) -> None:
    n_classes = 3 if role == "classifier" else 0
    net = build_net("auto", IMAGE, role=role, n_classes=n_classes, **kwargs)
    assert isinstance(net, cls)
    assert net(torch.randn(2, *IMAGE), torch.rand(2)).shape == (2, *out)


@pytest.mark.parametrize("role", ["field", "cnf", "classifier", "energy"])
@pytest.mark.parametrize("shape", [(2,), IMAGE])
def test_mlp_nets(role: str, shape: tuple[int, ...]) -> None:
    n_classes = 3 if role == "classifier" else 0
    net = build_net("mlp", shape, role=role, n_classes=n_classes, hidden=(8,))
    out = {"classifier": (3,), "energy": (1,)}.get(role, shape)
    assert net(torch.randn(4, *shape), 0.5).shape == (4, *out)
    if len(shape) == 1:  # toys keep the plain MLP (and its state-dict keys)
        assert isinstance(net, MLP)


def test_conditional_field_and_overrides() -> None:
    net = build_net("unet", IMAGE, n_classes=10, channel_mult=(1, 2), **SMALL)
    assert isinstance(net, UNet) and net.n_classes == 10 and len(net.ups) == 2
    x = torch.randn(2, *IMAGE)
    assert net(x, 0.5, torch.tensor([0, 10])).shape == x.shape
    mlp = build_net("mlp", IMAGE, n_classes=10, hidden=(8,))
    assert mlp(x, 0.5, torch.tensor([0, 10])).shape == x.shape


def test_resolve_and_errors() -> None:
    assert resolve_net("auto", (3, 32, 32)) == "unet"
    assert resolve_net("auto", (5,)) == "mlp"
    with pytest.raises(ValueError, match="valid: auto, mlp, unet"):
        resolve_net("resnet", IMAGE)
    with pytest.raises(ValueError, match="net='mlp'"):
        build_net("unet", (2,))
    with pytest.raises(ValueError, match="valid: field, cnf"):
        build_net("mlp", (2,), role="decoder")
    with pytest.raises(ValueError, match=">= 2 for a classifier"):
        build_net("unet", IMAGE, role="classifier")
    with pytest.raises(ValueError, match="takes no labels"):
        build_net("unet", IMAGE, role="cnf", n_classes=3)
