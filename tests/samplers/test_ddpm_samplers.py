"""Ancestral and DDIM samplers against exact moment propagation with the analytic eps.

For Gaussian data N(m, S) the ideal eps-predictor E[eps | x_t] is affine in x_t, so each
sampler step is an affine map plus Gaussian noise and the law of the output is Gaussian
with moments computed exactly here, from the seeds' own forms of the updates (Ho et al.
Algorithm 2; Song et al. 2021 eq. 12 in abar notation) -- an independent derivation of
the coefficients the samplers compute in (alpha, sigma) form. The difference between these
propagated moments and the data's is the sampler's discretisation bias, stated per test.
"""

from __future__ import annotations

import math

import pytest
import torch

from probpath.analytic import Gaussian
from probpath.paths import DiscreteSchedule, linear_betas
from probpath.samplers import ancestral, ddim, ddpm_timesteps

MEAN = torch.tensor([0.5, -1.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
CHAIN = DiscreteSchedule(linear_betas(1000))
GAUSS = Gaussian(MEAN, COV, CHAIN)
N = 4000
SPACINGS = ("trailing", "leading", "linspace")


def affine_eps(t: float, gauss: Gaussian = GAUSS) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, b) with E[eps | x_t = x] = A x + b, read off the oracle at 0 and the basis."""
    pts = torch.cat([torch.zeros(1, 2), torch.eye(2)]).double()
    e = gauss.eps_mean(pts, torch.full((3,), t, dtype=torch.float64))
    return (e[1:] - e[0]).T, e[0]


def propagate(
    ts: torch.Tensor, kind: str, eta: float = 0.0, chain: DiscreteSchedule = CHAIN
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and covariance of the sampler's output from x_T ~ N(0, I)."""
    gauss = GAUSS if chain is CHAIN else Gaussian(MEAN, COV, chain)
    m, C = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    abar = lambda t: float(chain(torch.tensor(t, dtype=torch.float64)).alpha ** 2)  # noqa: E731
    for k in range(len(ts) - 1):
        t, s = float(ts[k]), float(ts[k + 1])
        ab_t, ab_s = abar(t), abar(s)
        A, b = affine_eps(t, gauss)
        alpha = ab_t / ab_s  # the (respaced) step's alpha_t, beta_t = 1 - alpha_t
        if kind == "ancestral":  # mu = (x - beta / sqrt(1 - abar) eps) / sqrt(alpha)
            cx, ce = 1 / math.sqrt(alpha), -(1 - alpha) / math.sqrt(alpha * (1 - ab_t))
            var = (1 - ab_s) / (1 - ab_t) * (1 - alpha) if s > 0 else 0.0  # beta_tilde
        else:  # x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - c^2) eps + c z
            var = eta**2 * (1 - ab_s) / (1 - ab_t) * (1 - alpha)
            cx = math.sqrt(ab_s / ab_t)
            ce = math.sqrt(1 - ab_s - var) - math.sqrt(ab_s * (1 - ab_t) / ab_t)
        M = cx * torch.eye(2, dtype=torch.float64) + ce * A
        m, C = M @ m + ce * b, M @ C @ M.T + var * torch.eye(2, dtype=torch.float64)
    return m, C


def check_moments(x: torch.Tensor, m: torch.Tensor, C: torch.Tensor) -> None:
    """Sample mean and covariance within 4 standard errors of (m, C).

    SE(mean_j) = sqrt(C_jj / N); SE(C_jk) = sqrt((C_jj C_kk + C_jk^2) / N) (Gaussian).
    """
    d = torch.diagonal(C)
    assert ((x.mean(0) - m).abs() < 4 * (d / N).sqrt()).all(), (x.mean(0), m)
    se_cov = ((d[:, None] * d[None, :] + C**2) / N).sqrt()
    assert ((torch.cov(x.T) - C).abs() < 4 * se_cov).all(), (torch.cov(x.T), C)


def x_T(seed: int = 0) -> torch.Tensor:
    return torch.randn(N, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def bias(m: torch.Tensor, C: torch.Tensor) -> float:
    """Largest deviation of the output's exact moments from the data's."""
    return max((m - MEAN).abs().max().item(), (C - COV).abs().max().item())


def observed_order(e_coarse: float, e_fine: float) -> float:
    """log2 of the error ratio when the step size halves: the method's order."""
    return math.log2(e_coarse / e_fine)


def test_ancestral_full_chain_returns_the_data_moments() -> None:
    ts = ddpm_timesteps(1000)
    x, nfe = ancestral(
        GAUSS.eps_mean, x_T(), ts, schedule=CHAIN, generator=torch.Generator().manual_seed(1)
    )
    assert nfe == 1000
    m, C = propagate(ts, "ancestral")
    check_moments(x, m, C)
    # the bias against the data: the chain discretises one VP SDE (beta_i = beta(i/T) / T,
    # as linear_betas(1000)'s 1e-4 .. 0.02 do) and the ancestral sampler converges to it at
    # first order in 1/T: halving the step (T = 500 -> 1000) halves the bias, within 0.3 of
    # the order (the prior mismatch abar_T, the same for every T, stays far below it)
    coarse = DiscreteSchedule(linear_betas(500, 0.1 / 500, 20 / 500))
    e500 = bias(*propagate(ddpm_timesteps(500), "ancestral", chain=coarse))
    assert abs(observed_order(e500, bias(m, C)) - 1) < 0.3, (e500, bias(m, C))


@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_moments_and_their_discretisation_bias(steps: int) -> None:
    ts = ddpm_timesteps(1000, steps)
    assert ts[0] == 1.0  # trailing spacing: the first step starts from the chain's end
    x, nfe = ddim(GAUSS.eps_mean, x_T(), ts, schedule=CHAIN)
    assert nfe == steps
    m, C = propagate(ts, "ddim")
    check_moments(x, m, C)
    # DDIM is a first-order solver of the PF-ODE: doubling the steps halves the bias of the
    # exact output moments, within 0.3 of the order
    fine = bias(*propagate(ddpm_timesteps(1000, 2 * steps), "ddim"))
    assert abs(observed_order(bias(m, C), fine) - 1) < 0.3, (bias(m, C), fine)


def test_ddim_eta_one_on_the_chain_is_ancestral_beta_tilde() -> None:
    ts = ddpm_timesteps(1000, 100)  # respaced chain: the identity holds on any grid
    a, _ = ancestral(
        GAUSS.eps_mean, x_T(), ts, schedule=CHAIN, generator=torch.Generator().manual_seed(2)
    )
    b, _ = ddim(
        GAUSS.eps_mean,
        x_T(),
        ts,
        schedule=CHAIN,
        eta=1.0,
        generator=torch.Generator().manual_seed(2),
    )
    assert torch.allclose(a, b, atol=1e-10)
    m, C = propagate(ts, "ddim", eta=1.0)
    check_moments(b, m, C)


def test_ancestral_beta_variance_on_standard_normal_data_is_exact() -> None:
    # data N(0, I): the reverse chain with sigma^2 = beta_i is exact, whatever T
    chain = DiscreteSchedule(linear_betas(20, 0.01, 0.5))
    eps = lambda x, t: chain(t).sigma[:, None] * x  # noqa: E731
    x, _ = ancestral(
        eps,
        x_T(),
        ddpm_timesteps(20),
        schedule=chain,
        variance="beta",
        generator=torch.Generator().manual_seed(3),
    )
    # Ho's last step adds no noise: the output variance is 1 - beta_1 exactly
    C = (1 - 0.01) * torch.eye(2, dtype=torch.float64)
    check_moments(x, torch.zeros(2, dtype=torch.float64), C)


def test_ddim_eta_zero_is_deterministic_and_near_invertible() -> None:
    x0 = GAUSS.sample(500, generator=torch.Generator().manual_seed(4))
    errs = []
    for steps in (100, 200):
        up = ddpm_timesteps(1000, steps).flip(0)
        z, _ = ddim(GAUSS.eps_mean, x0, up, schedule=CHAIN)
        a, _ = ddim(
            GAUSS.eps_mean,
            z,
            up.flip(0),
            schedule=CHAIN,
            generator=torch.Generator().manual_seed(0),
        )
        b, _ = ddim(
            GAUSS.eps_mean,
            z,
            up.flip(0),
            schedule=CHAIN,
            generator=torch.Generator().manual_seed(9),
        )
        assert torch.equal(a, b)  # no randomness at eta = 0
        errs.append((a - x0).abs().max().item())
        assert z.std() > 0.9  # it did reach the noise end
    # encode and decode are first-order steps of the same ODE: the round-trip error is
    # O(1/steps), so doubling the steps halves it, within 0.3 of the order
    assert abs(observed_order(*errs) - 1) < 0.3, errs


@pytest.mark.parametrize("T", [10, 1000, 999])
def test_timestep_spacings(T: int) -> None:
    """Lin et al. 2024, Table 2: every spacing is N distinct decreasing chain indices in 1..T
    then 0; trailing starts at i = T, leading ends at i = 1, linspace (N >= 2) does both."""
    for steps in (1, 3, 7, T):
        grids = {sp: ddpm_timesteps(T, steps, spacing=sp) for sp in SPACINGS}
        for sp, ts in grids.items():
            idx = ts * T
            assert len(ts) == steps + 1 and ts[-1] == 0, sp
            torch.testing.assert_close(idx, idx.round(), rtol=0, atol=1e-9)  # chain indices
            assert bool((idx[1:] < idx[:-1]).all()) and idx[-2] >= 1 and idx[0] <= T, sp
        assert grids["trailing"][0] == 1.0 and round(float(grids["leading"][-2] * T)) == 1
        if steps > 1:  # (one linspace step is the single index 1, as in diffusers)
            assert grids["linspace"][0] == 1.0 and round(float(grids["linspace"][-2] * T)) == 1
        if T % steps == 0:  # then both are evenly spaced and trailing is leading + T/N - 1
            shift = (T // steps - 1) / T
            torch.testing.assert_close(grids["trailing"][:-1], grids["leading"][:-1] + shift)
    full = [ddpm_timesteps(T, spacing=sp) for sp in SPACINGS]
    assert all(torch.equal(g, full[0]) for g in full)  # the full chain, whatever the spacing
    # the case: 10 DDIM steps on T = 1000 start at t = 1 (leading: 0.901)
    assert ddpm_timesteps(1000, 10)[0] == 1.0
    assert ddpm_timesteps(1000, 10, spacing="leading")[0] == 0.901


def test_callback_nfe_and_float32_gradients() -> None:
    seen: list[int] = []
    x = torch.randn(8, 2, requires_grad=True)
    net = torch.nn.Linear(2, 2)
    out, nfe = ddim(
        lambda y, t: net(y),
        x,
        ddpm_timesteps(1000, 5),
        schedule=CHAIN,
        eta=0.5,
        callback=lambda k, y: seen.append(k),
    )
    assert out.dtype == torch.float32 and nfe == 5 and seen == [0, 1, 2, 3, 4]
    out.sum().backward()  # no hidden no_grad: gradients reach the input and the network
    assert x.grad is not None and net.weight.grad is not None


def test_bad_inputs_are_rejected_with_a_message() -> None:
    eps = lambda x, t: torch.zeros_like(x)  # noqa: E731
    x = torch.zeros(3, 2)
    with pytest.raises(ValueError, match="decreasing"):
        ancestral(eps, x, torch.tensor([0.5, 0.5, 0.0]), schedule=CHAIN)
    with pytest.raises(ValueError, match="eta"):
        ddim(eps, x, ddpm_timesteps(10), schedule=CHAIN, eta=1.5)
    with pytest.raises(ValueError, match="variance"):
        ancestral(eps, x, ddpm_timesteps(10), schedule=CHAIN, variance="large")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps"):
        ddpm_timesteps(10, 11)
    with pytest.raises(ValueError, match="Lin et al"):
        ddpm_timesteps(10, 5, spacing="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shaped like x"):
        ddim(lambda x, t: x[:, :1], x, ddpm_timesteps(10), schedule=CHAIN)
