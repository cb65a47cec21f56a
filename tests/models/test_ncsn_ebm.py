"""NCSN with the analytic mixture score, and an EBM trained briefly on a Gaussian."""

from __future__ import annotations

import math

import pytest
import torch

from probpath import losses
from probpath.analytic import GaussianMixture
from probpath.models import MODELS, build
from probpath.models.ebm import EBM
from probpath.models.ncsn import NCSN
from probpath.paths import VESchedule, ve_sigmas

WEIGHTS = torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64)
MEANS = torch.tensor([[-3.0, 0.0], [0.0, 3.0], [3.0, 0.0]], dtype=torch.float64)


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
    # binomial standard error sqrt(w (1 - w) / n) ~ 0.009, 4 of them; plus the stated bias of
    # annealing with finitely many levels (mass splits while the chains have not fully
    # mixed between modes): measured 0.012 with 20 levels, 0.03 with 10; allowed 0.02
    se = (WEIGHTS * (1 - WEIGHTS) / n).sqrt()
    assert ((share - WEIGHTS).abs() < 4 * se + 0.02).all(), share
    # each mode is the component N(m_k, 0.1 I): within-mode spread ~ sqrt(0.1) (denoised)
    near = x[torch.cdist(x, MEANS).argmin(1) == 2] - MEANS[2]
    assert abs(near.std().item() - math.sqrt(0.1)) < 0.05


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


@pytest.mark.parametrize("objective", ["ism", "ssm"])
def test_ebm_trained_on_a_gaussian_recovers_its_moments(objective: str) -> None:
    torch.manual_seed(0)
    mean = torch.tensor([0.5, -0.5])
    chol = torch.tensor([[0.8, 0.0], [0.3, 0.5]])
    data = mean + torch.randn(2048, 2) @ chol.T
    model = EBM(dim=2, hidden=[32, 32], objective=objective, grid_extent=4.0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    g = torch.Generator().manual_seed(1)
    for _ in range(250):
        batch = data[torch.randint(0, len(data), (256,), generator=g)]
        opt.zero_grad()
        model.loss(batch, generator=g)[0].backward()
        opt.step()
    # moments of the model's own density exp(-E)/Z by quadrature on the grid
    pts, area = model.grid()
    with torch.no_grad():
        p = model.log_prob(pts).exp() * area
    assert abs(p.sum().item() - 1) < 1e-4  # normalised by construction
    m = (p[:, None] * pts).sum(0)
    c = (p[:, None, None] * (pts - m)[:, :, None] * (pts - m)[:, None, :]).sum(0)
    target = torch.cov(data.T)
    # sample error of the 2048 training points: SE(mean) ~ 0.018, SE(cov) ~ 0.02; the
    # training tolerance of 250 Adam steps of a 32-unit net is measured at ~0.02 (ISM)
    # to ~0.05 (SSM, one random projection per point):
    # bound 0.1 on every entry
    assert torch.allclose(m, data.mean(0), atol=0.1), m
    assert torch.allclose(c, target, atol=0.1), (c, target)


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
