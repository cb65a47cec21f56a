"""NCSN with the analytic Gaussian and mixture scores; the EBM's likelihood and objectives
with the exact energy of a Gaussian."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from probpath import losses
from probpath.analytic import Gaussian, GaussianMixture
from probpath.models import MODELS, build
from probpath.models.ebm import EBM
from probpath.models.ncsn import NCSN
from probpath.paths import VESchedule, ve_sigmas

WEIGHTS = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
MEANS = torch.tensor([[-3.0, 0.0], [0.0, 3.0], [3.0, 0.0]], dtype=torch.float64)


def annealed_moments(
    model: NCSN, data_mean: Tensor, data_cov: Tensor, mean: Tensor, cov: Tensor, K: int
) -> tuple[Tensor, Tensor]:
    """Exact mean and covariance after NCSN's annealed Langevin with the score of N(m, S),
    from a state with moments (mean, cov): on the VE path p_sigma = N(m, S + sigma^2 I), so a
    step x + (a/2) s(x) + sqrt(a) z, a = eps sigma_i^2 / sigma_L^2, is affine,
    x - m <- A (x - m) + sqrt(a) z with A = I - (a/2) P, P = (S + sigma^2 I)^-1, and the
    final Tweedie step x + sigma_L^2 s(x) is x - m <- B (x - m), B = I - sigma_L^2 P_L."""
    eye = torch.eye(len(data_mean), dtype=torch.float64)
    c, d = cov, mean - data_mean
    eps = model.config["step_size"]
    for sigma in model.sigmas.tolist():
        a = eps * sigma**2 / model.sigmas[-1].item() ** 2
        A = eye - a / 2 * torch.linalg.inv(data_cov + sigma**2 * eye)
        for _ in range(K):
            c, d = A @ c @ A.T + a * eye, A @ d
    B = eye - model.sigmas[-1].item() ** 2 * torch.linalg.inv(data_cov + sigma**2 * eye)
    return data_mean + B @ d, B @ c @ B.T


def test_ncsn_samples_gaussian_data_with_the_exact_moments_of_annealed_langevin() -> None:
    """With the score of Gaussian data every step is affine, so the mean and covariance of the
    samples are those of :func:`annealed_moments` from the VE prior N(0, (1 + sigma_max^2) I):
    within 5 standard errors of n = 4000 samples (sample mean: sqrt(C_ii / n); covariance
    entries: sqrt((C_ii C_jj + C_ij^2) / n)). Leaving out the final denoising step moves the
    covariance by about 20 of them."""
    m = torch.tensor([1.0, -0.5], dtype=torch.float64)
    S = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
    gauss = Gaussian(m, S, VESchedule(0.3, 5.0))
    model = NCSN(
        dim=2, sigma_min=0.3, sigma_max=5.0, n_levels=10, prediction="score",
        net=gauss.score, step_size=0.018, n_steps_per_level=30,
    ).double()  # fmt: skip
    n = 4000
    with torch.no_grad():
        x, nfe = model.sample_with_nfe(n, generator=torch.Generator().manual_seed(0))
    assert nfe == 10 * 30 + 1
    prior = (1 + 5.0**2) * torch.eye(2, dtype=torch.float64)
    mean, cov = annealed_moments(model, m, S, torch.zeros(2, dtype=torch.float64), prior, 30)
    var = cov.diagonal()
    assert ((x.mean(0) - mean).abs() < 5 * (var / n).sqrt()).all(), (x.mean(0), mean)
    se = ((var[:, None] * var[None, :] + cov**2) / n).sqrt()
    assert ((torch.cov(x.T) - cov).abs() < 5 * se).all(), (torch.cov(x.T), cov)


def test_ncsn_with_the_analytic_score_recovers_the_mixture_weights() -> None:
    gm = GaussianMixture(WEIGHTS, MEANS, 0.1, VESchedule(0.1, 8.0))
    model = NCSN(
        dim=2, sigma_min=0.1, sigma_max=8.0, n_levels=20, prediction="score",
        net=gm.score, step_size=2e-3,
    ).double()  # fmt: skip
    n = 3000
    with torch.no_grad():
        x, nfe = model.sample_with_nfe(n, generator=torch.Generator().manual_seed(0), steps=1000)
    assert nfe == 20 * 50 + 1  # levels x steps + the final Tweedie denoising step
    share = torch.bincount(torch.cdist(x, MEANS).argmin(1), minlength=3) / n
    # binomial standard error sqrt(w (1 - w) / n) ~ 0.009; 4 of them. Annealing over 20 levels
    # must leave the weights within the sampling noise (a wrong score, level schedule or step
    # moves them by far more)
    se = (WEIGHTS * (1 - WEIGHTS) / n).sqrt()
    assert ((share - WEIGHTS).abs() < 4 * se).all(), share
    # within a mode (4.2 apart, component variance v = 0.1) the mixture's score is the
    # component's up to terms of order exp(-4.2^2 / (2 V)) < 4e-4 at the levels sigma <= 1
    # (V = v + sigma^2),
    # and the levels above forget their start (a factor (1 - a / (2 V))^(2K) < 1e-4 each), so
    # the spread of a mode is that of annealed_moments for N(m_k, v I): 4 standard errors of
    # the standard deviation of its ~2 x 1500 coordinates, std / sqrt(2 N)
    near = x[torch.cdist(x, MEANS).argmin(1) == 2] - MEANS[2]
    v = 0.1 * torch.eye(2, dtype=torch.float64)
    _, cov = annealed_moments(
        model, MEANS[2], v, MEANS[2], (1 + 8.0**2) * torch.eye(2).double(), 50
    )
    std = cov[0, 0].sqrt().item()
    assert abs(near.std().item() - std) < 4 * std / math.sqrt(2 * near.numel()), (near.std(), std)


def test_ncsn_loss_is_the_weighted_dsm_on_its_levels() -> None:
    model = NCSN(dim=2, hidden=[8], n_levels=5, sigma_max=4.0).double()
    x = torch.randn(32, 2, dtype=torch.float64)
    # sigma -> t maps the levels onto the VE path's times (L - l) / (L - 1)
    t = model.sigma_to_t(ve_sigmas(0.01, 4.0, 5))
    assert torch.allclose(t, torch.linspace(1, 0, 5, dtype=torch.float64), atol=1e-12)
    loss, logs = model.loss(x, generator=torch.Generator().manual_seed(0))
    want = losses.noise_conditional_score_matching(
        model.noise_conditional_score, x, model.sigmas.double(),
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert torch.allclose(loss, want) and logs["dsm"] == pytest.approx(want.item())
    # eps prediction (NCSNv2 scaling): sigma s = -net, so the weighted loss is ||net - eps||^2/2
    assert MODELS["ncsn"] is NCSN and build("ncsn", **model.config).config == model.config
    assert "annealed-langevin" in model.samplers and "pf-ode" in model.samplers


class QuadraticEnergy(nn.Module):
    """E(x) = c (x - m)^T P (x - m) / 2: the energy of N(m, P^-1) when c = 1; ``c`` is one
    scale per row (shape (n, 1)) so that autograd gives each example's loss derivative."""

    def __init__(self, mean: Tensor, cov: Tensor, c: Tensor) -> None:
        super().__init__()
        self.mean, self.precision, self.c = mean, torch.linalg.inv(cov), c

    def forward(self, x: Tensor, t: object) -> Tensor:
        d = x - self.mean
        return self.c * 0.5 * ((d @ self.precision) * d).sum(-1, keepdim=True)


D64 = torch.float64
EBM_MEAN = torch.tensor([0.5, -0.5], dtype=torch.float64)
EBM_COV = torch.tensor([[0.64, 0.24], [0.24, 0.34]], dtype=torch.float64)


def test_ebm_log_prob_of_a_gaussian_energy_is_the_gaussian_density() -> None:
    """log Z of E = (x - m)^T P (x - m) / 2 is log(2 pi / sqrt(det P)). The grid sum on
    [-4, 4]^2 misses the mass outside the box, 2 Phi(-3.5 / 0.8) + 2 Phi(-3.5 / 0.58) < 2e-5
    (marginal std 0.8 and 0.58, mean within 0.5 of 0); the rectangle rule on a smooth
    density that vanishes at the box's edge is exact up to exp(-2 pi^2 lambda / h^2) ~
    e^-2500 (lambda = 0.27, the smallest variance; h = 8 / 255). Allow 1e-4 nats."""
    model = EBM(dim=2, hidden=[8], grid_size=256, grid_extent=4.0).double()
    model.net = QuadraticEnergy(EBM_MEAN, EBM_COV, nn.Parameter(torch.ones((), dtype=D64)))
    log_z = math.log(2 * math.pi) + 0.5 * torch.logdet(EBM_COV).item()
    assert abs(model.log_normalizer().item() - log_z) < 1e-4
    x = torch.randn(5, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    exact = torch.distributions.MultivariateNormal(EBM_MEAN, EBM_COV).log_prob(x)
    torch.testing.assert_close(model.log_prob(x), exact, rtol=0, atol=1e-4)


@pytest.mark.parametrize("objective", ["ism", "ssm", "dsm"])
def test_ebm_objectives_are_stationary_at_the_true_energy(objective: str) -> None:
    """Each score-matching objective of the EBM, on data N(m, C), is minimised over the scale
    c of the energy at c = 1 by the true energy (for DSM: that of the blurred data,
    N(m, C + sigma^2 I)): Hyvarinen's E[|s|^2 + tr grad s] = 0, and for DSM
    E[(s(x~) + eps / sigma) . s(x~)] = 0. The mean of the n = 20000 per-example derivatives
    dL/dc must lie within 5 standard errors of 0 at c = 1, and not at c = 1.5, where it is
    0.5 E|s|^2 ~ 3, more than 10 standard errors."""
    n = 20_000
    x = (
        EBM_MEAN
        + torch.randn(n, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
        @ torch.linalg.cholesky(EBM_COV).T
    )
    model = EBM(dim=2, hidden=[8], objective=objective, noise_sigma=0.1).double()
    cov = EBM_COV + (0.01 * torch.eye(2, dtype=torch.float64) if objective == "dsm" else 0)
    for scale, vanishes in ((1.0, True), (1.5, False)):
        c = torch.full((n, 1), scale, dtype=torch.float64, requires_grad=True)
        model.net = QuadraticEnergy(EBM_MEAN, cov, c)
        loss, _ = model.loss(x, generator=torch.Generator().manual_seed(2))
        (per,) = torch.autograd.grad(loss * n, c)
        mean, se = per.mean().item(), per.std().item() / math.sqrt(n)
        assert (abs(mean) < 5 * se) == vanishes, (objective, scale, mean, se)


def test_ebm_score_sampling_and_errors() -> None:
    model = EBM(dim=2, hidden=[8], n_steps=20, objective="ism")
    x = torch.randn(5, 2, requires_grad=True)
    score = model.score(x)
    (grad,) = torch.autograd.grad(model.energy(x).sum(), x)
    assert torch.allclose(score, -grad)  # the normalising constant drops out
    loss, logs = model.loss(torch.randn(16, 2))
    loss.backward()  # create_graph: the loss reaches the energy's parameters
    assert "ism" in logs and model.net.layers[0].weight.grad is not None
    s, nfe = model.sample_with_nfe(7, generator=torch.Generator().manual_seed(0))
    assert s.shape == (7, 2) and nfe == 20
    assert build("ebm", **model.config).config == model.config
    with pytest.raises(ValueError, match="2-D"):
        EBM(dim=3, hidden=[8]).log_prob(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="objective"):
        EBM(objective="mle")
