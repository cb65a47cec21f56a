"""Forward SDEs of Gaussian paths, the reverse SDE and the PF-ODE against closed forms.

Statistical checks use n samples and a 5-standard-error bound (false alarm < 1e-6 per
check) plus the stated discretisation bias of the scheme.
"""

from __future__ import annotations

import math

import pytest
import torch
import torchsde

from probpath.analytic import Gaussian
from probpath.models.diffusion import DiffusionModel
from probpath.paths import SubVPSchedule, VESchedule, VPSchedule, make_schedule
from probpath.sdes import SDE, subvp_sde, ve_sde, vp_sde
from probpath.solvers import odeint, sdeint

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_diffusion_coefficients_closed_forms() -> None:
    """g^2 = beta (VP), d sigma^2/dt (VE), beta (1 - e^{-2B}) (sub-VP); Song et al. App. B."""
    t = torch.linspace(0.05, 1, 7, dtype=torch.float64)
    vp = VPSchedule()
    B = vp.beta_min * t + 0.5 * t**2 * (vp.beta_max - vp.beta_min)
    assert torch.allclose(vp_sde().coefficients(t)[1], vp.beta(t))
    assert torch.allclose(subvp_sde().coefficients(t)[1], vp.beta(t) * (1 - torch.exp(-2 * B)))
    ve = VESchedule(0.01, 10.0)
    sig2 = ve(t).sigma ** 2
    assert torch.allclose(ve_sde(0.01, 10.0).coefficients(t)[1], 2 * math.log(1000.0) * sig2)
    x = torch.ones(7, 2, dtype=torch.float64)
    assert torch.allclose(vp_sde().f(t, x), -0.5 * vp.beta(t)[:, None] * x)
    assert torch.allclose(vp_sde().g(t, x), vp.beta(t).sqrt()[:, None].expand(7, 2))


@pytest.mark.parametrize(
    ("sde", "rate"),
    [(vp_sde(), 20.0), (subvp_sde(), 20.0), (ve_sde(0.01, 10.0), 2 * math.log(1000.0))],
    ids=["vp", "subvp", "ve"],
)
def test_forward_sde_has_the_path_marginals(sde: SDE, rate: float) -> None:
    """Kolmogorov-Fokker-Planck at work: Euler-Maruyama paths of dx = f x dt + g dw started
    at the closed-form marginal at t0 keep the closed-form marginals N(a m, a^2 S + s^2 I)."""
    gauss = Gaussian(MEAN, COV, sde.schedule)
    n, dt, t0 = 8_000, 1e-3, 0.05
    x = gauss.sample_xt(n, t0, generator=gen(0))[0]
    times = torch.tensor([t0, 0.3, 0.6, 1.0], dtype=torch.float64)
    ys = sdeint(sde, x, times, dt=dt, generator=gen(1))
    for k in range(1, len(times)):
        mean, cov = gauss.moments(times[k])
        emp_mean, emp_cov = ys[k].mean(0), torch.cov(ys[k].T)
        var = cov.diagonal()
        # 5 standard errors of the mean and of the covariance entries, plus Euler-Maruyama's
        # weak error: relative O(rate dt) per unit time (for the OU process the stationary
        # variance of EM is 1 / (1 - beta dt / 4); for VE the left Riemann sum of g^2 is off
        # by dt log(sigma_max / sigma_min)); rate dt bounds both.
        tol_mean = 5 * (var / n).sqrt() + rate * dt * mean.abs()
        se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
        tol_cov = 5 * se_cov + rate * dt * cov.abs().max()
        assert ((emp_mean - mean).abs() <= tol_mean).all(), (times[k], emp_mean, mean)
        assert ((emp_cov - cov).abs() <= tol_cov).all(), (times[k], emp_cov, cov)


@pytest.mark.parametrize("schedule", [VPSchedule(), VESchedule(0.01, 10.0)], ids=["vp", "ve"])
def test_reverse_sde_returns_the_data_moments(schedule: VPSchedule | VESchedule) -> None:
    """The reverse SDE with the analytic score, from the exact marginal at t = 1 back to t_min."""
    gauss = Gaussian(MEAN, COV, schedule)
    n, dt, t_min = 5_000, 1e-3, 1e-3
    rev = SDE(schedule).reverse(gauss.score)
    x1 = gauss.sample_xt(n, 1.0, generator=gen(2))[0]
    x = sdeint(rev, x1, -torch.tensor([1.0, t_min], dtype=torch.float64), dt=dt, generator=gen(3))
    mean, cov = gauss.moments(t_min)
    var = cov.diagonal()
    # 5 standard errors + the weak order-1 bias of Euler-Maruyama, <= 20 dt relative (beta <= 20
    # for VP; 2 log(sigma_max / sigma_min) = 13.8 for VE)
    assert ((x[-1].mean(0) - mean).abs() <= 5 * (var / n).sqrt() + 20 * dt).all()
    se_cov = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    assert ((torch.cov(x[-1].T) - cov).abs() <= 5 * se_cov + 20 * dt * cov.abs().max()).all()


@pytest.mark.parametrize(
    "schedule", [VPSchedule(), SubVPSchedule(), VESchedule(0.01, 10.0)], ids=["vp", "subvp", "ve"]
)
def test_probability_flow_ode_transports_the_marginals(schedule: VPSchedule) -> None:
    """The PF-ODE of a Gaussian is linear, so it maps N(mu_1, S_1) onto N(mu_t, S_t) exactly:
    push a sample forward from t = 1 and the empirical moments must match the ones at t_min
    transformed by the same affine map. We check it through whitening: the PF-ODE map of a
    Gaussian sends whitened inputs to whitened outputs up to an orthogonal matrix, so
    |S_t^{-1/2} (x_t - mu_t)| = |S_1^{-1/2} (x_1 - mu_1)| for every single point."""
    gauss = Gaussian(MEAN, COV, schedule)
    t_min = 1e-3
    x1 = gauss.sample_xt(64, 1.0, generator=gen(4))[0]
    f = SDE(schedule).probability_flow(gauss.score)
    ts = torch.tensor([1.0, t_min], dtype=torch.float64)
    x = odeint(f, x1, ts, rtol=1e-10, atol=1e-10)[-1]

    def whitened_norm(y: torch.Tensor, t: float) -> torch.Tensor:
        mean, cov = gauss.moments(t)
        return torch.linalg.solve_triangular(
            torch.linalg.cholesky(cov), (y - mean).T, upper=False
        ).norm(dim=0)

    # deterministic: solver tolerance 1e-10 relative on O(1) states
    assert torch.allclose(whitened_norm(x, t_min), whitened_norm(x1, 1.0), rtol=1e-6)
    # and the flow is invertible: back to t = 1
    back = odeint(f, x, ts.flip(0), rtol=1e-10, atol=1e-10)[-1]
    assert torch.allclose(back, x1, atol=1e-6)


def test_prior_log_prob_and_sample() -> None:
    sde = ve_sde(0.01, 10.0)
    std = math.sqrt(1 + 100.0)  # alpha^2 + sigma^2 at t = 1
    z = sde.prior_sample((50_000, 2), generator=gen(5), dtype=torch.float64)
    assert abs(z.std().item() - std) < 5 * std / math.sqrt(2 * 100_000)
    lp = sde.prior_log_prob(torch.zeros(1, 2, dtype=torch.float64))
    assert torch.allclose(lp, torch.tensor([-math.log(2 * math.pi * std**2)], dtype=torch.float64))


def test_one_time_for_the_batch_matches_per_row_times() -> None:
    # a 0-dim or expanded time is evaluated once; results equal the per-row evaluation
    sde = subvp_sde()
    y = torch.randn(4, 3, generator=gen(0), dtype=torch.float64)
    t0 = torch.tensor(0.4, dtype=torch.float64)
    rows = torch.full((4,), 0.4, dtype=torch.float64)
    rev, pf = (
        sde.reverse(lambda x, t: torch.sin(x) * t[:, None]),
        sde.probability_flow(lambda x, t: torch.cos(x) - t[:, None]),
    )
    for t in (t0, t0.expand(4)):
        for fn in (sde.f, sde.g, rev.f, rev.g, pf):
            torch.testing.assert_close(fn(t, y), fn(rows, y))


def _brownian(y0: torch.Tensor, t0: float, t1: float) -> torchsde.BrownianInterval:
    return torchsde.BrownianInterval(
        t0, t1, size=y0.shape, dtype=y0.dtype, entropy=7, levy_area_approximation="none"
    )


@pytest.mark.parametrize("which", ["forward", "reverse"])
def test_euler_maruyama_agrees_with_torchsde_on_the_same_brownian_path(which: str) -> None:
    """Issue 13: the SDE objects go to torchsde.sdeint and to probpath.solvers.sdeint as they
    are; on one Brownian path (torchsde's BrownianInterval, queried by both) Euler-Maruyama
    must agree to float64 rounding. Times are dyadic (dt = 2^-7 from -1 to -2^-6) so both
    solvers' step grids are exactly equal."""
    sch = VPSchedule()
    gauss = Gaussian(MEAN, COV, sch)
    sde = SDE(sch) if which == "forward" else SDE(sch).reverse(gauss.score)
    ts = torch.tensor([2**-6, 0.5, 1.0], dtype=torch.float64)
    ts = ts if which == "forward" else -ts.flip(0)  # reverse: tau = -t from -1 to -2^-6
    y0 = gauss.sample_xt(64, abs(float(ts[0])), generator=gen(6))[0]
    ours = sdeint(sde, y0, ts, bm=_brownian(y0, float(ts[0]), float(ts[-1])), dt=2**-7)
    peer = torchsde.sdeint(
        sde, y0, ts, bm=_brownian(y0, float(ts[0]), float(ts[-1])), method="euler", dt=2**-7
    )
    assert ours.std() > 0.1  # a genuine stochastic path
    # a step is O(1) arithmetic on O(1) numbers; 63 steps accumulate float64 rounding
    torch.testing.assert_close(ours, peer, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kind", ["eps", "x0", "score", "v"])
@pytest.mark.parametrize("schedule", ["vp", "subvp", "ve", "ot"])
def test_model_velocity_is_the_pf_ode_drift_of_any_prediction(kind: str, schedule: str) -> None:
    """DiffusionModel.velocity of a network predicting ``kind`` (the analytic prediction of
    Gaussian data) is the PF-ODE drift f x - g^2 s / 2, which for the exact score is the
    marginal velocity alpha' E[x_0|x] + sigma' E[eps|x] (float64 rounding)."""
    sch = make_schedule(schedule)
    gauss = Gaussian(MEAN, COV, sch)

    def net(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        x0, eps = gauss.posterior_means(x, t)
        s = sch(t).expand_like(x)
        return {"eps": eps, "x0": x0, "score": -eps / s.sigma, "v": s.alpha * eps - s.sigma * x0}[
            kind
        ]

    model = DiffusionModel(dim=2, schedule=schedule, prediction=kind, net=net).double()
    x = gauss.sample_xt(6, 0.4, generator=gen(7))[0]
    for t in (torch.full((6,), 0.4, dtype=torch.float64), torch.tensor(0.4).double().expand(6)):
        want = SDE(sch).probability_flow(gauss.score)(t, x)
        torch.testing.assert_close(model.velocity(x, t), want, rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(
            model.velocity(x, t), gauss.velocity(x, t), rtol=1e-9, atol=1e-10
        )
