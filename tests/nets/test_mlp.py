"""The time-conditioned MLP: shapes, time broadcasting, errors, batch independence."""

from __future__ import annotations

import math

import pytest
import torch

from probpath.nets import ACTIVATIONS, MLP, broadcast_time, sinusoidal_embedding


@pytest.mark.parametrize("time_embedding", ["concat", "sinusoidal"])
@pytest.mark.parametrize("activation", sorted(ACTIVATIONS))
def test_shapes_and_time_forms_agree(time_embedding: str, activation: str) -> None:
    torch.manual_seed(0)
    net = MLP(3, hidden=(8, 8), activation=activation, time_embedding=time_embedding).double()
    x = torch.randn(5, 3, dtype=torch.float64)
    out = net(x, 0.25)
    assert out.shape == (5, 3)
    # a float, a 0-dim tensor, an expanded and a full (batch,) tensor of the same time give
    # the same output (the first three take the one-row bias path, the last concatenates:
    # equal up to float64 rounding of a different summation order)
    torch.testing.assert_close(net(x, torch.tensor(0.25)), out, rtol=0, atol=0)
    t = torch.tensor(0.25, dtype=torch.float64)
    torch.testing.assert_close(net(x, t.expand(5)), out, rtol=0, atol=0)
    torch.testing.assert_close(net(x, torch.full((5,), 0.25)), out, rtol=0, atol=1e-14)
    assert not torch.allclose(net(x, 0.75), out)  # the field depends on time


@pytest.mark.parametrize("labels", [None, "per-row"])
def test_shared_conditioning_equals_the_concatenated_layers(labels: str | None) -> None:
    # h_{k+1} = act(W_k [h_k, e(t), E[y]] + b_k), written out with torch.cat
    torch.manual_seed(1)
    net = MLP(2, hidden=(6, 5), activation="silu", time_embedding="sinusoidal", n_classes=3)
    net = net.double()
    x = torch.randn(4, 2, dtype=torch.float64)
    y = torch.tensor([0, 2, 3, 1]) if labels else None
    t = torch.tensor(0.3, dtype=torch.float64)
    e = sinusoidal_embedding(t.expand(4), net.n_time_features)
    assert net.label_embedding is not None
    lab = net.label_embedding.weight[torch.full((4,), 3) if y is None else y]
    h = x
    for i, layer in enumerate(net.layers):
        h = layer(torch.cat([h, e, lab], dim=1))
        h = torch.nn.functional.silu(h) if i < len(net.layers) - 1 else h
    for time in (0.3, t, t.expand(4), t.expand(4).clone()):
        torch.testing.assert_close(net(x, time, y), h, rtol=0, atol=1e-14)


def test_out_dim_and_float64() -> None:
    net = MLP(2, hidden=(4,), out_dim=1).double()
    assert net(torch.zeros(3, 2, dtype=torch.float64), 0.0).shape == (3, 1)


def test_rows_are_independent() -> None:
    # divergence estimators need output row b to depend only on input row b
    net = MLP(2, hidden=(8,))
    x = torch.randn(4, 2)
    jac = torch.autograd.functional.jacobian(lambda y: net(y, 0.5), x)  # (4, 2, 4, 2)
    off = jac.clone()
    for b in range(4):
        off[b, :, b, :] = 0
    assert off.abs().max() == 0


def test_sinusoidal_embedding_formula() -> None:
    t = torch.tensor([0.0, 0.3], dtype=torch.float64)
    emb = sinusoidal_embedding(t, 4, max_frequency=100.0)
    freqs = torch.tensor([1.0, 100.0], dtype=torch.float64)  # geometric from 1 to 100
    expected = torch.cat([torch.sin(t[:, None] * freqs), torch.cos(t[:, None] * freqs)], 1)
    torch.testing.assert_close(emb, expected)
    assert math.isclose(emb[1, 0].item(), math.sin(0.3))


def test_errors_teach() -> None:
    with pytest.raises(ValueError, match="valid: elu, gelu, silu, softplus, tanh"):
        MLP(2, activation="relu")
    with pytest.raises(ValueError, match="time_embedding"):
        MLP(2, time_embedding="fourier")
    with pytest.raises(ValueError, match="even"):
        MLP(2, time_embedding="sinusoidal", n_time_features=3)
    net = MLP(2, hidden=(4,))
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        net(torch.zeros(3, 2), torch.zeros(3, 1))
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        net(torch.zeros(3, 5), 0.0)
    with pytest.raises(ValueError, match="shape"):
        broadcast_time(torch.zeros(2), torch.zeros(3, 2))


def test_labels_enter_every_layer_and_null_is_the_default() -> None:
    torch.manual_seed(0)
    net = MLP(2, hidden=(8, 8), time_embedding="sinusoidal", n_classes=3, n_label_features=4)
    assert [layer.in_features for layer in net.layers] == [2 + 16 + 4, 8 + 16 + 4, 8 + 16 + 4]
    x, t = torch.randn(4, 2), torch.rand(4)
    null = torch.full((4,), 3)
    torch.testing.assert_close(net(x, t), net(x, t, null), rtol=0, atol=0)
    out = net(x, t, torch.tensor([0, 1, 2, 3]))
    for k in range(3):  # each label gives its own field, different from the null one
        assert not torch.allclose(net(x, t, torch.full((4,), k)), net(x, t, null))
    # row b sees only its own label: permuting the labels permutes nothing else
    again = net(x[[1, 0, 2, 3]], t[[1, 0, 2, 3]], torch.tensor([1, 0, 2, 3]))
    torch.testing.assert_close(again, out[[1, 0, 2, 3]], rtol=1e-6, atol=1e-6)


def test_label_errors() -> None:
    with pytest.raises(ValueError, match="unconditional"):
        MLP(2, hidden=(4,))(torch.zeros(3, 2), 0.0, torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="n_classes >= 0"):
        MLP(2, n_classes=-1)
    net = MLP(2, hidden=(4,), n_classes=2)
    with pytest.raises(ValueError, match=r"in \[0, 2\]"):
        net(torch.zeros(2, 2), 0.0, torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="long tensor"):
        net(torch.zeros(2, 2), 0.0, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"shape \(batch,\) = \(2,\)"):
        net(torch.zeros(2, 2), 0.0, torch.tensor([0, 1, 1]))
