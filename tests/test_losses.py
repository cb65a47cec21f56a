"""Score-matching losses against closed forms for Gaussian data N(M, S).

* Minimisers: for a linear score s(x) = A x + b every loss is quadratic in theta = (A, b),
  so one Newton step on the library loss (autograd Hessian, fixed noise) gives its exact
  empirical minimiser. It must equal the analytic score of the data, A = -S^-1,
  b = S^-1 M (for denoising: of the smoothed law N(M, S + sigma^2 I)), within 5 standard
  errors of an M-estimator from n samples: the sandwich covariance H^-1 J H^-1 / n, with J
  the covariance of the per-example gradients (Huber 1967).
* Identities: ISM = Fisher divergence - const and E_v[SSM] = ISM, checked per example on
  nonlinear scores within 5 standard errors of the mean of the per-example differences.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor

from probpath.losses import (
    denoising_score_matching,
    fisher_divergence,
    implicit_score_matching,
    noise_conditional_score_matching,
    sliced_score_matching,
)

DTYPE = torch.float64
D = 2
M = torch.tensor([1.0, -0.5], dtype=DTYPE)
S = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=DTYPE)
P = torch.linalg.inv(S)
N = 8000
SIGMAS = torch.tensor([1.0, 0.5, 0.2], dtype=DTYPE)


def data(n: int = N, seed: int = 0) -> Tensor:
    z = torch.randn(n, D, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)
    return M + z @ torch.linalg.cholesky(S).T


def true_score(x: Tensor) -> Tensor:
    return -(x - M) @ P


def linear_params(theta: Tensor, level: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """theta: (batch, n_levels * (D*D + D)), one row per example (rows may be equal)."""
    rows = theta.reshape(theta.shape[0], -1, D * D + D)
    rows = rows[:, 0] if level is None else rows[torch.arange(len(rows)), level]
    return rows[:, : D * D].reshape(-1, D, D), rows[:, D * D :]


def loss_fn(name: str, x: Tensor, theta: Tensor) -> Tensor:
    """Per-example loss of the linear score with parameters theta (batch, p), fixed noise."""
    gen = torch.Generator().manual_seed(12345)  # fixed noise, independent of the data seeds

    def score(y: Tensor) -> Tensor:
        A, b = linear_params(theta)
        return (A @ y[:, :, None])[..., 0] + b

    def score_sigma(y: Tensor, sigma: Tensor) -> Tensor:
        A, b = linear_params(theta, (sigma[:, None] == SIGMAS).to(torch.long).argmax(1))
        return (A @ y[:, :, None])[..., 0] + b

    if name == "ism":
        return implicit_score_matching(score, x, reduction="none")
    if name.startswith("ssm"):
        kind, vr = ("gaussian", False) if name == "ssm" else ("rademacher", True)
        return sliced_score_matching(
            score, x, kind=kind, variance_reduction=vr, generator=gen, reduction="none"
        )
    if name == "dsm":
        return denoising_score_matching(score, x, 0.5, generator=gen, reduction="none")
    return noise_conditional_score_matching(score_sigma, x, SIGMAS, generator=gen, reduction="none")


def fit_and_standard_errors(name: str, x: Tensor, p: int) -> tuple[Tensor, Tensor]:
    n = x.shape[0]

    def mean_loss(theta: Tensor) -> Tensor:
        return loss_fn(name, x, theta.expand(n, p)).mean()

    theta0 = torch.zeros(p, dtype=DTYPE)
    H = torch.autograd.functional.hessian(mean_loss, theta0)
    (g,) = torch.autograd.grad(mean_loss(theta0.requires_grad_(True)), theta0)
    theta = theta0.detach() - torch.linalg.solve(H, g)  # exact: the loss is quadratic in theta
    rows = theta.expand(n, p).clone().requires_grad_(True)  # per-example copies of theta
    (G,) = torch.autograd.grad(loss_fn(name, x, rows).sum(), rows)  # per-example gradients
    assert G.mean(0).abs().max() < 1e-8  # we are at the minimum
    Hinv = torch.linalg.inv(H)
    cov = Hinv @ (G.T @ G / n) @ Hinv / n
    return theta, cov.diagonal().sqrt()


def analytic_theta(cov: Tensor) -> Tensor:
    prec = torch.linalg.inv(cov)
    return torch.cat([-prec.reshape(-1), prec @ M])


@pytest.mark.parametrize("name", ["ism", "ssm", "ssm_vr", "dsm", "ncsn"])
def test_minimiser_is_the_analytic_score(name: str) -> None:
    if name == "ncsn":  # one linear score per level; each must be the smoothed score
        target = torch.cat([analytic_theta(S + s**2 * torch.eye(D, dtype=DTYPE)) for s in SIGMAS])
    elif name == "dsm":
        target = analytic_theta(S + 0.5**2 * torch.eye(D, dtype=DTYPE))
    else:
        target = analytic_theta(S)
    theta, se = fit_and_standard_errors(name, data(), len(target))
    assert ((theta - target).abs() < 5 * se).all(), (theta - target) / se
    # ... and the bound is tight enough to see a wrong answer: a precision off by 1/3
    assert ((analytic_theta(S * 1.5) - analytic_theta(S)).abs()[:4] > 5 * se[:4]).all()


def s1(x: Tensor) -> Tensor:
    return -(x - M) @ P + 0.5 * torch.sin(2 * x)


def energy(x: Tensor) -> Tensor:
    return 0.5 * (x**2).sum(1) + 0.3 * torch.log(torch.cosh(x[:, 0] + 2 * x[:, 1]))


def s2(x: Tensor) -> Tensor:
    """Score of an energy-based model, -grad E by autograd, keeping the graph."""
    with torch.enable_grad():
        x = x if x.requires_grad else x.detach().requires_grad_(True)
        return -torch.autograd.grad(energy(x).sum(), x, create_graph=True)[0]


def _mean_is_zero(diff: Tensor) -> None:
    """|mean| < 5 standard errors of the mean of i.i.d. per-example values."""
    assert diff.mean().abs() < 5 * diff.std() / math.sqrt(len(diff)), diff.mean()


def test_ism_is_fisher_divergence_up_to_a_constant() -> None:
    # Hyvärinen (2005): ISM(s) = FD(s) - 1/2 E||grad log p||^2, so the data constant cancels
    # in ISM(s1) - ISM(s2) = FD(s1) - FD(s2), for any two scores.
    x = data()
    ism = implicit_score_matching(s1, x, reduction="none") - implicit_score_matching(
        s2, x, reduction="none"
    )
    fd = fisher_divergence(s1, true_score, x, reduction="none") - fisher_divergence(
        s2, true_score, x, reduction="none"
    )
    _mean_is_zero(ism - fd)
    # the constant itself: ISM(s1) - FD(s1) = -1/2 E||grad log p||^2 = -tr(P)/2
    gap = implicit_score_matching(s1, x, reduction="none") - fisher_divergence(
        s1, true_score, x, reduction="none"
    )
    _mean_is_zero(gap + P.trace() / 2)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian"])
@pytest.mark.parametrize("vr", [False, True])
def test_sliced_expectation_is_implicit(kind: str, vr: bool) -> None:
    x = data(4000)
    gen = torch.Generator().manual_seed(2)
    for score in (s1, s2):
        ssm = sliced_score_matching(
            score, x, n_projections=2, kind=kind, variance_reduction=vr, generator=gen,
            reduction="none",
        )  # fmt: skip
        _mean_is_zero(ssm - implicit_score_matching(score, x, reduction="none"))


def test_dsm_is_fisher_divergence_to_the_smoothed_law_up_to_a_constant() -> None:
    # Vincent (2011): DSM_sigma(s) = FD(s, grad log p_sigma) + const; compare differences of
    # two scores, each side averaged over its own independent samples (se of a difference).
    sigma, n = 0.5, 20000
    x = data(n, seed=3)
    smooth = S + sigma**2 * torch.eye(D, dtype=DTYPE)
    x_noisy = M + torch.randn(n, D, generator=torch.Generator().manual_seed(4), dtype=DTYPE) @ (
        torch.linalg.cholesky(smooth).T
    )

    def smooth_score(y: Tensor) -> Tensor:
        return -(y - M) @ torch.linalg.inv(smooth)

    gen = torch.Generator().manual_seed(5)
    dsm = denoising_score_matching(s1, x, sigma, generator=gen, reduction="none")
    gen = torch.Generator().manual_seed(5)  # same noise for both scores
    dsm = dsm - denoising_score_matching(s2, x, sigma, generator=gen, reduction="none")
    fd = fisher_divergence(s1, smooth_score, x_noisy, reduction="none") - fisher_divergence(
        s2, smooth_score, x_noisy, reduction="none"
    )
    se = math.sqrt(dsm.var().item() / n + fd.var().item() / n)
    assert (dsm.mean() - fd.mean()).abs() < 5 * se


def test_noise_conditional_weighting_is_sigma_squared() -> None:
    x = data(16)
    one = noise_conditional_score_matching(
        lambda y, s: s1(y), x, torch.tensor([0.3], dtype=DTYPE),
        generator=torch.Generator().manual_seed(0), reduction="none",
    )  # fmt: skip
    dsm = denoising_score_matching(s1, x, 0.3, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(one.mean(), 0.3**2 * dsm)


def test_losses_backpropagate_to_the_model_and_run_without_grad() -> None:
    x = data(64).to(torch.float32)
    net = torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2))
    losses: list[Callable[[], Tensor]] = [
        lambda: implicit_score_matching(net, x),
        lambda: sliced_score_matching(net, x, n_projections=3),
        lambda: denoising_score_matching(net, x, 0.1),
        lambda: noise_conditional_score_matching(lambda y, s: net(y) / s[:, None], x, SIGMAS),
    ]
    for loss in losses:
        net.zero_grad()
        value = loss()
        assert value.shape == () and value.dtype == torch.float32
        value.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
        with torch.no_grad():
            assert not loss().requires_grad


def test_errors_teach() -> None:
    x = data(4)
    with pytest.raises(ValueError, match="one positive finite noise level"):
        denoising_score_matching(s1, x, 0.0)
    with pytest.raises(ValueError, match="1-D tensor of noise levels"):
        noise_conditional_score_matching(lambda y, s: y, x, torch.tensor(1.0))
    with pytest.raises(ValueError, match="positive and finite"):
        noise_conditional_score_matching(lambda y, s: y, x, torch.tensor([1.0, -1.0]))
    with pytest.raises(ValueError, match="n_projections"):
        sliced_score_matching(s1, x, n_projections=0)
    with pytest.raises(ValueError, match="kind"):
        sliced_score_matching(s1, x, kind="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="reduction"):
        implicit_score_matching(s1, x, reduction="sum")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="shaped like x"):
        denoising_score_matching(lambda y: y[:, :1], x, 0.1)
    with pytest.raises(TypeError, match=r"torch\.Tensor"):
        fisher_divergence(s1, s1, [[0.0, 1.0]])  # type: ignore[arg-type]
