"""Analytic oracles against autograd, quadrature, Monte Carlo and the continuity equation."""

from __future__ import annotations

import math

import pytest
import torch

from probpath.analytic import Gaussian, GaussianMixture
from probpath.paths import CondOTSchedule, SubVPSchedule, VESchedule, VPSchedule

F64 = torch.float64
SCHEDULES = [VPSchedule(), CondOTSchedule(0.01), SubVPSchedule(), VESchedule(0.05, 5.0)]


def mixture_2d(schedule=None) -> GaussianMixture:
    covs = torch.tensor(
        [[[0.5, 0.2], [0.2, 0.3]], [[0.1, 0.0], [0.0, 0.4]], [[0.2, -0.1], [-0.1, 0.2]]]
    )
    means = torch.tensor([[-1.0, 0.5], [1.5, -0.5], [0.0, 2.0]])
    return GaussianMixture(torch.tensor([0.5, 0.3, 0.2]), means, covs, schedule)


def points(n: int = 16, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = 1.5 * torch.randn(n, 2, generator=gen, dtype=F64)
    t = torch.linspace(0.0, 0.95, n, dtype=F64)  # includes t = 0 (sigma = 0 for VP)
    return x, t


@pytest.mark.parametrize("schedule", SCHEDULES, ids=repr)
def test_score_is_gradient_of_log_density_and_tweedie_holds(schedule):
    # autograd of log p_t and Tweedie's formula are exact identities: float64 rounding
    gm = mixture_2d(schedule)
    x, t = points()
    x.requires_grad_(True)
    (grad,) = torch.autograd.grad(gm.log_prob(x, t).sum(), x)
    score = gm.score(x, t)
    torch.testing.assert_close(score, grad, rtol=1e-9, atol=1e-10)
    s = schedule(t)
    x0, eps = gm.posterior_means(x, t)
    a, sg = s.alpha[:, None], s.sigma[:, None]
    torch.testing.assert_close(x0, (x + sg**2 * score) / a, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(eps, -sg * score, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(a * x0 + sg * eps, x.detach(), rtol=1e-9, atol=1e-10)


def test_gaussian_log_density_matches_torch_distributions():
    mean, cov = torch.tensor([1.0, -2.0], dtype=F64), torch.tensor([[2.0, 0.5], [0.5, 1.0]])
    g = Gaussian(mean, cov, VPSchedule())
    x, _ = points()
    for t in (0.0, 0.3, 1.0):
        s = VPSchedule()(torch.tensor(t, dtype=F64))
        law = torch.distributions.MultivariateNormal(
            s.alpha * mean, s.alpha**2 * cov.to(F64) + s.sigma**2 * torch.eye(2, dtype=F64)
        )
        torch.testing.assert_close(g.log_prob(x, t), law.log_prob(x))


def test_posterior_mean_against_quadrature_1d():
    # E[x_0 | x_t] = int x_0 p_0(x_0) N(x_t; a x_0, s^2) dx_0 / p_t(x_t), by the trapezoid
    # rule on a fine grid (smooth, fast-decaying integrand: error far below 1e-8)
    gm = GaussianMixture(
        torch.tensor([0.3, 0.7]), torch.tensor([[-1.0], [2.0]]), torch.tensor([0.2, 0.5]), None
    )
    s = CondOTSchedule()(torch.tensor(0.6, dtype=F64))
    grid = torch.linspace(-10, 12, 8001, dtype=F64)
    p0 = gm.log_prob(grid[:, None], CondOTSchedule()(torch.tensor(0.0, dtype=F64))).exp()
    for xt in (-1.5, 0.3, 2.0):
        lik = torch.exp(-0.5 * (xt - s.alpha * grid) ** 2 / s.sigma**2)
        w = p0 * lik
        expect = torch.trapezoid(w * grid, grid) / torch.trapezoid(w, grid)
        got = gm.x0_mean(torch.tensor([[xt]], dtype=F64), s)
        torch.testing.assert_close(got[0, 0], expect, rtol=1e-8, atol=1e-10)
        dens = torch.trapezoid(w, grid) / math.sqrt(2 * math.pi * s.sigma**2)
        torch.testing.assert_close(gm.log_prob(torch.tensor([[xt]], dtype=F64), s).exp()[0], dens)


def test_mixture_density_and_moments_against_monte_carlo():
    # p_t(x) = E_{x_0 ~ p_0} N(x; a x_0, s^2 I): the Monte Carlo mean of N samples is within
    # 5 standard errors (sample std / sqrt(N)); the same bound for the sampled moments.
    gm = mixture_2d(VPSchedule())
    n, t = 40_000, 0.4
    gen = torch.Generator().manual_seed(0)
    x0 = gm.sample(n, generator=gen)
    s = VPSchedule()(torch.tensor(t, dtype=F64))
    x = torch.tensor([[0.0, 0.0], [-1.0, 0.5], [1.0, 1.0]], dtype=F64)
    sq = ((x[:, None, :] - s.alpha * x0[None]) ** 2).sum(-1)
    kern = torch.exp(-0.5 * sq / s.sigma**2) / (2 * math.pi * s.sigma**2)
    mc, se = kern.mean(1), kern.std(1) / math.sqrt(n)
    assert ((mc - gm.log_prob(x, t).exp()).abs() < 5 * se).all()
    xt, _ = gm.sample_xt(n, t, generator=gen)
    mean, cov = gm.moments(t)
    assert ((xt.mean(0) - mean).abs() < 5 * cov.diagonal().sqrt() / math.sqrt(n)).all()
    # Var of a sample variance is about (m4 - v^2)/N; m4 is bounded by the sampled one
    m4 = ((xt - xt.mean(0)) ** 4).mean(0)
    assert ((xt.var(0) - cov.diagonal()).abs() < 5 * (m4 / n).sqrt()).all()


@pytest.mark.parametrize("schedule", [VPSchedule(), CondOTSchedule()], ids=repr)
def test_velocity_solves_continuity_equation_1d(schedule):
    # d_t p + d_x (p u) = 0, both derivatives by central differences: truncation error
    # h^2/6 f''' ~ 1e-7 relative to |d_t p| here (rounding ~1e-12); a 1% error in u gives 1e-2
    gm = GaussianMixture(
        torch.tensor([0.4, 0.6]), torch.tensor([[-1.0], [1.5]]), torch.tensor([0.3, 0.1]), schedule
    )
    x = torch.linspace(-3, 3, 13, dtype=F64)[:, None]
    h = 1e-4

    def p(x_, t_):
        return gm.log_prob(x_, t_).exp()

    def flux(x_, t_):
        return p(x_, t_) * gm.velocity(x_, t_)[:, 0]

    for t in (0.2, 0.5, 0.8):
        dp_dt = (p(x, t + h) - p(x, t - h)) / (2 * h)
        dflux_dx = (flux(x + h, t) - flux(x - h, t)) / (2 * h)
        scale = float(dp_dt.abs().max())
        torch.testing.assert_close(
            dp_dt + dflux_dx, torch.zeros_like(dp_dt), rtol=0, atol=1e-5 * scale
        )


def test_class_posterior_is_bayes_rule():
    gm = mixture_2d(VESchedule(0.05, 5.0))
    x, t = points()
    s = VESchedule(0.05, 5.0)(t)
    logs = []
    for k in range(3):
        cov = s.alpha[:, None, None] ** 2 * gm.covs[k] + s.sigma[:, None, None] ** 2 * torch.eye(
            2, dtype=F64
        )
        law = torch.distributions.MultivariateNormal(s.alpha[:, None] * gm.means[k], cov)
        logs.append(law.log_prob(x) + gm.weights[k].log())
    expect = torch.softmax(torch.stack(logs, -1), -1)
    torch.testing.assert_close(gm.class_posterior(x, t), expect)


def test_input_checks_and_dtypes():
    gm = mixture_2d()
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="schedule"):
        gm.score(x, 0.5)
    s = VPSchedule()(torch.full((3,), 0.5))
    out = gm.score(x, s)
    assert out.dtype == torch.float32 and out.shape == (3, 2)
    with pytest.raises(ValueError, match="batch"):
        gm.score(torch.zeros(3, 5), s)
    with pytest.raises(ValueError, match="positive definite"):
        Gaussian(torch.zeros(2), torch.tensor([[1.0, 2.0], [2.0, 1.0]]))
    with pytest.raises(ValueError, match="symmetric"):
        Gaussian(torch.zeros(2), torch.tensor([[1.0, 0.5], [0.0, 1.0]]))
    with pytest.raises(ValueError, match="weights"):
        GaussianMixture(torch.tensor([1.0, -1.0]), torch.zeros(2, 1), 1.0)
    iso = GaussianMixture(torch.ones(2), torch.zeros(2, 3), torch.tensor([0.5, 2.0]))
    torch.testing.assert_close(iso.covs[1], 2.0 * torch.eye(3, dtype=F64))
