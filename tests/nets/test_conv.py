"""FFJORD-style convolutional nets: the concat layer's formula, the CNF field's divergence
(exact and Hutchinson), the energy's score and second derivatives (row independence:
test_unet.py)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from probpath.divergence import exact_divergence, hutchinson_divergence, sample_probe
from probpath.nets import ConcatConv2d, ConvEnergy, ConvField


@pytest.mark.parametrize("stride", [1, 2])
def test_concat_conv_is_a_convolution_of_the_concatenated_input(stride: int) -> None:
    torch.manual_seed(0)
    layer = ConcatConv2d(2, 3, 3, stride=stride, padding=1).double()
    x, t = torch.randn(4, 2, 7, 6, dtype=torch.float64), torch.rand(4, dtype=torch.float64)
    tt = t[:, None, None, None].expand(4, 1, 7, 6)
    ref = F.conv2d(torch.cat([tt, x], 1), layer.weight, layer.bias, stride, 1)
    torch.testing.assert_close(layer(x, t), ref, rtol=0, atol=1e-13)
    torch.testing.assert_close(
        layer(x, 0.3), layer(x, torch.full((4,), 0.3, dtype=torch.float64)), rtol=0, atol=0
    )


def test_field_divergence_exact_and_hutchinson() -> None:
    # on a 1 x 4 x 4 image the Jacobian J (16 x 16) is cheap: the exact divergence is its
    # trace, and the mean of n Rademacher estimates e^T J e lies within 4 standard errors,
    # Var(e^T J e) = 2 (||S||_F^2 - sum_i S_ii^2), S = (J + J^T) / 2
    torch.manual_seed(1)
    field = ConvField(1, hidden=(8, 8)).double()
    x0 = torch.randn(1, 1, 4, 4, dtype=torch.float64)
    t = torch.tensor(0.4, dtype=torch.float64)
    jac = torch.autograd.functional.jacobian(lambda z: field(z, t), x0).reshape(16, 16)
    _, div = exact_divergence(lambda z: field(z, t), x0)
    torch.testing.assert_close(div, jac.trace().reshape(1), rtol=1e-12, atol=1e-12)

    n = 4000
    x = x0.expand(n, 1, 4, 4)
    probe = sample_probe(x, generator=torch.Generator().manual_seed(0))
    _, est = hutchinson_divergence(lambda z: field(z, t), x, probe)
    sym = (jac + jac.T) / 2
    sd = math.sqrt(2 * (sym.square().sum() - sym.diagonal().square().sum()) / n)
    assert abs(est.mean() - jac.trace()) < 4 * sd


def test_energy_score_by_autograd_matches_finite_differences() -> None:
    # score = -dE/dx; central differences have error O(h^2) E''' ~ 1e-10 at h = 1e-5
    torch.manual_seed(2)
    energy = ConvEnergy(1, hidden=(4, 8)).double()
    x = torch.randn(2, 1, 6, 6, dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(energy(x, 0.0).sum(), x)
    h, fd = 1e-5, torch.empty_like(grad)
    with torch.no_grad():
        for i in range(36):
            e = torch.zeros(36, dtype=torch.float64)
            e[i] = h
            e = e.reshape(1, 1, 6, 6)
            fd.view(2, 36)[:, i] = ((energy(x + e, 0.0) - energy(x - e, 0.0)) / (2 * h)).view(2)
    torch.testing.assert_close(grad, fd, rtol=1e-6, atol=1e-8)


def test_energy_is_twice_differentiable() -> None:
    # implicit score matching needs the Hessian's trace: the exact divergence of the score
    # by one more backward, and gradients of that with respect to the parameters
    torch.manual_seed(3)
    energy = ConvEnergy(1, hidden=(4, 8), activation="softplus").double()
    x = torch.randn(3, 1, 5, 5, dtype=torch.float64)

    def score(z: torch.Tensor) -> torch.Tensor:
        (g,) = torch.autograd.grad(energy(z, 0.0).sum(), z, create_graph=True)
        return -g

    _, lap = exact_divergence(score, x, create_graph=True)
    assert lap.shape == (3,)
    lap.sum().backward()
    grads = {n: p.grad for n, p in energy.named_parameters()}
    assert grads.pop("head.bias") is None  # a constant shift of E leaves the Laplacian
    assert all(g is not None and g.any() for g in grads.values())


def test_shapes_time_and_errors() -> None:
    torch.manual_seed(5)
    field, energy = ConvField(3, hidden=(4,)), ConvEnergy(3, hidden=(4, 8, 8))
    x = torch.randn(2, 3, 32, 32)
    assert field(x, 0.5).shape == x.shape and energy(x, 0.0).shape == (2, 1)
    assert (field(x, 0.1) - field(x, 0.9)).abs().max() > 0
    with pytest.raises(ValueError, match="valid: elu, gelu"):
        ConvField(1, activation="relu")
    with pytest.raises(ValueError, match="non-empty"):
        ConvEnergy(1, hidden=())
    with pytest.raises(ValueError, match=r"\(batch, 3, H, W\)"):
        field(torch.zeros(2, 1, 8, 8), 0.5)
