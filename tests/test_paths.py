"""Gaussian paths and schedules against closed forms, autograd and simulation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from probpath._schedules import ScheduleOutput, evaluate, interpolate
from probpath._time import shared_time
from probpath.paths import (
    CondOTSchedule,
    DiscreteSchedule,
    GaussianPath,
    SubVPSchedule,
    VESchedule,
    VPCosineSchedule,
    VPSchedule,
    cosine_betas,
    gaussian_posterior,
    linear_betas,
    ve_sigmas,
)

F64 = torch.float64
CONTINUOUS = [
    CondOTSchedule(),
    CondOTSchedule(sigma_min=0.01),
    VPSchedule(),
    VPSchedule(0.5, 5.0),
    SubVPSchedule(),
    VPCosineSchedule(),
    VESchedule(0.01, 50.0),
]


@pytest.mark.parametrize("schedule", CONTINUOUS, ids=repr)
def test_derivatives_match_autograd(schedule):
    # closed-form d_alpha, d_sigma equal the autograd derivative to float64 rounding
    t = torch.linspace(0.02, 0.98, 25, dtype=F64, requires_grad=True)
    s = schedule(t)
    (da,) = torch.autograd.grad((s.alpha + 0 * t).sum(), t, retain_graph=True)
    (ds,) = torch.autograd.grad(s.sigma.sum(), t)
    torch.testing.assert_close(s.d_alpha, da, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(s.d_sigma, ds, rtol=1e-10, atol=1e-12)


def test_closed_forms_and_endpoints():
    t = torch.linspace(0, 1, 11, dtype=F64)
    vp, sub, ve, cos = VPSchedule()(t), SubVPSchedule()(t), VESchedule(0.01, 50.0)(t), None
    big_b = 0.1 * t + 0.5 * t**2 * 19.9  # int_0^t beta
    torch.testing.assert_close(vp.alpha, torch.exp(-0.5 * big_b))
    torch.testing.assert_close(vp.alpha**2 + vp.sigma**2, torch.ones_like(t))
    torch.testing.assert_close(sub.sigma, 1 - vp.alpha**2)
    torch.testing.assert_close(ve.sigma, 0.01 * 5000.0**t)
    cos = VPCosineSchedule()(t)
    f = torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    torch.testing.assert_close(cos.alpha**2, f / f[0])
    assert cos.alpha[-1] == 0 and cos.sigma[-1] == 1
    ot = CondOTSchedule(0.01)(t)
    torch.testing.assert_close(ot.alpha, 1 - t)
    torch.testing.assert_close(ot.sigma, 0.01 + 0.99 * t)
    # SDE coefficients of Song et al. 2021 (eq. 11, 31, 34): g^2 = beta, d sigma^2/dt, ...
    inner = t[1:-1]
    beta = 0.1 + inner * 19.9
    vp_in, sub_in = VPSchedule()(inner), SubVPSchedule()(inner)
    torch.testing.assert_close(vp_in.drift_coef, -0.5 * beta)
    torch.testing.assert_close(vp_in.diffusion_sq, beta)
    big_b = 0.1 * inner + 0.5 * inner**2 * 19.9
    torch.testing.assert_close(sub_in.diffusion_sq, beta * (1 - torch.exp(-2 * big_b)))
    ve_in = VESchedule(0.01, 50.0)(inner)
    torch.testing.assert_close(ve_in.diffusion_sq, 2 * ve_in.sigma**2 * math.log(5000.0))
    torch.testing.assert_close(vp_in.log_snr, torch.log(vp_in.alpha**2 / vp_in.sigma**2))


EPS32 = torch.finfo(torch.float32).eps


def _max_rel_error(low: ScheduleOutput, high: ScheduleOutput) -> dict[str, float]:
    """Largest relative error of each field (where the reference is finite and nonzero)."""
    out = {}
    for name in ("alpha", "sigma", "d_alpha", "d_sigma"):
        x, y = getattr(low, name).double(), getattr(high, name)
        ok = torch.isfinite(y) & (y != 0)
        out[name] = float(((x - y).abs() / y.abs())[ok].max()) if ok.any() else 0.0
    return out


@pytest.mark.parametrize("schedule", CONTINUOUS, ids=repr)
def test_float32_agrees_with_float64_from_1e_5_to_1(schedule):
    # issue 13: each field in float32 within 16 ulps (relative) of float64 at the same t (t
    # rounded to float32 first), over t in [1e-5, 1] on a log and a linear grid. Budget: ~10
    # rounded operations of half an ulp each, times the conditioning of the formula (at
    # most t log(sigma_max / sigma_min) = 8.5 for VE's exponential); a formula that
    # cancels (sqrt(1 - alpha^2) near t = 0: 4 % at 1e-5 for the cosine path) fails it.
    t = torch.cat([torch.logspace(-5, 0, 2001), torch.linspace(0.0, 1.0, 1001)[1:]])
    errors = _max_rel_error(schedule(t), schedule(t.double()))
    assert max(errors.values()) < 16 * EPS32, errors


@pytest.mark.parametrize("betas", [linear_betas(1000), cosine_betas(1000)], ids=["lin", "cos"])
def test_discrete_chain_in_float32(betas):
    # the chain is computed in float64 and rounded: at the grid t = i / T (float32 times snap
    # onto i) and inside the segments, each field within 16 ulps of its float64 value
    chain, T = DiscreteSchedule(betas), len(betas)
    i = torch.arange(1, T + 1, dtype=F64)
    inside = ((i - 0.5) / T).float()
    for errors in (
        _max_rel_error(chain((i / T).float()), chain(i / T)),  # float32 i / T snaps onto i
        _max_rel_error(chain(inside), chain(inside.double())),
    ):
        assert max(errors.values()) < 16 * EPS32, errors


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_time_outside_unit_interval_is_rejected(bad):
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        VPSchedule()(torch.tensor([0.5, bad]))


def test_invalid_schedule_parameters():
    for make in (
        lambda: VPSchedule(-1.0, 20.0),
        lambda: VESchedule(1.0, 0.5),
        lambda: CondOTSchedule(1.0),
        lambda: VPCosineSchedule(0.0),
        lambda: DiscreteSchedule(torch.tensor([0.1, 1.0])),
        lambda: DiscreteSchedule(torch.zeros(0)),
        lambda: linear_betas(0),
    ):
        with pytest.raises(ValueError):
            make()


def test_chain_marginal_by_simulating_markov_chain():
    # x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) eps from x_0 = 2 for N chains; the
    # sample mean has s.e. sqrt(v/N), the sample variance s.e. v sqrt(2/(N-1)): 5 s.e.
    # (numpy for the simulation: an independent, single-threaded implementation)
    chain = DiscreteSchedule(linear_betas(50, 1e-3, 0.2))
    n, x0 = 40_000, 2.0
    rng = np.random.default_rng(0)
    x = np.full(n, x0)
    for i in range(1, chain.T + 1):
        beta = float(chain.betas[i - 1])
        x = math.sqrt(1 - beta) * x + math.sqrt(beta) * rng.standard_normal(n)
        if i in (1, 10, 50):
            coef, var = (float(c) for c in chain.marginal(i))
            assert abs(x.mean() - coef * x0) < 5 * math.sqrt(var / n)
            assert abs(x.var(ddof=1) - var) < 5 * var * math.sqrt(2 / (n - 1))


@pytest.mark.parametrize("i", [1, 2, 7, 20])
def test_chain_posterior_against_bayes_rule(i):
    # q(x_{i-1} | x_i, x_0) ∝ q(x_i | x_{i-1}) q(x_{i-1} | x_0), integrated on a fine grid
    # (Gaussian integrand, trapezoid rule: error far below 1e-8), and by conditioning the
    # joint Gaussian of (x_{i-1}, x_i) given x_0.
    chain = DiscreteSchedule(cosine_betas(20))
    x0, xi = torch.tensor(0.7, dtype=F64), torch.tensor(-0.4, dtype=F64)
    mean, var = chain.posterior(i, xi[None], x0[None])
    beta, abar_prev = chain.betas[i - 1], chain.alphas_cumprod_prev[i - 1]
    m1, v1 = abar_prev.sqrt() * x0, 1 - abar_prev
    cov12, v2 = (1 - beta).sqrt() * v1, (1 - beta) * v1 + beta
    torch.testing.assert_close(mean[0], m1 + cov12 / v2 * (xi - (1 - beta).sqrt() * m1))
    torch.testing.assert_close(var, v1 - cov12**2 / v2)
    if i > 1:  # for i = 1 the posterior is a point mass at x_0 (beta~_1 = 0)
        sd = var.sqrt()
        grid = torch.linspace(float(mean - 12 * sd), float(mean + 12 * sd), 20001, dtype=F64)
        log_q = -0.5 * (grid - m1) ** 2 / v1 - 0.5 * (xi - (1 - beta).sqrt() * grid) ** 2 / beta
        w = torch.exp(log_q - log_q.max())
        w = w / torch.trapezoid(w, grid)
        num_mean = torch.trapezoid(w * grid, grid)
        torch.testing.assert_close(mean[0], num_mean, rtol=1e-8, atol=1e-10)
        torch.testing.assert_close(var, torch.trapezoid(w * (grid - num_mean) ** 2, grid))
    else:
        assert var == 0 and torch.allclose(mean, x0[None])


@pytest.mark.parametrize("schedule", [VESchedule(0.01, 50.0), SubVPSchedule()], ids=repr)
def test_gaussian_posterior_is_the_conditional_of_the_joint(schedule):
    # (x_s, x_t) given x_0 is jointly Gaussian with Cov(x_s, x_t) = a sigma_s^2, a =
    # alpha_t / alpha_s (x_t = a x_s + noise independent of x_s); condition on x_t
    t, s_ = torch.tensor([0.7, 0.3], dtype=F64), torch.tensor([0.2, 0.29], dtype=F64)
    at, as_ = schedule(t), schedule(s_)
    q = gaussian_posterior(at.alpha, at.sigma, as_.alpha, as_.sigma)
    a = at.alpha / as_.alpha
    cov, var_t = a * as_.sigma**2, at.sigma**2
    x0, xt = torch.tensor([0.7, -1.2], dtype=F64), torch.tensor([0.3, 2.0], dtype=F64)
    mean = as_.alpha * x0 + cov / var_t * (xt - at.alpha * x0)
    torch.testing.assert_close(q.coef_x0 * x0 + q.coef_xt * xt, mean)
    torch.testing.assert_close(q.var, as_.sigma**2 - cov**2 / var_t)
    torch.testing.assert_close(q.transition_var, var_t - a**2 * as_.sigma**2)


def test_discrete_chain_as_continuous_schedule():
    chain = DiscreteSchedule(linear_betas(100))
    i = torch.arange(0, 101)
    s = chain(i.to(F64) / 100)
    abar = torch.cat([torch.ones(1, dtype=F64), chain.alphas_cumprod])
    torch.testing.assert_close(s.alpha, abar.sqrt())
    torch.testing.assert_close(s.sigma, (1 - abar).sqrt())
    # inside a segment log(abar) is linear, so central differences are exact up to rounding
    t, h = torch.tensor([0.123, 0.555, 0.901], dtype=F64), 1e-6
    fd = (chain(t + h).alpha - chain(t - h).alpha) / (2 * h)
    torch.testing.assert_close(chain(t).d_alpha, fd, rtol=1e-6, atol=1e-9)
    # float32 times i/T land on grid point i (not a hair into segment i + 1)
    t32 = i[1:].float() / 100
    torch.testing.assert_close(chain(t32).d_alpha, s.d_alpha[1:].float())


def test_discrete_chain_converges_to_vp_sde():
    # beta_i = beta(t_i) / T; log abar differs from -int beta by O(1/T) (Riemann sum and
    # log(1 - beta) = -beta + O(beta^2)), so the error in alpha shrinks 4x when T grows 4x.
    t = torch.linspace(0, 1, 201, dtype=F64)
    vp = VPSchedule(0.1, 20.0)(t).alpha
    errs = []
    for T in (250, 1000, 4000):
        chain = DiscreteSchedule(linear_betas(T, 0.1 / T, 20.0 / T))
        errs.append(float((chain(t).alpha - vp).abs().max()))
    assert errs[1] < 5e-3
    assert 3.0 < errs[0] / errs[1] < 5.0 and 3.0 < errs[1] / errs[2] < 5.0


def test_beta_helpers():
    betas = linear_betas(1000)
    assert betas[0] == 1e-4 and abs(betas[-1] - 0.02) < 1e-15 and betas.dtype == F64
    T = 50
    chain = DiscreteSchedule(cosine_betas(T))
    t = torch.arange(1, T, dtype=F64) / T  # the last beta is clipped at 0.999
    f = (
        torch.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
        / math.cos(0.008 / 1.008 * math.pi / 2) ** 2
    )
    torch.testing.assert_close(chain.alphas_cumprod[:-1], f)
    assert chain.betas[-1] == 0.999
    sig = ve_sigmas(0.01, 1.0, 10)
    torch.testing.assert_close(sig[1:] / sig[:-1], torch.full((9,), 0.01 ** (1 / 9), dtype=F64))
    levels = VESchedule(0.01, 1.0)((9 - torch.arange(10, dtype=F64)) / 9).sigma
    torch.testing.assert_close(sig, levels)


@pytest.mark.parametrize("schedule", [*CONTINUOUS, DiscreteSchedule(linear_betas(1000))], ids=repr)
def test_path_sample_and_conditional_velocity(schedule):
    path = GaussianPath(schedule)
    gen = torch.Generator().manual_seed(1)
    x0 = torch.randn(5, 3, generator=gen, dtype=F64)
    t = torch.tensor([0.1234, 0.3456, 0.5678, 0.7891, 0.9123], dtype=F64)  # off DDPM's grid
    x_t, eps = path.sample(x0, t, generator=gen)
    s = schedule(t)
    torch.testing.assert_close(x_t, s.alpha[:, None] * x0 + s.sigma[:, None] * eps)
    # u = d x_t / dt along (x0, eps): central differences, error O(h^2) ~ 1e-10 relative
    h = 1e-5
    fd = (path.sample(x0, t + h, noise=eps)[0] - path.sample(x0, t - h, noise=eps)[0]) / (2 * h)
    torch.testing.assert_close(path.conditional_velocity(x0, eps, t), fd, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(path.log_snr(t), s.log_snr)


def test_path_input_errors():
    path = GaussianPath(VPSchedule())
    x0 = torch.zeros(4, 2)
    with pytest.raises(ValueError, match="batch"):
        path.sample(x0, torch.rand(3))
    with pytest.raises(ValueError, match="noise"):
        path.sample(x0, 0.5, noise=torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        path.sample(x0, 1.2)

    def negative(t):
        return ScheduleOutput(1 - t, t - 0.5, -torch.ones_like(t), torch.ones_like(t))

    with pytest.raises(ValueError, match="negative"):
        GaussianPath(negative)
    with pytest.raises(TypeError, match="ScheduleOutput"):
        GaussianPath(lambda t: (1 - t, t))
    # a float32 batch gets float32 coefficients; a scalar t broadcasts
    x_t, _ = path.sample(x0, 0.5, generator=torch.Generator().manual_seed(0))
    assert x_t.dtype == torch.float32 and x_t.shape == (4, 2)


def test_time_check_accepts_numbers_scalars_and_empty_batches():
    # one reduction for a batch, a host read for a scalar; the same verdicts as before
    assert VPSchedule()(0.5).alpha.dim() == 0
    assert VPSchedule()(torch.tensor(1.0)).sigma.dim() == 0
    assert VPSchedule()(torch.zeros(0)).alpha.shape == (0,)
    for bad in (1.5, torch.tensor(-0.1), torch.tensor([0.2, float("nan")])):
        with pytest.raises(ValueError, match=r"\[0, 1\]"):
            CondOTSchedule()(bad)


@pytest.mark.parametrize("schedule", [*CONTINUOUS, DiscreteSchedule(linear_betas(100))], ids=repr)
def test_interpolate_and_evaluate_are_the_schedule_formulas(schedule):
    # the fast paths (CondOT's lerp, the unchecked evaluation) against alpha x0 + sigma x1
    # and alpha' x0 + sigma' x1: float64, a few roundings apart
    gen = torch.Generator().manual_seed(2)
    x0, x1 = (
        torch.randn(6, 3, generator=gen, dtype=F64),
        torch.randn(6, 3, generator=gen, dtype=F64),
    )
    t = torch.tensor([0.0, 0.013, 0.25, 0.5, 0.987, 1.0], dtype=F64)
    s = schedule(t)
    x_t, u = interpolate(schedule, x0, x1, t)
    torch.testing.assert_close(x_t, s.alpha[:, None] * x0 + s.sigma[:, None] * x1)
    finite = torch.isfinite(s.d_sigma)  # VP paths: sigma' = inf at t = 0
    expect_u = s.d_alpha[:, None] * x0 + s.d_sigma[:, None] * x1
    torch.testing.assert_close(u[finite], expect_u[finite])
    fields = ("alpha", "sigma", "d_alpha", "d_sigma")
    for name in fields:
        torch.testing.assert_close(getattr(evaluate(schedule, t), name), getattr(s, name))
    # a 0-dim time broadcasts against the batch; a plain callable takes the generic path
    x_half, u_half = interpolate(schedule, x0, x1, torch.tensor(0.5, dtype=F64))
    torch.testing.assert_close(x_half[3], x_t[3])
    torch.testing.assert_close(u_half[3], u[3])
    plain = interpolate(lambda tt: schedule(tt), x0, x1, t)
    torch.testing.assert_close(plain[0], x_t)


def test_condot_interpolant_is_exact_at_the_ends():
    # sigma_min = 0: x_0 is exactly the data and x_1 exactly the noise (no rounding)
    x0, x1 = torch.randn(2, 3), torch.randn(2, 3)
    x_t, u = interpolate(CondOTSchedule(), x0, x1, torch.tensor([0.0, 1.0]))
    assert torch.equal(x_t[0], x0[0]) and torch.equal(x_t[1], x1[1])
    assert torch.equal(u, x1 - x0)


def test_shared_time_collapses_only_expanded_batches():
    t = torch.tensor(0.3)
    assert shared_time(t.expand(4)).dim() == 0
    assert shared_time(torch.full((4,), 0.3)).shape == (4,)
    assert shared_time(t).dim() == 0
    assert shared_time(torch.zeros(0)).shape == (0,)
