"""The DDPM ELBO against the true NLL of a known law, and its reverse variance reaching
every KL term (issue 13, section 1)."""

from __future__ import annotations

import math

import torch

from probpath import losses
from probpath.analytic import GaussianMixture
from probpath.models.ddpm import DDPM
from probpath.paths import DiscreteSchedule, linear_betas

CHAIN = DiscreteSchedule(linear_betas(1000))


def _mixture() -> GaussianMixture:
    """A 2-D mixture of four unequal isotropic Gaussians, on the T = 1000 DDPM chain."""
    angle = torch.arange(4, dtype=torch.float64) * math.pi / 2
    means = 1.5 * torch.stack([torch.cos(angle), torch.sin(angle)], 1)
    weights, variances = torch.tensor([0.4, 0.3, 0.2, 0.1]), torch.tensor([0.3, 0.2, 0.25, 0.15])
    return GaussianMixture(weights, means, variances, CHAIN)


def test_elbo_of_the_exact_model_against_the_true_nll() -> None:
    """With the exact eps of the data law (probpath.analytic), the bound with sigma_i^2 =
    beta_i is within its standard error of the true NLL -log p(x_0), and the bound with
    beta~_i lies strictly above it (~0.9 nats: the small-variance reverse steps near the
    data). Paired per point (bound - true NLL), n = 1000: 4 standard errors each side."""
    gm, n = _mixture(), 1000
    x0 = gm.sample(n, generator=torch.Generator().manual_seed(0))
    bounds = losses.ddpm_nll_bounds(
        gm.eps_mean, x0, CHAIN, generator=torch.Generator().manual_seed(1)
    )
    nll = -gm.log_prob(x0, 0.0)
    gap = {v: (b - nll).mean().item() for v, b in bounds.items()}
    se = {v: (b - nll).std().item() / math.sqrt(n) for v, b in bounds.items()}
    assert abs(gap["beta"]) < 4 * se["beta"], (gap, se)
    assert gap["beta_tilde"] > 4 * se["beta_tilde"], (gap, se)


def test_each_variance_reaches_every_kl_term() -> None:
    """The one-pass bounds equal the sum of their terms computed one by one with that
    variance on the same draws, and ddpm_nll_bound / DDPM.nll_bound honour ``variance``."""
    chain = DiscreteSchedule(linear_betas(20, 1e-3, 0.2))
    net = torch.nn.Linear(2, 2).double()
    eps_model = lambda x, t: net(x) * t[:, None]  # noqa: E731
    x0 = torch.randn(6, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        bounds = losses.ddpm_nll_bounds(
            eps_model, x0, chain, generator=torch.Generator().manual_seed(3)
        )
        for variance in ("beta", "beta_tilde"):
            g = torch.Generator().manual_seed(3)  # the same draws, in the same order
            total = losses.ddpm_decoder_nll(eps_model, x0, chain, generator=g)
            for i in range(2, chain.T + 1):
                total = total + losses.ddpm_kl_term(
                    eps_model, x0, chain, i, variance=variance, generator=g
                )
            total = total + losses.ddpm_prior_kl(x0, chain)
            torch.testing.assert_close(bounds[variance], total, rtol=1e-12, atol=1e-12)
            single = losses.ddpm_nll_bound(
                eps_model, x0, chain, variance=variance, generator=torch.Generator().manual_seed(3)
            )
            torch.testing.assert_close(single, total, rtol=1e-12, atol=1e-12)
            model = DDPM(
                dim=2, schedule_kwargs=dict(T=20, beta_1=1e-3, beta_T=0.2), net=eps_model,
                variance=variance,
            ).double()  # fmt: skip
            got = model.nll_bound(x0, generator=torch.Generator().manual_seed(3))
            torch.testing.assert_close(got, total, rtol=1e-12, atol=1e-12)
    # the two variances give different bounds on every point
    assert ((bounds["beta"] - bounds["beta_tilde"]).abs() > 1e-3).all()
