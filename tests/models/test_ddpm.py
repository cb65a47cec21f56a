"""DDPM: every ELBO term against its formula, and the bound against the exact likelihood.

For Gaussian data N(m, S) the ideal eps-predictor is affine, E[eps | x_i] = A_i x_i + b_i,
so the expectation of every ELBO term over (x_0, eps) is closed form (computed below from
the chain's posterior coefficients): the Monte Carlo functions of probpath.losses must agree
with it within their standard error, and the exact expected bound must lie above the data
entropy and approach it as T grows.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch.distributions import Normal, kl_divergence

from probpath import losses
from probpath.analytic import Gaussian
from probpath.models import MODELS, build
from probpath.models.ddpm import DDPM
from probpath.paths import DiscreteSchedule, linear_betas, make_schedule

MEAN = torch.tensor([0.5, -1.0], dtype=torch.float64)
COV = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)
ENTROPY = 0.5 * (2 * math.log(2 * math.pi * math.e) + torch.logdet(COV).item())


def scaled_chain(T: int) -> dict[str, float]:
    """Linear betas discretising one VP SDE (beta(t) from 0.1 to 20) whatever T."""
    return dict(T=T, beta_1=0.1 / T, beta_T=20 / T)


def oracle(T: int, variance: str = "beta") -> tuple[DDPM, Gaussian, DiscreteSchedule]:
    kw = scaled_chain(T)
    chain = make_schedule("ddpm-linear", **kw)
    assert isinstance(chain, DiscreteSchedule)
    gauss = Gaussian(MEAN, COV, chain)
    model = DDPM(dim=2, schedule_kwargs=kw, net=gauss.eps_mean, variance=variance).double()
    return model, gauss, chain


def affine(gauss: Gaussian, i: torch.Tensor, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A (n, 2, 2), b (n, 2) with E[eps | x_i = x] = A x + b at each step of ``i``."""
    n = len(i)
    pts = torch.cat([torch.zeros(1, 2), torch.eye(2)]).double().repeat(n, 1)
    t = (i.double() / T).repeat_interleave(3)
    e = gauss.eps_mean(pts, t).reshape(n, 3, 2)
    return (e[:, 1:] - e[:, :1]).transpose(1, 2), e[:, 0]


def expected_sq(K: torch.Tensor, P: torch.Tensor, Q: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """E||K (P eps + Q x0 + r)||^2 for eps ~ N(0, I), x0 ~ N(MEAN, COV); batched over steps."""
    tr = lambda M: torch.diagonal(M, dim1=-2, dim2=-1).sum(-1)  # noqa: E731
    mean = Q @ MEAN + r
    return K**2 * (tr(P @ P.transpose(1, 2)) + tr(Q @ COV @ Q.transpose(1, 2)) + (mean**2).sum(-1))


def exact_terms(T: int, variance: str = "beta") -> tuple[float, torch.Tensor, float]:
    """Closed-form E[L_0], E[L_i] (i = 2..T) and L_T for Gaussian data with the oracle."""
    _, gauss, chain = oracle(T, variance)
    eye = torch.eye(2, dtype=torch.float64)
    i = torch.arange(1, T + 1)
    A, b = affine(gauss, i, T)
    a, var = chain.marginal(i)
    s = var.sqrt()
    # x_i = a x0 + s eps; x0_hat - x0 = (s / a)[(I - s A) eps - a A x0 - b]; the KL's mean
    # difference is c0 (x0_hat - x0) (the posterior mean is c0 x0 + ci x_i)
    c0, _, beta_tilde = chain.posterior_coefficients(i[1:])
    P, Q = eye - s[1:, None, None] * A[1:], -a[1:, None, None] * A[1:]
    sq = expected_sq(c0 * s[1:] / a[1:], P, Q, -b[1:])
    var_p = chain.betas[1:] if variance == "beta" else beta_tilde
    ratio = beta_tilde / var_p
    L_i = 0.5 * (2 * (ratio - 1 - ratio.log()) + sq / var_p)
    # decoder: x0 - mu = x0 - (x1 - beta_1 / s_1 (A x1 + b)) / sqrt(alpha_1), affine too
    b1 = chain.betas[0]
    M = (eye - b1 / s[0] * A[0]) / (1 - b1).sqrt()  # mu = M x1 - (beta_1 / s_1) b / sqrt(alpha_1)
    P0, Q0 = -s[0] * M, eye - a[0] * M
    r0 = b1 / s[0] * b[0] / (1 - b1).sqrt()
    sq0 = expected_sq(torch.ones(1, dtype=torch.float64), P0[None], Q0[None], r0[None])[0]
    L_0 = 0.5 * (sq0 / b1 + 2 * math.log(2 * math.pi * b1))
    abar = chain.alphas_cumprod[-1]
    L_T = 0.5 * (abar * ((MEAN**2).sum() + COV.trace()) - 2 * abar - 2 * torch.log1p(-abar))
    return float(L_0), L_i, float(L_T)


def test_prior_term_is_the_gaussian_kl() -> None:
    chain = DiscreteSchedule(linear_betas(50, 1e-3, 0.05))
    x0 = torch.randn(6, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    a, var = chain.marginal(50)
    want = kl_divergence(Normal(a * x0, var.sqrt()), Normal(0.0, 1.0)).sum(1)
    assert torch.allclose(losses.ddpm_prior_kl(x0, chain), want, atol=1e-12)


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_kl_term_is_the_kl_between_the_gaussians(variance: str) -> None:
    chain = DiscreteSchedule(linear_betas(50, 1e-3, 0.05))
    g = torch.Generator().manual_seed(1)
    x0, noise = torch.randn(2, 5, 2, dtype=torch.float64, generator=g)
    net = torch.nn.Linear(2, 2).double()
    eps_model = lambda x, t: net(x) * t[:, None]  # noqa: E731
    i = torch.tensor([2, 7, 20, 33, 50])
    got = losses.ddpm_kl_term(eps_model, x0, chain, i, variance=variance, noise=noise)
    a, var = chain.marginal(i)
    x_i = a[:, None] * x0 + var.sqrt()[:, None] * noise
    eps = eps_model(x_i, i.double() / 50)
    alpha, beta, abar = chain.alphas[i - 1], chain.betas[i - 1], chain.alphas_cumprod[i - 1]
    c0, ci, beta_tilde = chain.posterior_coefficients(i)
    mu_q = c0[:, None] * x0 + ci[:, None] * x_i
    mu_p = (x_i - (beta / (1 - abar).sqrt())[:, None] * eps) / alpha.sqrt()[:, None]  # seeds
    var_p = beta if variance == "beta" else beta_tilde
    want = kl_divergence(
        Normal(mu_q, beta_tilde.sqrt()[:, None]), Normal(mu_p, var_p.sqrt()[:, None])
    )
    assert torch.allclose(got, want.sum(1), rtol=1e-9)
    if variance == "beta_tilde":  # the seeds' weighted form of L_t
        w = (1 - alpha) ** 2 / (2 * beta_tilde * alpha * (1 - abar))
        assert torch.allclose(got, w * ((noise - eps) ** 2).sum(1), rtol=1e-9)


def test_decoder_terms_against_their_densities() -> None:
    chain = DiscreteSchedule(linear_betas(10, 0.01, 0.1))
    x0 = torch.tensor([[-1.0, -0.2], [1.0, 3 / 255]], dtype=torch.float64)
    noise = torch.tensor([[0.3, -1.0], [2.0, 0.1]], dtype=torch.float64)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731  (mu = x_1 / sqrt(alpha_1))
    mu = (0.99**0.5 * x0 + 0.01**0.5 * noise) / 0.99**0.5
    std = 0.1
    got = losses.ddpm_decoder_nll(zero, x0, chain, noise=noise)
    assert torch.allclose(got, -Normal(mu, std).log_prob(x0).sum(1), rtol=1e-12)
    got = losses.ddpm_decoder_nll(zero, x0, chain, noise=noise, decoder="discretized")
    cdf = Normal(mu, std).cdf
    lo = torch.where(x0 == -1, torch.zeros_like(x0), cdf(x0 - 1 / 255))
    hi = torch.where(x0 == 1, torch.ones_like(x0), cdf(x0 + 1 / 255))
    assert torch.allclose(got, -(hi - lo).log().sum(1), rtol=1e-9)
    far = losses.ddpm_decoder_nll(
        lambda x, t: -50 * torch.ones_like(x), x0, chain, noise=noise, decoder="discretized"
    )  # mu ~ 50 std away from every bin: a large but finite NLL (stable tails)
    assert torch.isfinite(far).all() and (far > 100).all()
    for off in (2 * x0, x0 + 0.5 / 255):  # outside [-1, 1]; between two grey levels
        with pytest.raises(ValueError, match="grid of K = 256 grey levels"):
            losses.ddpm_decoder_nll(zero, off, chain, decoder="discretized")


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_the_k_level_decoder_is_a_probability_over_the_k_levels(levels: int) -> None:
    """One pixel's bins over all K levels cover the line: their probabilities sum to 1 for
    any mean and scale; each is Phi(hi) - Phi(lo) at the level +- 1 / (K - 1)."""
    grid = torch.linspace(-1, 1, levels, dtype=torch.float64)[:, None]
    half = 1 / (levels - 1)
    for mean, std in ((0.0, 0.01), (0.37, 0.2), (-3.0, 1.0), (0.9, 1e-4)):
        m, sd = torch.tensor(mean, dtype=torch.float64), torch.tensor(std, dtype=torch.float64)
        logp = losses.discretized_gaussian_log_prob(grid, m, sd, levels)
        torch.testing.assert_close(logp.exp().sum(), torch.tensor(1.0, dtype=torch.float64))
        cdf = Normal(m, sd).cdf
        lo = torch.where(grid == -1, 0.0, cdf(grid - half))
        hi = torch.where(grid == 1, 1.0, cdf(grid + half))
        # Normal.cdf is 0.5 (1 + erf): its differences lose digits below ~1e-6 (the stable
        # form, log_ndtr, does not), so compare where both are accurate to 1e-10
        keep = (hi - lo) > 1e-6
        torch.testing.assert_close(logp[keep[:, 0]], (hi - lo).log()[keep].reshape(-1))


def test_the_256_level_decoder_is_ho_et_al_and_ddpm_levels_choose_it() -> None:
    chain = DiscreteSchedule(linear_betas(10, 0.01, 0.1))
    x0 = torch.tensor([[-1.0, 3 / 255, 1.0]], dtype=torch.float64)
    noise = torch.tensor([[0.3, -1.0, 0.5]], dtype=torch.float64)
    zero = lambda x, t: torch.zeros_like(x)  # noqa: E731
    default = losses.ddpm_decoder_nll(zero, x0, chain, noise=noise, decoder="discretized")
    k256 = losses.ddpm_decoder_nll(zero, x0, chain, noise=noise, decoder="discretized", levels=256)
    assert torch.equal(default, k256)
    assert DDPM(dim=2, hidden=[4]).config["decoder"] == "gaussian"
    model = DDPM(shape=[1, 2, 2], hidden=[4], levels=5, schedule_kwargs={"T": 10})
    assert (model.config["decoder"], model.config["levels"]) == ("discretized", 5)
    x = torch.tensor([-1.0, -0.5, 0.5, 1.0]).reshape(1, 1, 2, 2).expand(3, -1, -1, -1)
    bounds = model.nll_bounds(x, generator=torch.Generator().manual_seed(0))
    # a bound on a discrete NLL: -log P(pixels) >= 0
    assert all(b.shape == (3,) and bool((b > 0).all()) for b in bounds.values())
    with pytest.raises(ValueError, match="grid of K = 5 grey levels"):
        model.nll_bound(x + 0.1)
    with pytest.raises(ValueError, match="levels"):
        DDPM(levels=1)


def test_monte_carlo_terms_match_their_closed_form_expectation() -> None:
    T, n = 100, 20000
    model, gauss, chain = oracle(T)
    L_0, L_i, L_T = exact_terms(T)
    x0 = gauss.sample(n, generator=torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(3)
    cases = [(losses.ddpm_decoder_nll(gauss.eps_mean, x0, chain, generator=g), L_0)]
    for i in (2, 30, 100):
        mc = losses.ddpm_kl_term(gauss.eps_mean, x0, chain, i, variance="beta", generator=g)
        cases.append((mc, float(L_i[i - 2])))
    for mc, exact in cases:  # 4 standard errors of the mean of n draws
        assert abs(mc.mean().item() - exact) < 4 * mc.std().item() / math.sqrt(n), (
            mc.mean(),
            exact,
        )
    # the full bound is their sum: check one model evaluation of it
    bound = model.nll_bound(x0[:2000], generator=g)
    total = L_0 + L_i.sum().item() + L_T
    assert abs(bound.mean().item() - total) < 4 * bound.std().item() / math.sqrt(2000)


def test_exact_bound_lies_above_the_entropy_and_tightens_with_T() -> None:
    gaps = []
    for T in (25, 100, 400, 1000):
        L_0, L_i, L_T = exact_terms(T)
        gaps.append(L_0 + L_i.sum().item() + L_T - ENTROPY)
    # E[-ELBO] >= E[-log p_model] >= H(data): every gap is positive, and the chain
    # discretising one SDE more finely loses less; at T = 1000 it is within 0.01 nats
    assert all(gap > 0 for gap in gaps), gaps
    assert all(b < a for a, b in itertools.pairwise(gaps)), gaps
    assert gaps[-1] < 0.01, gaps


def test_model_config_loss_samplers_and_trajectories() -> None:
    assert MODELS["ddpm"] is DDPM
    model = build("ddpm", dim=2, hidden=[8], schedule_kwargs={"T": 20}, variance="beta")
    assert isinstance(model, DDPM)
    again = build("ddpm", **model.config)
    assert again.config == model.config
    assert {"ancestral", "ddim", "pf-ode"} <= set(model.samplers)
    x = torch.randn(16, 2)
    loss, logs = model.loss(x, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert logs["l_simple"] > 0
    with torch.no_grad():
        s, nfe = model.sample_with_nfe(5, sampler="ancestral")
        assert s.shape == (5, 2) and nfe == 20
        path = model.trajectories(7, n_times=5, sampler="ddim", steps=10)
        assert path.shape == (5, 7, 2)
    with pytest.raises(ValueError, match="discrete chain"):
        DDPM(schedule="vp")


def test_training_lowers_l_simple() -> None:
    torch.manual_seed(0)
    model = DDPM(dim=2, hidden=[32, 32], schedule_kwargs={"T": 100})
    data = torch.randn(256, 2) * 0.3 + 1.0
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    first = model.loss(data, generator=g)[0].item()
    for _ in range(150):
        opt.zero_grad()
        model.loss(data, generator=g)[0].backward()
        opt.step()
    # E||eps||^2 = d = 2 for an untrained net near 0; a trained one predicts part of eps
    last = sum(model.loss(data, generator=g)[0].item() for _ in range(10)) / 10
    assert last < 0.8 * first, (first, last)
