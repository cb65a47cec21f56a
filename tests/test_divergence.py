"""Trace estimators against the full Jacobian, and Hutchinson's estimator against its law."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from probpath.divergence import exact_divergence, hutchinson_divergence, sample_probe

F64 = torch.float64  # numerical oracles in float64; the default dtype is left alone


def _mlp(d: int, seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, d)).double()


class _Conv(nn.Module):
    """Batch-wise map on (batch, c, h, w) states."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.conv = nn.Conv2d(2, 2, 3, padding=1).double()

    def forward(self, x: Tensor) -> Tensor:
        return torch.tanh(self.conv(x)) * x


def _jacobian_trace(fn: nn.Module, x: Tensor) -> Tensor:
    """Oracle: trace of each row's full Jacobian from torch.autograd.functional.jacobian."""
    traces = []
    for row in x:
        jac = torch.autograd.functional.jacobian(lambda r: fn(r[None])[0], row)
        traces.append(jac.reshape(row.numel(), row.numel()).trace())
    return torch.stack(traces)


@pytest.mark.parametrize(
    ("fn", "shape"), [(_mlp(3), (5, 3)), (_mlp(1), (4, 1)), (_Conv(), (3, 2, 3, 3))]
)
def test_exact_matches_full_jacobian(fn: nn.Module, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=F64)
    out, div = exact_divergence(fn, x)
    assert div.shape == (shape[0],)
    # Same float64 arithmetic in a different order: agreement to round-off.
    torch.testing.assert_close(div, _jacobian_trace(fn, x), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(out, fn(x))
    assert not div.requires_grad


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
@pytest.mark.parametrize(("fn", "shape"), [(_mlp(4), (4,)), (_Conv(), (2, 3, 3))])
def test_hutchinson_is_unbiased(fn: nn.Module, shape: tuple[int, ...], kind: str) -> None:
    # fn is batch-wise, so n copies of one point with n probes are n i.i.d. estimates.
    n = 20_000
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(shape, generator=gen, dtype=F64).expand(n, *shape)
    _, exact = exact_divergence(fn, x[:1])
    _, est = hutchinson_divergence(fn, x, sample_probe(x, kind, generator=gen))  # type: ignore[arg-type]
    # The sample mean is within 5 standard errors of the truth (CLT; false alarm ~6e-7).
    se = est.std() / math.sqrt(n)
    assert abs(est.mean() - exact[0]) < 5 * se
    assert se > 0  # the bound is not vacuous


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
def test_probe_variance_for_linear_map(kind: str) -> None:
    d, n = 5, 40_000
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(d, d, generator=gen, dtype=F64)
    s = (a + a.T) / 2  # eps^T A eps = eps^T S eps
    off_diag = s - torch.diag(torch.diag(s))
    expected = 2 * (off_diag**2).sum() if kind == "rademacher" else 2 * (s**2).sum()
    x = torch.zeros(n, d, dtype=F64)
    _, est = hutchinson_divergence(lambda y: y @ a.T, x, sample_probe(x, kind, generator=gen))  # type: ignore[arg-type]
    # Exact trace for every probe on the diagonal part; mean matches tr A within 5 SE.
    assert abs(est.mean() - a.trace()) < 5 * est.std() / math.sqrt(n)
    # Sample variance s^2 has standard error sqrt((m4 - s^4) / n) (m4: 4th central moment).
    centred = est - est.mean()
    var = centred.pow(2).mean()
    se_var = ((centred.pow(4).mean() - var**2) / n).sqrt()
    assert abs(var - expected) < 5 * se_var


def test_rademacher_probe_values() -> None:
    x = torch.zeros(1000, 3, dtype=torch.float32)
    eps = sample_probe(x, generator=torch.Generator().manual_seed(0))
    assert eps.dtype == torch.float32 and set(eps.unique().tolist()) == {-1.0, 1.0}
    # Mean of 3000 +-1 values: standard error 1/sqrt(3000).
    assert abs(eps.mean()) < 5 / math.sqrt(3000)


@pytest.mark.parametrize("estimator", ["exact", "hutchinson"])
def test_create_graph_second_order_matches_finite_differences(estimator: str) -> None:
    fn = _mlp(3, seed=4)
    x0 = torch.randn(6, 3, dtype=F64)
    probe = sample_probe(x0, "gaussian", generator=torch.Generator().manual_seed(5))

    def loss(x: Tensor) -> Tensor:
        if estimator == "exact":
            _, div = exact_divergence(fn, x, create_graph=True)
        else:
            _, div = hutchinson_divergence(fn, x, probe, create_graph=True)
        return (div * torch.arange(1.0, 7.0, dtype=F64)).sum()

    x = x0.clone().requires_grad_(True)
    loss(x).backward()
    weight = fn[0].weight
    assert x.grad is not None and weight.grad is not None
    # Central differences in float64: error O(h^2) + O(eps/h) ~ 1e-10 at h = 1e-5.
    h = 1e-5
    for idx in [(0, 0), (2, 1), (5, 2)]:
        e = torch.zeros_like(x0)
        e[idx] = h
        fd = (loss(x0 + e) - loss(x0 - e)) / (2 * h)
        torch.testing.assert_close(x.grad[idx], fd.detach(), rtol=1e-6, atol=1e-8)
    for idx in [(0, 0), (7, 2)]:
        with torch.no_grad():
            weight[idx] += h
            plus = loss(x0).item()
            weight[idx] -= 2 * h
            minus = loss(x0).item()
            weight[idx] += h
        fd_w = torch.tensor((plus - minus) / (2 * h), dtype=F64)
        torch.testing.assert_close(weight.grad[idx], fd_w, rtol=1e-6, atol=1e-8)


def test_no_grad_context_and_graph_contract() -> None:
    fn = _mlp(2, seed=6)
    x = torch.randn(7, 2, dtype=F64)
    probe = sample_probe(x, generator=torch.Generator().manual_seed(7))
    ref_out, ref_div = exact_divergence(fn, x)
    _, ref_est = hutchinson_divergence(fn, x, probe)
    with torch.no_grad():
        out, div = exact_divergence(fn, x)
        _, est = hutchinson_divergence(fn, x, probe)
    assert not (out.requires_grad or div.requires_grad or est.requires_grad)
    torch.testing.assert_close(out, ref_out.detach())
    torch.testing.assert_close(div, ref_div)
    torch.testing.assert_close(est, ref_est)
    # Outside no_grad, fn(x) keeps its graph (parameters get gradients); div only with
    # create_graph=True.
    assert ref_out.requires_grad and not ref_div.requires_grad
    assert exact_divergence(fn, x, create_graph=True)[1].requires_grad


def test_errors_teach() -> None:
    x = torch.randn(3, 2, dtype=F64)
    with pytest.raises(ValueError, match="same shape"):
        exact_divergence(lambda y: y.sum(1), x)
    with pytest.raises(ValueError, match="does not depend on x"):
        exact_divergence(lambda y: y.detach(), x)
    with pytest.raises(ValueError, match="probe must have the shape"):
        hutchinson_divergence(lambda y: y, x, torch.ones(3, 3))
    with pytest.raises(ValueError, match="rademacher"):
        sample_probe(x, "uniform")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="floating-point"):
        exact_divergence(lambda y: y, torch.ones(3, 2, dtype=torch.long))
