"""Parametrisation conversions: round trips, the analytic oracle, endpoints."""

from __future__ import annotations

import itertools

import pytest
import torch

from probpath import parametrize as P
from probpath.analytic import GaussianMixture
from probpath.paths import (
    CondOTSchedule,
    DiscreteSchedule,
    SubVPSchedule,
    VESchedule,
    VPCosineSchedule,
    VPSchedule,
    linear_betas,
)

F64 = torch.float64
KINDS = ["eps", "x0", "score", "v", "velocity"]
SCHEDULES = [
    CondOTSchedule(),
    VPSchedule(),
    SubVPSchedule(),
    VPCosineSchedule(),
    VESchedule(0.01, 50.0),
    DiscreteSchedule(linear_betas(1000)),
]


def setup(schedule, n=8):
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn(n, 3, generator=gen, dtype=F64)
    eps = torch.randn(n, 3, generator=gen, dtype=F64)
    t = torch.linspace(0.05, 0.95, n, dtype=F64)
    s = schedule(t)
    return x0, eps, s.alpha[:, None] * x0 + s.sigma[:, None] * eps, s


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_every_pair_converts_and_round_trips(schedule):
    # linear algebra on well-conditioned 2x2 systems: float64 rounding times the condition
    # number (sigma_max / sigma_min = 5000 for VE) stays below 1e-9 relative
    x0, eps, x_t, s = setup(schedule)
    truth = {k: P.from_x0_eps(k, x0, eps, x_t, s) for k in KINDS}
    for a, b in itertools.product(KINDS, KINDS):
        y = P.convert(truth[a], a, b, x_t, s)
        torch.testing.assert_close(y, truth[b], rtol=1e-9, atol=1e-9, msg=f"{a} -> {b}")
        back = P.convert(y, b, a, x_t, s)
        torch.testing.assert_close(back, truth[a], rtol=1e-9, atol=1e-9, msg=f"{a}->{b}->{a}")
    for k in KINDS:
        got_x0, got_eps = P.to_x0_eps(k, truth[k], x_t, s)
        torch.testing.assert_close(got_x0, x0, rtol=1e-9, atol=1e-9)
        torch.testing.assert_close(got_eps, eps, rtol=1e-9, atol=1e-9)


def test_named_conversions_are_the_formulas():
    x0, eps, x_t, s = setup(VPSchedule())
    c = s.expand_like(x_t)
    a, sg, da, ds = c.alpha, c.sigma, c.d_alpha, c.d_sigma
    v = a * eps - sg * x0
    u = da * x0 + ds * eps
    torch.testing.assert_close(P.eps_to_x0(eps, x_t, s), (x_t - sg * eps) / a)
    torch.testing.assert_close(P.x0_to_eps(x0, x_t, s), (x_t - a * x0) / sg)
    torch.testing.assert_close(P.eps_to_score(eps, x_t, s), -eps / sg)
    torch.testing.assert_close(P.score_to_eps(-eps / sg, x_t, s), eps)
    torch.testing.assert_close(P.v_to_eps(v, x_t, s), eps)
    torch.testing.assert_close(P.v_to_x0(v, x_t, s), x0)
    torch.testing.assert_close(P.velocity_to_eps(u, x_t, s), eps)
    torch.testing.assert_close(P.eps_to_velocity(eps, x_t, s), u)


def test_seed_score_formula_on_ddpm_chain():
    # the seeds: s(x_i) = -eps(x_i) / sqrt(1 - abar_i), with t = i / T
    chain = DiscreteSchedule(linear_betas(1000))
    i = torch.tensor([1, 10, 500, 1000])
    eps = torch.randn(4, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    score = P.eps_to_score(eps, torch.zeros_like(eps), chain(i.to(F64) / 1000))
    expect = -eps / (1 - chain.alphas_cumprod[i - 1]).sqrt()[:, None]
    torch.testing.assert_close(score, expect)


@pytest.mark.parametrize("schedule", [VPSchedule(), CondOTSchedule(), VESchedule(0.05, 5.0)])
def test_conversions_agree_with_analytic_oracle(schedule):
    gm = GaussianMixture(
        torch.tensor([0.5, 0.5]), torch.tensor([[-1.0, 0.0], [1.0, 1.0]]), 0.2, schedule
    )
    x = torch.randn(6, 2, generator=torch.Generator().manual_seed(0), dtype=F64)
    t = torch.linspace(0.1, 0.9, 6, dtype=F64)
    s = schedule(t)
    x0, eps = gm.posterior_means(x, t)
    torch.testing.assert_close(P.convert(eps, "eps", "score", x, s), gm.score(x, t))
    torch.testing.assert_close(P.convert(x0, "x0", "score", x, s), gm.score(x, t))
    torch.testing.assert_close(P.convert(eps, "eps", "velocity", x, s), gm.velocity(x, t))
    torch.testing.assert_close(P.convert(gm.score(x, t), "score", "x0", x, s), x0)
    model = P.convert_model(gm.eps_mean, schedule, "eps", "velocity")
    torch.testing.assert_close(model(x, t), gm.velocity(x, t))


def test_endpoints_raise_or_stay_defined():
    x_t = torch.ones(2, 3, dtype=F64)
    at_noise = CondOTSchedule()(torch.ones(2, dtype=F64))  # alpha = 0
    with pytest.raises(ValueError, match="alpha"):
        P.convert(x_t, "eps", "x0", x_t, at_noise)
    # eps <-> score only rescales by sigma; v is defined everywhere (alpha^2 + sigma^2 = 1)
    torch.testing.assert_close(P.convert(x_t, "eps", "score", x_t, at_noise), -x_t)
    torch.testing.assert_close(P.convert(x_t, "v", "eps", x_t, at_noise), x_t)
    at_data = VPSchedule()(torch.zeros(2, dtype=F64))  # sigma = 0, sigma' = inf
    with pytest.raises(ValueError, match="sigma"):
        P.convert(x_t, "x0", "eps", x_t, at_data)
    with pytest.raises(ValueError, match="sigma"):
        P.convert(x_t, "eps", "score", x_t, at_data)
    torch.testing.assert_close(P.convert(-x_t, "v", "x0", x_t, at_data), x_t)
    with pytest.raises(ValueError, match="unknown prediction kind"):
        P.convert(x_t, "noise", "x0", x_t, at_data)


@pytest.mark.parametrize("schedule", SCHEDULES, ids=lambda s: type(s).__name__)
def test_a_sampler_batch_of_one_time_gives_the_per_row_result(schedule):
    # samplers pass t.expand(batch), a view with stride 0: the wrapper's result must equal
    # the same times given row by row (float64 rounding)
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(5, 3, generator=gen, dtype=F64)
    net = lambda x, t: torch.sin(x) * (1 + t[:, None])  # noqa: E731
    shared, rows = torch.tensor(0.37, dtype=F64).expand(5), torch.full((5,), 0.37, dtype=F64)
    for a, b in itertools.permutations(KINDS, 2):
        model = P.convert_model(net, schedule, a, b)
        torch.testing.assert_close(model(x, shared), model(x, rows), rtol=1e-12, atol=1e-12)


def test_endpoint_checks_hold_for_a_scalar_time():
    x_t = torch.ones(2, 3, dtype=F64)
    with pytest.raises(ValueError, match="alpha"):
        P.convert(x_t, "eps", "x0", x_t, CondOTSchedule()(torch.tensor(1.0, dtype=F64)))
    with pytest.raises(ValueError, match="sigma"):
        P.convert(x_t, "x0", "velocity", x_t, VPSchedule()(torch.tensor(0.0, dtype=F64)))
    with pytest.raises(ValueError, match="alpha sigma' - sigma alpha'"):
        P.convert(x_t, "velocity", "eps", x_t, VPSchedule()(torch.tensor(0.0, dtype=F64)))
