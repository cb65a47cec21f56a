"""The U-Net and its encoder: shapes at every supported size, conditioning on time and
labels, zero initialisation, float64, the attention formula; row independence of every
image network."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from probpath.nets import ConvEnergy, ConvField, UNet, UNetEncoder, unet_config_for
from probpath.nets._blocks import SelfAttention

SMALL = {"base_channels": 8, "norm_groups": 4}


def perturb(net: nn.Module, seed: int = 0) -> nn.Module:
    """Give every zero-initialised weight (residual branches' last convolutions, the
    attention's output, the output layer) random values, so that every input matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in net.parameters():
            if p.dim() > 1 and not p.any():
                p.copy_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return net


def small_unet(shape: tuple[int, int, int], **kwargs: object) -> UNet:
    config = {**unet_config_for(shape), **SMALL, **kwargs}
    return UNet(shape[0], **config)  # type: ignore[arg-type]


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize(
    "shape", [(1, 8, 8), (3, 8, 8), (1, 28, 28), (3, 28, 28), (1, 32, 32), (3, 32, 32)]
)
def test_shapes_at_every_size(shape: tuple[int, int, int], batch: int) -> None:
    torch.manual_seed(0)
    net = perturb(small_unet(shape, attention_levels=(1,), n_classes=3))
    x = torch.randn(batch, *shape)
    out = net(x, torch.rand(batch), torch.randint(0, 4, (batch,)))
    assert out.shape == x.shape and torch.isfinite(out).all()
    enc = UNetEncoder(shape[0], 5, channel_mult=unet_config_for(shape)["channel_mult"], **SMALL)
    assert enc(x, 0.3).shape == (batch, 5)


def test_odd_sides_go_back_to_their_size() -> None:
    # 28 -> 14 -> 7 -> 4 and back; a 7 x 9 image (sides 7, 4, 2 and 9, 5, 3)
    for shape, mult in [((1, 28, 28), (1, 1, 1, 1)), ((2, 7, 9), (1, 2, 2))]:
        net = perturb(UNet(shape[0], channel_mult=mult, **SMALL))
        x = torch.randn(2, *shape)
        assert net(x, 0.5).shape == x.shape


def test_output_starts_at_zero_and_still_learns() -> None:
    # zero-initialised output: the untrained net predicts 0, yet its output layer gets a
    # gradient (dL/dW = grad_out x features), so training moves it at the first step
    net = small_unet((1, 8, 8))
    x = torch.randn(4, 1, 8, 8)
    out = net(x, torch.rand(4))
    assert out.abs().max() == 0
    (out - x).square().mean().backward()
    assert net.out.weight.grad is not None and net.out.weight.grad.abs().max() > 0


def test_every_parameter_gets_a_gradient() -> None:
    torch.manual_seed(1)
    net = perturb(small_unet((1, 8, 8), attention_levels=(0, 1), n_classes=3, dropout=0.1))
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    net(x, torch.rand(4), y).square().mean().backward()
    missing = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.any()]
    assert missing == []


def test_time_forms_agree_and_time_matters() -> None:
    torch.manual_seed(2)
    net = perturb(small_unet((1, 8, 8))).double()
    x = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    out = net(x, 0.25)
    t = torch.tensor(0.25, dtype=torch.float64)
    torch.testing.assert_close(net(x, t), out, rtol=0, atol=0)
    torch.testing.assert_close(net(x, t.expand(3)), out, rtol=0, atol=0)
    torch.testing.assert_close(net(x, torch.full((3,), 0.25)), out, rtol=0, atol=1e-13)
    assert (net(x, 0.75) - out).abs().max() > 1e-3


def test_labels_null_is_default_and_each_label_matters() -> None:
    torch.manual_seed(3)
    net = perturb(small_unet((1, 8, 8), n_classes=3))
    x, t = torch.randn(4, 1, 8, 8), torch.rand(4)
    null = torch.full((4,), 3)
    torch.testing.assert_close(net(x, t), net(x, t, null), rtol=0, atol=0)
    for k in range(3):
        assert (net(x, t, torch.full((4,), k)) - net(x, t, null)).abs().max() > 1e-4
    with pytest.raises(ValueError, match=r"in \[0, 3\]"):
        net(x, t, torch.full((4,), 4))
    with pytest.raises(ValueError, match="unconditional"):
        small_unet((1, 8, 8))(x, t, null)


@pytest.mark.parametrize("kind", ["unet", "encoder", "field", "energy"])
def test_rows_are_independent(kind: str) -> None:
    # per-sample divergences need output row b to depend on input row b alone
    torch.manual_seed(4)
    net: nn.Module = {
        "unet": lambda: perturb(small_unet((2, 8, 8), attention_levels=(0, 1))),
        "encoder": lambda: UNetEncoder(2, 3, attention_levels=(0,), **SMALL),
        "field": lambda: ConvField(2, hidden=(4, 4)),
        "energy": lambda: ConvEnergy(2, hidden=(4, 4)),
    }[kind]()
    x = torch.randn(3, 2, 8, 8, requires_grad=True)
    out = net(x, torch.rand(3))
    for b in range(3):
        (grad,) = torch.autograd.grad(out[b].sum(), x, retain_graph=True)
        assert grad[b].abs().max() > 0
        assert torch.cat([grad[:b], grad[b + 1 :]]).abs().max() == 0


def test_float64_matches_float32() -> None:
    torch.manual_seed(5)
    net = perturb(small_unet((1, 8, 8), attention_levels=(1,)))
    x, t = torch.randn(2, 1, 8, 8), torch.rand(2)
    out32 = net(x, t)
    out64 = net.double()(x.double(), t.double())
    assert out64.dtype == torch.float64
    # float32 rounding (unit 6e-8) grows through ~20 layers: 1e-4 relative is a loose bound
    torch.testing.assert_close(out64.float(), out32, rtol=1e-4, atol=1e-5)


def test_attention_is_softmax_attention() -> None:
    # the matmul form equals torch's fused softmax(q k^T / sqrt(d)) v, head by head
    torch.manual_seed(6)
    attn = perturb(SelfAttention(8, heads=2, max_groups=4)).double()
    x = torch.randn(2, 8, 3, 5, dtype=torch.float64)
    qkv = attn.qkv(attn.norm(x)).reshape(2, 2, 3, 4, 15)  # (batch, head, q/k/v, d, pixels)
    q, k, v = (qkv[:, :, i].transpose(-1, -2) for i in range(3))
    h = F.scaled_dot_product_attention(q, k, v).transpose(-1, -2).reshape(2, 8, 3, 5)
    torch.testing.assert_close(attn(x), x + attn.out(h), rtol=0, atol=1e-12)
    with pytest.raises(ValueError, match="heads must divide"):
        SelfAttention(8, heads=3, max_groups=4)


def test_double_backward_through_attention() -> None:
    # a loss on the x-derivative (sliced score matching, MLE with a trace estimator)
    # differentiates the network twice
    torch.manual_seed(7)
    net = perturb(small_unet((1, 8, 8), attention_levels=(1,)))
    x = torch.randn(2, 1, 8, 8, requires_grad=True)
    v = torch.randn_like(x)
    (vjp,) = torch.autograd.grad((net(x, 0.5) * v).sum(), x, create_graph=True)
    (vjp * v).sum().backward()
    assert net.out.weight.grad is not None and net.out.weight.grad.abs().max() > 0


def test_presets() -> None:
    def sizes(shape: tuple[int, int, int]) -> tuple[int, tuple[int, ...]]:
        config = unet_config_for(shape)
        return config["base_channels"], config["channel_mult"]

    assert sizes((1, 8, 8)) == (32, (1, 2, 2))
    assert sizes((1, 28, 28)) == (16, (1, 2, 4))
    assert sizes((3, 32, 32)) == (16, (1, 2, 4, 4))
    assert sizes((1, 5, 5)) == (32, (1,))
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        unet_config_for((64,))
    # the deepest level of every preset is at least 2 x 2
    for side in (8, 28, 32, 64):
        levels = len(unet_config_for((1, side, side))["channel_mult"])
        assert math.ceil(side / 2 ** (levels - 1)) >= 2


def test_errors_teach() -> None:
    with pytest.raises(ValueError, match="attention levels in"):
        UNet(1, channel_mult=(1, 2), attention_levels=(2,))
    with pytest.raises(ValueError, match="dropout"):
        UNet(1, dropout=1.0)
    with pytest.raises(ValueError, match=r"\(batch, 1, H, W\)"):
        small_unet((1, 8, 8))(torch.zeros(2, 3, 8, 8), 0.5)
    with pytest.raises(ValueError, match="out_features"):
        UNetEncoder(1, 0)
