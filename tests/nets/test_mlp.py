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
    net = MLP(3, hidden=(8, 8), activation=activation, time_embedding=time_embedding)
    x = torch.randn(5, 3)
    out = net(x, 0.25)
    assert out.shape == (5, 3)
    # a float, a 0-dim tensor and a (batch,) tensor of the same time give the same output
    torch.testing.assert_close(net(x, torch.tensor(0.25)), out, rtol=0, atol=0)
    torch.testing.assert_close(net(x, torch.full((5,), 0.25)), out, rtol=0, atol=0)
    assert not torch.allclose(net(x, 0.75), out)  # the field depends on time


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
