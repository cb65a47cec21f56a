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


def affine_eps(t: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(A, b) with E[eps | x_t = x] = A x + b, read off the oracle at 0 and the basis."""
    pts = torch.cat([torch.zeros(1, 2), torch.eye(2)]).double()
    e = GAUSS.eps_mean(pts, torch.full((3,), t, dtype=torch.float64))
    return (e[1:] - e[0]).T, e[0]


def propagate(ts: torch.Tensor, kind: str, eta: float = 0.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact mean and covariance of the sampler's output from x_T ~ N(0, I)."""
    m, C = torch.zeros(2, dtype=torch.float64), torch.eye(2, dtype=torch.float64)
    abar = lambda t: float(CHAIN(torch.tensor(t, dtype=torch.float64)).alpha ** 2)  # noqa: E731
    for k in range(len(ts) - 1):
        t, s = float(ts[k]), float(ts[k + 1])
        ab_t, ab_s = abar(t), abar(s)
        A, b = affine_eps(t)
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


def test_ancestral_full_chain_returns_the_data_moments() -> None:
    ts = ddpm_timesteps(1000)
    x, nfe = ancestral(
        GAUSS.eps_mean, x_T(), ts, schedule=CHAIN, generator=torch.Generator().manual_seed(1)
    )
    assert nfe == 1000
    m, C = propagate(ts, "ancestral")
    check_moments(x, m, C)
    # discretisation bias of the 1000-step chain: prior mismatch abar_T ~ 4e-5 and
    # O(beta) per-step errors; measured 3e-3 on the covariance, bounded here by 1e-2
    assert torch.allclose(m, MEAN, atol=1e-2) and torch.allclose(C, COV, atol=1e-2)


@pytest.mark.parametrize("steps", [10, 50])
def test_ddim_moments_and_their_discretisation_bias(steps: int) -> None:
    ts = ddpm_timesteps(1000, steps)
    x, nfe = ddim(GAUSS.eps_mean, x_T(), ts, schedule=CHAIN)
    assert nfe == steps
    m, C = propagate(ts, "ddim")
    check_moments(x, m, C)
    # DDIM is a first-order solver of the PF-ODE: its bias is ~ c / steps, with c = 3.1-3.6
    # measured from 10 to 200 steps; 4 / steps fails if the order or the constant slips
    err = max((m - MEAN).abs().max().item(), (C - COV).abs().max().item())
    assert err < 4 / steps


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
    # O(1/steps), so doubling the steps must (about) halve it; measured 0.13 at 100
    assert errs[1] < 0.6 * errs[0] and errs[0] < 0.2


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
    with pytest.raises(ValueError, match="shaped like x"):
        ddim(lambda x, t: x[:, :1], x, ddpm_timesteps(10), schedule=CHAIN)
