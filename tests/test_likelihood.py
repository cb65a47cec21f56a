"""The instantaneous change of variables against closed forms (float64 oracles)."""

from __future__ import annotations

import math

import pytest
import torch

from probpath.likelihood import (
    gaussian_kl,
    gaussian_log_prob,
    jacobian_frobenius,
    kinetic_energy,
    ode_log_prob,
    sample_with_log_prob,
    solve_augmented,
    standard_normal_log_prob,
)
from probpath.nets import MLP

TIGHT = dict(rtol=1e-10, atol=1e-10)
# dopri5's global error at tolerance 1e-10 on these O(1) problems is ~1e-9; 1e-7 leaves
# two orders of magnitude for the error's growth factor exp(L·T) with L ≤ 2, T = 1.
TOL = 1e-7
# for statistical tests: solver error ~1e-6 is far below the standard errors (~1e-2)
LOOSE = dict(rtol=1e-6, atol=1e-6)

A = torch.tensor([[-0.3, 0.8], [-0.5, 0.4]], dtype=torch.float64)


def linear_field(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return x @ A.T


def linear_closed_form(x: torch.Tensor) -> torch.Tensor:
    # z(1) = e^A x and d/dt log p = -tr A, so log p(x) = log N(e^A x) + tr A
    z1 = x @ torch.linalg.matrix_exp(A).T
    return standard_normal_log_prob(z1) + torch.trace(A)


def x64(n: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_standard_normal_log_prob_matches_torch() -> None:
    z = x64()
    ref = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)
    torch.testing.assert_close(standard_normal_log_prob(z), ref)


def test_gaussian_log_prob_and_kl_match_torch_distributions() -> None:
    # diagonal variances per coordinate and one variance per example; float64 rounding
    g = torch.Generator().manual_seed(1)
    x, m = torch.randn(2, 5, 3, 2, generator=g, dtype=torch.float64)
    var = torch.rand(5, 3, 2, generator=g, dtype=torch.float64) + 0.1
    ref = torch.distributions.Normal(m, var.sqrt()).log_prob(x).sum((1, 2))
    torch.testing.assert_close(gaussian_log_prob(x, m, var), ref)
    per_row = torch.distributions.Normal(m, var.sqrt()).log_prob(x).sum(-1)
    torch.testing.assert_close(gaussian_log_prob(x, m, var, dim=-1), per_row)
    vq, vp = var[:, 0, 0], var[:, 1, 1]
    kl = torch.distributions.kl_divergence(
        torch.distributions.Normal(x, vq.sqrt()[:, None, None]),
        torch.distributions.Normal(m, vp.sqrt()[:, None, None]),
    ).sum((1, 2))
    torch.testing.assert_close(gaussian_kl(x, vq, m, vp), kl)
    # equal variances and means: exactly 0 (delta - log1p(delta) at delta = 0)
    assert gaussian_kl(x, vq, x, vq).abs().max() == 0


def test_linear_field_exact_trace_closed_form() -> None:
    x = x64()
    lp = ode_log_prob(linear_field, x, trace="exact", **TIGHT)
    torch.testing.assert_close(lp, linear_closed_form(x), rtol=0, atol=TOL)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_linear_field_hutchinson_unbiased(probe: str) -> None:
    # With a fixed probe ε the integrand εᵀAε is constant in time, so each row's estimate is
    # exact minus tr A plus εᵀAε: unbiased with finite variance. The mean of n = 4000 rows
    # must lie within 5 standard errors (std / sqrt(n)) of the closed form.
    n = 4000
    x = x64(4).repeat(n // 4, 1)
    g = torch.Generator().manual_seed(1)
    lp = ode_log_prob(linear_field, x, trace="hutchinson", probe=probe, generator=g, **LOOSE)
    err = lp - linear_closed_form(x)
    se = err.std() / math.sqrt(n)
    assert err.std() > 0  # the estimator is genuinely random here
    assert err.mean().abs() < 5 * se


def test_hutchinson_n_probes_reduces_variance() -> None:
    x = x64(1).repeat(2000, 1)
    g = torch.Generator().manual_seed(2)
    one = ode_log_prob(linear_field, x, trace="hutchinson", generator=g, **LOOSE)
    four = ode_log_prob(linear_field, x, trace="hutchinson", n_probes=4, generator=g, **LOOSE)
    # variance ratio 4; with 2000 rows the sample variance has relative sd sqrt(2/1999) ≈ 3%,
    # so the observed ratio lies in [2.5, 6] with overwhelming probability
    assert 2.5 < (one.var() / four.var()).item() < 6.0


def test_scaling_round_trip_and_closed_form() -> None:
    # v = c x: z(1) = e^c x and log p(x) = log N(e^c x) + d c; sampling inverts it
    c, d = 0.7, 2
    z = x64(seed=3)
    x, lp_sample = sample_with_log_prob(lambda y, t: c * y, z, **TIGHT)
    torch.testing.assert_close(x, z * math.exp(-c), rtol=0, atol=TOL)
    expected = standard_normal_log_prob(z) + d * c
    torch.testing.assert_close(lp_sample, expected, rtol=0, atol=TOL)
    lp = ode_log_prob(lambda y, t: c * y, x, **TIGHT)
    torch.testing.assert_close(lp, expected, rtol=0, atol=TOL)


def test_sample_with_log_prob_agrees_with_ode_log_prob_nonlinear() -> None:
    torch.manual_seed(0)
    net = MLP(2, hidden=(16, 16)).double()
    z = x64(32, seed=4)
    kw = dict(rtol=1e-8, atol=1e-8)
    with torch.no_grad():
        x, lp_sample = sample_with_log_prob(net, z, **kw)
        lp = ode_log_prob(net, x, **kw)
    # two solves at tolerance 1e-8 each: agreement to 1e-6 (growth factor ≤ 100)
    torch.testing.assert_close(lp, lp_sample, rtol=0, atol=1e-6)


def test_works_under_no_grad_and_keeps_graph_otherwise() -> None:
    net = MLP(2, hidden=(8,)).double()
    x = x64(4)
    with torch.no_grad():
        lp = ode_log_prob(net, x, trace="hutchinson")
    assert lp.grad_fn is None and torch.isfinite(lp).all()
    lp2 = ode_log_prob(net, x)
    assert lp2.requires_grad


@pytest.mark.parametrize("trace", ["exact", "hutchinson"])
def test_adjoint_gradient_equals_backprop(trace: str) -> None:
    torch.manual_seed(0)
    net = MLP(2, hidden=(8, 8)).double()
    x = x64(8, seed=5)
    grads = []
    for adjoint in (False, True):
        g = torch.Generator().manual_seed(7)  # same probe both times
        lp = ode_log_prob(net, x, trace=trace, generator=g, adjoint=adjoint, rtol=1e-9, atol=1e-9)
        grads.append(torch.autograd.grad(lp.sum(), list(net.parameters())))
    # both are gradients of the same solution up to the solver tolerance 1e-9: 1e-6 relative
    for a, b in zip(*grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)


def test_extra_integrands_closed_form() -> None:
    # v = c z: ∫_0^1 ||c z(t)||² dt = c²|x|² (e^{2c} - 1) / (2c), and with a Rademacher
    # probe ||εᵀ(cI)||² = c² d exactly at every time.
    c, d = 0.5, 2
    x = x64(8, seed=6)
    sol = solve_augmented(
        lambda y, t: c * y,
        x,
        t_start=0.0,
        t_end=1.0,
        integrands=(kinetic_energy, jacobian_frobenius),
        **TIGHT,
    )
    kin = c**2 * x.pow(2).sum(1) * (math.exp(2 * c) - 1) / (2 * c)
    torch.testing.assert_close(sol.integrals[0], kin, rtol=0, atol=TOL)
    torch.testing.assert_close(sol.integrals[1], torch.full_like(kin, c**2 * d), rtol=0, atol=TOL)
    torch.testing.assert_close(sol.delta_log_p, torch.full_like(kin, -c * d), rtol=0, atol=TOL)


def test_bad_input_errors() -> None:
    x = x64(4)
    with pytest.raises(ValueError, match="trace"):
        ode_log_prob(linear_field, x, trace="bogus")
    bad = x.clone()
    bad[2, 0] = float("nan")
    with pytest.raises(ValueError, match="rows \\[2\\]"):
        ode_log_prob(linear_field, bad)
    with pytest.raises(ValueError, match="adjoint_params"):
        ode_log_prob(linear_field, x, adjoint=True)
