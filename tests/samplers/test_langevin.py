"""Langevin samplers against closed forms: the stationary law of a correlated Gaussian
(with ULA's known O(eta) bias), MALA's exactness, and annealed Langevin's mixture weights.

All statistics use the *final* states of independent parallel chains, so the effective
sample size is exactly the number of chains (no autocorrelation correction is needed);
bounds are 5 standard errors of those i.i.d. samples.
"""

from __future__ import annotations

import math

import pytest
import torch

from probpath.samplers import annealed_langevin, langevin, mala

DTYPE = torch.float64
M = torch.tensor([1.0, -0.5], dtype=DTYPE)
S = torch.tensor([[1.0, 0.6], [0.6, 0.5]], dtype=DTYPE)  # eigenvalues 1.4 and 0.1
P = torch.linalg.inv(S)
LAM, U = torch.linalg.eigh(S)
N_CHAINS = 4000
ETA = 0.1  # stable below 4 * min eigenvalue = 0.4; ULA inflates the 0.1-mode variance by 4/3


def gaussian_score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return -(x - M) @ P


def gaussian_log_prob(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return -0.5 * ((x - M) @ P * (x - M)).sum(1)  # unnormalised on purpose


def _start(seed: int) -> torch.Tensor:
    """Chains started off target, from N(M + 1, 2 S)."""
    z = torch.randn(N_CHAINS, 2, generator=torch.Generator().manual_seed(seed), dtype=DTYPE)
    return M + 1.0 + z @ torch.linalg.cholesky(2 * S).T


def _check_gaussian_law(x: torch.Tensor, variances: torch.Tensor) -> None:
    """x ~ N(M, U diag(variances) U^T): check in the eigenbasis of S, where coordinates are
    independent. Mean: se = sqrt(var / n). Variance of a normal sample: se = var sqrt(2 / n).
    Covariance of independent normals: se = sqrt(var_1 var_2 / n)."""
    n = x.shape[0]
    z = (x - M) @ U
    mean, var = z.mean(0), z.var(0)
    cov = ((z[:, 0] - mean[0]) * (z[:, 1] - mean[1])).mean()
    assert ((mean.abs() / (variances / n).sqrt()) < 5).all(), mean
    assert ((var - variances).abs() < 5 * variances * math.sqrt(2 / n)).all(), (var, variances)
    assert cov.abs() < 5 * (variances.prod() / n).sqrt(), cov


def test_ula_stationary_law_includes_its_closed_form_bias() -> None:
    # ULA on N(0, s^2): x' = (1 - eta / (2 s^2)) x + sqrt(eta) eps, whose stationary variance
    # v solves v = (1 - eta/(2 s^2))^2 v + eta, i.e. v = s^2 / (1 - eta / (4 s^2)); per
    # eigen-direction of S for a correlated Gaussian. 200 steps contract the slowest mode's
    # mean offset by (1 - eta / 2.8)^200 < 1e-3 and its variance excess by the square of
    # that, both far below one standard error, so the chains have forgotten their start.
    ula_var = LAM / (1 - ETA / (4 * LAM))
    # The test can fail: the bias (4/3 on the small mode) is > 5 standard errors.
    assert ((ula_var - LAM).abs() > 5 * ula_var * math.sqrt(2 / N_CHAINS)).any()
    gen = torch.Generator().manual_seed(1)
    x, nfe = langevin(gaussian_score, _start(0), torch.zeros(200), step_size=ETA, generator=gen)
    assert nfe == 200
    _check_gaussian_law(x, ula_var)


def test_mala_is_unbiased_where_ula_is_not() -> None:
    # Same step and start as the ULA test; with acceptance near 0.9 the contraction per step
    # is about (1 - 0.9 eta / 2.8), so 200 steps forget the start to < 2e-3 of it.
    gen = torch.Generator().manual_seed(2)
    x, nfe, acc = mala(gaussian_log_prob, _start(3), torch.zeros(200), step_size=ETA, generator=gen)
    assert nfe == 201
    assert acc.shape == (N_CHAINS,) and 0.5 < acc.mean() < 1.0  # rejections happen, not all
    _check_gaussian_law(x, LAM)


# Song & Ermon (2019), sec. 3.2 / Fig. 3: p = 1/5 N((-5,-5), I) + 4/5 N((5,5), I), levels
# geometric from 20 to 1 (L = 10), T = 100 steps per level, eps = 0.1.
W = torch.tensor([0.2, 0.8], dtype=DTYPE)
MUS = torch.tensor([[-5.0, -5.0], [5.0, 5.0]], dtype=DTYPE)


def mixture_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Score of p * N(0, sigma^2 I): responsibilities times the component scores (all
    components share the variance 1 + sigma^2, so their normalisers cancel)."""
    var = 1.0 + sigma[:, None] ** 2
    d = x[:, None, :] - MUS  # (batch, 2 components, 2)
    r = torch.softmax(W.log() - 0.5 * (d**2).sum(-1) / var, dim=1)
    return -(r[..., None] * d).sum(1) / var


def test_annealed_langevin_recovers_mixture_weights() -> None:
    n = 2000
    sigmas = torch.logspace(math.log10(20.0), 0.0, 10, dtype=DTYPE)
    gen = torch.Generator().manual_seed(4)
    x0 = sigmas[0] * torch.randn(n, 2, generator=gen, dtype=DTYPE)
    x, nfe = annealed_langevin(
        mixture_score, x0, sigmas, step_size=0.1, n_steps_per_level=100, generator=gen
    )
    assert nfe == 10 * 100 + 1
    left = (x.sum(1) < 0).to(DTYPE).mean()
    # binomial standard error of the fraction nearer the weight-0.2 mean
    assert abs(left - 0.2) < 5 * math.sqrt(0.2 * 0.8 / n), left
    # the contrast that makes the test meaningful: plain Langevin at the smallest level,
    # from the same start, keeps the initial half/half split between the two modes.
    x, _ = langevin(mixture_score, x0, torch.ones(100, dtype=DTYPE), step_size=0.1, generator=gen)
    assert abs((x.sum(1) < 0).to(DTYPE).mean() - 0.2) > 5 * math.sqrt(0.2 * 0.8 / n)


def test_denoising_step_is_tweedie() -> None:
    # data N(0, 1): p_sigma = N(0, 1 + sigma^2), E[x0 | x] = x / (1 + sigma^2) = x + sigma^2 s
    sigmas = torch.tensor([2.0, 1.0], dtype=DTYPE)
    gen = torch.Generator().manual_seed(5)
    x0 = torch.randn(8, 3, generator=gen, dtype=DTYPE)

    def score(x: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return -x / (1 + s[:, None] ** 2)

    kw = {"step_size": 0.1, "n_steps_per_level": 3}
    x_raw, n_raw = annealed_langevin(
        score, x0, sigmas, denoise=False, generator=torch.Generator().manual_seed(0), **kw
    )
    x_den, n_den = annealed_langevin(
        score, x0, sigmas, generator=torch.Generator().manual_seed(0), **kw
    )
    assert (n_raw, n_den) == (6, 7)
    torch.testing.assert_close(x_den, x_raw / 2)


def test_annealed_step_sizes_follow_sigma_squared() -> None:
    # With a zero score each step adds sqrt(alpha_i) noise: the per-level increments have
    # variance alpha_i = eps sigma_i^2 / sigma_L^2 exactly; record them with the callback.
    sigmas = torch.tensor([4.0, 2.0, 1.0], dtype=DTYPE)
    states: list[torch.Tensor] = []
    x0 = torch.zeros(20000, 1, dtype=DTYPE)
    annealed_langevin(
        lambda x, s: torch.zeros_like(x),
        x0,
        sigmas,
        step_size=0.01,
        n_steps_per_level=1,
        denoise=False,
        generator=torch.Generator().manual_seed(6),
        callback=lambda k, x: states.append(x),
    )
    incr = torch.diff(torch.stack([x0, *states]), dim=0).var(dim=(1, 2))
    alphas = 0.01 * (sigmas / sigmas[-1]) ** 2
    assert (((incr - alphas) / alphas).abs() < 5 * math.sqrt(2 / 20000)).all(), incr


def test_gradient_flows_through_the_chain() -> None:
    # score -(x - mu): every chain's mean obeys m_{k+1} = m_k + eta/2 (mu - m_k), and the noise
    # does not depend on mu, so d x_K / d mu = 1 - (1 - eta/2)^K exactly for every chain.
    mu = torch.tensor([0.3, -0.2], dtype=DTYPE, requires_grad=True)
    x, _ = langevin(
        lambda x, t: mu - x,
        torch.zeros(5, 2, dtype=DTYPE),
        torch.zeros(10, dtype=DTYPE),
        step_size=0.2,
        generator=torch.Generator().manual_seed(7),
    )
    (grad,) = torch.autograd.grad(x.sum(), mu)
    torch.testing.assert_close(grad, torch.full((2,), 5 * (1 - 0.9**10), dtype=DTYPE))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_contract_reproducible_no_grad_callback(dtype: torch.dtype) -> None:
    x0 = torch.randn(6, 3, 2, dtype=dtype)  # any event shape
    ts = torch.zeros(4)
    calls: list[int] = []

    def score(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert t.shape == (x.shape[0],) and t.dtype == dtype
        return -x

    with torch.no_grad():
        a, _ = langevin(
            score,
            x0,
            ts,
            step_size=torch.tensor(0.1, dtype=dtype),
            generator=torch.Generator().manual_seed(0),
        )
        b, _ = langevin(
            score,
            x0,
            ts,
            step_size=torch.full((4,), 0.1, dtype=dtype),
            generator=torch.Generator().manual_seed(0),
            callback=lambda k, x: calls.append(k),
        )
        c, _, acc = mala(
            lambda x, t: -0.5 * (x**2).sum((1, 2)), x0, ts, step_size=0.1, callback=None
        )
    assert a.dtype == dtype and c.dtype == dtype and acc.shape == (6,)
    assert torch.equal(a, b) and calls == [0, 1, 2, 3]


def test_errors_teach() -> None:
    x = torch.zeros(3, 2)
    score = lambda x, t: -x  # noqa: E731
    with pytest.raises(ValueError, match="step_size must be positive"):
        langevin(score, x, torch.zeros(3), step_size=-1.0)
    with pytest.raises(ValueError, match="1-D tensor"):
        langevin(score, x, torch.zeros(()), step_size=0.1)
    with pytest.raises(ValueError, match="shaped like x"):
        langevin(lambda x, t: x[:, :1], x, torch.zeros(3), step_size=0.1)
    with pytest.raises(ValueError, match="strictly decreasing"):
        annealed_langevin(score, x, torch.tensor([1.0, 2.0]), step_size=0.1)
    with pytest.raises(ValueError, match="one log-density per chain"):
        mala(lambda x, t: x, x, torch.zeros(3), step_size=0.1)
    with pytest.raises(TypeError, match="floating-point"):
        langevin(score, torch.zeros(3, 2, dtype=torch.long), torch.zeros(3), step_size=0.1)


def test_mala_follows_a_changing_target() -> None:
    # ts switches the target from N(0, 5) to N(0, 1): log p is re-evaluated once at the switch
    # (nfe = 1 + 150 + 1) and the chains end in the new target; 100 steps at acceptance ~0.98
    # contract the old variance excess by (1 - 0.98 * 0.5 / 2)^200 < 1e-20.
    n = 3000
    x, nfe, _ = mala(
        lambda x, t: -0.5 * (x**2).sum(1) / (1 + t**2),
        torch.zeros(n, 1, dtype=DTYPE),
        torch.tensor([2.0] * 50 + [0.0] * 100, dtype=DTYPE),
        step_size=0.5,
        generator=torch.Generator().manual_seed(8),
    )
    assert nfe == 152
    assert abs(x.var() - 1.0) < 5 * math.sqrt(2 / n)
