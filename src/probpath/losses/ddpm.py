"""Diffusion (DDPM): L_simple and every term of the ELBO of the DDPM chain."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import torch
from torch import Tensor

from probpath._batch import check_state
from probpath._gaussian import gaussian_kl, gaussian_log_prob
from probpath._schedules import ScheduleOutput, evaluate
from probpath._time import pad_like
from probpath.losses._common import Reduction, _check_out, _reduce, _sqnorm
from probpath.losses._discretized import check_grid, discretized_gaussian_log_prob
from probpath.parametrize import eps_to_x0
from probpath.paths import DiscreteSchedule

__all__ = [
    "ddpm_decoder_nll",
    "ddpm_kl_term",
    "ddpm_nll_bound",
    "ddpm_nll_bounds",
    "ddpm_prior_kl",
    "ddpm_simple_loss",
    "discretized_gaussian_log_prob",
]

# The DDPM chain q(x_i | x_{i-1}) = N(sqrt(1 - beta_i) x_{i-1}, beta_i I), i = 1..T, is a
# :class:`probpath.paths.DiscreteSchedule`; the network is an eps-predictor ``eps_model(x, t)``
# called at the chain's times t = i / T with t of shape (batch,). The ELBO of the seeds
# (lecture on DDPM, "ELBO of gaussian diffusion model"; Ho et al. 2020, eq. 5) is
#
#     -log p(x_0) <= L_0 + sum_{i=2}^T L_i + L_T,
#     L_0 = -E_q log p(x_0 | x_1),   L_i = E_q KL(q(x_{i-1} | x_i, x_0) || p(x_{i-1} | x_i)),
#     L_T = KL(q(x_T | x_0) || N(0, I)).

Variance = Literal["beta", "beta_tilde"]
Decoder = Literal["gaussian", "discretized"]


def _chain_call(
    eps_model: Callable[[Tensor, Tensor], Tensor], x: Tensor, i: Tensor, T: int
) -> Tensor:
    """``eps_model(x, i / T)`` with t of shape (batch,), checked to be shaped like x."""
    t = (i.to(x.dtype) / T).expand(x.shape[0]).to(x.device)
    return _check_out(eps_model(x, t), x, "eps_model(x, t)")


def _noised(
    schedule: DiscreteSchedule, i: Tensor, x0: Tensor, noise: Tensor
) -> tuple[Tensor, ScheduleOutput]:
    """``x_i = alpha_i x_0 + sigma_i eps`` (``alpha_i^2 = abar_i``) and the chain's coefficients
    at ``t = i / T`` (``i`` of shape (batch,), validated by the caller)."""
    s = evaluate(schedule, i.to(device=x0.device, dtype=torch.float64) / schedule.T)
    return torch.addcmul(pad_like(s.alpha, x0) * x0, pad_like(s.sigma, x0), noise), s


def _denoised(
    eps_model: Callable[[Tensor, Tensor], Tensor],
    schedule: DiscreteSchedule,
    i: Tensor,
    x0: Tensor,
    noise: Tensor,
) -> tuple[Tensor, Tensor]:
    """``x_i`` and the model's ``x0_hat = (x_i - sigma_i eps_theta(x_i, i/T)) / alpha_i``."""
    x_i, s = _noised(schedule, i, x0, noise)
    return x_i, eps_to_x0(_chain_call(eps_model, x_i, i, schedule.T), x_i, s)


def _steps(i: int | Tensor, batch: int) -> Tensor:
    idx = torch.as_tensor(i)
    return idx.expand(batch) if idx.dim() == 0 else idx


def ddpm_simple_loss(
    eps_model: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    schedule: DiscreteSchedule,
    *,
    generator: torch.Generator | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r""":math:`L_\text{simple} = \mathbb E_{i\sim U\{1..T\},\,\varepsilon}\|\varepsilon -
    \varepsilon_\theta(\sqrt{\bar\alpha_i}x_0 + \sqrt{1-\bar\alpha_i}\,\varepsilon,\ i/T)\|^2`.

    Ho et al. (2020), eq. (14) and Algorithm 1; the seeds' "Simplified objective": the ELBO
    term :math:`L_i` without its weight. One step ``i`` is drawn per example.

    Example:
        >>> from probpath.paths import DiscreteSchedule, linear_betas
        >>> chain = DiscreteSchedule(linear_betas(10))
        >>> x0 = torch.zeros(4, 2)  # point mass at 0: E[eps | x_i] = x_i / sqrt(1 - abar_i)
        >>> oracle = lambda x, t: x / chain(t).sigma[:, None]
        >>> ddpm_simple_loss(oracle, x0, chain) < 1e-10
        tensor(True)
    """
    check_state(x0)
    i = torch.randint(1, schedule.T + 1, (x0.shape[0],), generator=generator, device=x0.device)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    x_i, _ = _noised(schedule, i, x0, eps)
    return _reduce(_sqnorm(eps - _chain_call(eps_model, x_i, i, schedule.T)), reduction)


def ddpm_prior_kl(x0: Tensor, schedule: DiscreteSchedule) -> Tensor:
    r"""Prior term :math:`L_T = \mathrm{KL}(\mathcal N(\sqrt{\bar\alpha_T}x_0,
    (1-\bar\alpha_T)I)\,\|\,\mathcal N(0, I))`, per example, shape ``(batch,)``.

    Closed form :math:`\tfrac12\sum_j [\bar\alpha_T x_{0j}^2 + (1-\bar\alpha_T) - 1 -
    \log(1-\bar\alpha_T)]`; no parameters, so DDPM does not train it.

    Example:
        >>> from probpath.paths import DiscreteSchedule, linear_betas
        >>> ddpm_prior_kl(torch.zeros(1, 3), DiscreteSchedule(linear_betas(1000))) < 1e-4
        tensor([True])
    """
    check_state(x0)
    abar = schedule.alphas_cumprod[-1].to(dtype=x0.dtype, device=x0.device)
    return gaussian_kl(abar.sqrt() * x0, -torch.expm1(schedule.log_alphas_cumprod[-1]), 0.0, 1.0)


def _model_variance(schedule: DiscreteSchedule, i: Tensor, variance: Variance) -> Tensor:
    if variance == "beta":
        return schedule.betas[i - 1]
    if variance == "beta_tilde":
        return schedule.posterior_coefficients(i)[2]
    raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")


def ddpm_kl_term(
    eps_model: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    schedule: DiscreteSchedule,
    i: int | Tensor,
    *,
    variance: Variance = "beta_tilde",
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""One ELBO term :math:`L_i = \mathrm{KL}(q(x_{i-1}\mid x_i, x_0)\,\|\,
    p_\theta(x_{i-1}\mid x_i))`, i = 2..T, at one draw of :math:`x_i`; shape ``(batch,)``.

    :math:`q = \mathcal N(\tilde\mu_i(x_i, x_0), \tilde\beta_i I)` (Ho et al. 2020, eq. 6-7),
    :math:`p_\theta = \mathcal N(\mu_\theta, \sigma_i^2 I)` with :math:`\mu_\theta =
    \tfrac{1}{\sqrt{\alpha_i}}(x_i - \tfrac{\beta_i}{\sqrt{1-\bar\alpha_i}}\varepsilon_\theta)`
    and :math:`\sigma_i^2 = \tilde\beta_i` (``"beta_tilde"``, the seeds' choice) or
    :math:`\beta_i`. The KL between the Gaussians is exact; with
    :math:`\sigma_i^2 = \tilde\beta_i` it is the seeds' weighted form
    :math:`\frac{(1-\alpha_i)^2}{2\tilde\beta_i\alpha_i(1-\bar\alpha_i)}
    \|\varepsilon - \varepsilon_\theta\|^2`. ``i`` is an int or one step per example;
    ``noise`` is the :math:`\varepsilon` of :math:`x_i` (drawn with ``generator`` if not given).

    Example:
        >>> from probpath.paths import DiscreteSchedule, linear_betas
        >>> chain = DiscreteSchedule(linear_betas(10))
        >>> x0, noise = torch.zeros(1, 2), torch.ones(1, 2)
        >>> exact = lambda x, t: torch.ones_like(x)  # predicts this very eps
        >>> ddpm_kl_term(exact, x0, chain, 5, noise=noise)
        tensor([0.])
    """
    check_state(x0)
    idx = _steps(i, x0.shape[0])
    if idx.is_floating_point() or not bool(((idx >= 2) & (idx <= schedule.T)).all()):
        raise ValueError(
            f"the KL terms run over i = 2..T = 2..{schedule.T}, got {i}; "
            "i = 1 is the decoder term (ddpm_decoder_nll)"
        )
    return _kl_terms(eps_model, x0, schedule, idx, (variance,), noise, generator)[variance]


def _kl_terms(
    eps_model: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    schedule: DiscreteSchedule,
    idx: Tensor,
    variances: Sequence[Variance],
    noise: Tensor | None,
    generator: torch.Generator | None,
) -> dict[str, Tensor]:
    """``L_i`` at one draw of ``x_i`` for each reverse variance: one network call, the two
    posterior means, then one KL per variance (only ``sigma_i^2`` differs)."""
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    x_i, x0_hat = _denoised(eps_model, schedule, idx, x0, noise)
    mu_q, var_q = schedule.posterior(idx, x_i, x0)
    mu_p, _ = schedule.posterior(idx, x_i, x0_hat)
    return {
        v: gaussian_kl(mu_q, var_q, mu_p, _model_variance(schedule, idx, v).to(x0))
        for v in variances
    }


def ddpm_decoder_nll(
    eps_model: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    schedule: DiscreteSchedule,
    *,
    decoder: Decoder = "gaussian",
    levels: int = 256,
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Decoder term :math:`L_0 = -\log p_\theta(x_0\mid x_1)` at one draw of
    :math:`x_1`; shape ``(batch,)``, nats.

    :math:`p_\theta(x_0 \mid x_1)` has mean :math:`\mu_\theta(x_1, 1)` and variance
    :math:`\sigma_1^2 = \beta_1` (:math:`\tilde\beta_1 = 0`, so the posterior variance cannot
    serve here). ``"gaussian"``: the density :math:`\mathcal N(x_0; \mu_\theta, \beta_1 I)`,
    for continuous data. ``"discretized"``: data with K = ``levels`` grey levels in model space
    (:func:`probpath.data.to_centered`: pixel k at :math:`2k/(K-1) - 1`), each coordinate
    scored by the probability of its bin :math:`[x - w/2, x + w/2]`, :math:`w = 2/(K-1)`
    (:func:`probpath.data.level_width`), the outer bins extended to :math:`\pm\infty`; the
    bins of all K levels cover the line, so :math:`p_\theta(x_0 \mid x_1)` is a probability
    over the pixels and the ELBO bounds their discrete NLL. K = 256 is Ho et al. (2020,
    eq. 13).

    Example:
        >>> from probpath.paths import DiscreteSchedule, linear_betas
        >>> chain = DiscreteSchedule(linear_betas(1000))
        >>> x0, zero = torch.tensor([[1.0, -1.0]]), lambda x, t: torch.zeros_like(x)
        >>> nll = ddpm_decoder_nll(zero, x0, chain, decoder="discretized",
        ...                        noise=torch.zeros(1, 2))
        >>> import math
        >>> # mu = x_0 (x_1 = sqrt(alpha_1) x_0, eps = 0); edge bins reach +-inf, so each
        >>> # coordinate keeps Phi((1/255) / sqrt(beta_1)) = Phi(0.392) = 0.6525
        >>> round(nll.item(), 3), round(-2 * math.log(0.6525), 3)
        (0.854, 0.854)
    """
    check_state(x0)
    if decoder not in ("gaussian", "discretized"):
        raise ValueError(f"decoder must be 'gaussian' or 'discretized', got {decoder!r}")
    if decoder == "discretized":
        check_grid(x0, levels)
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    one = torch.ones(x0.shape[0], dtype=torch.long)
    x1, x0_hat = _denoised(eps_model, schedule, one, x0, noise)
    mu, _ = schedule.posterior(one, x1, x0_hat)  # mu_theta(x_1, 1) = x0_hat: beta~_1 = 0
    beta1 = schedule.betas[0].to(x0)
    if decoder == "gaussian":
        return -gaussian_log_prob(x0, mu, beta1)
    return -discretized_gaussian_log_prob(x0, mu, beta1.sqrt(), levels)


def ddpm_nll_bound(
    eps_model: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    schedule: DiscreteSchedule,
    *,
    decoder: Decoder = "gaussian",
    levels: int = 256,
    variance: Variance = "beta_tilde",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""The negative ELBO :math:`L_0 + \sum_{i=2}^T L_i + L_T \ge -\log p_\theta(x_0)`,
    nats per example, shape ``(batch,)``, for the reverse variance ``variance``.

    Every term is evaluated (T network calls on the batch), each :math:`L_i` at one draw of
    :math:`x_i`, so the result is an unbiased estimate of the bound; divide by
    ``dim * ln 2`` for bits/dim (:func:`probpath.metrics.bits_per_dim`).
    :func:`ddpm_nll_bounds` gives it for several variances from the same network calls.

    Example:
        >>> from probpath.paths import DiscreteSchedule, linear_betas
        >>> chain = DiscreteSchedule(linear_betas(50, 1e-3, 0.2))
        >>> import math
        >>> # data N(0, I): E[eps | x_i] = sqrt(1 - abar_i) x_i, and with sigma_i^2 = beta_i
        >>> # the model is the exact reverse chain: the bound is the entropy log(2 pi e) = 2.84
        >>> oracle = lambda x, t: chain(t).sigma[:, None] * x
        >>> x0 = torch.randn(4000, 2, generator=torch.Generator().manual_seed(0))
        >>> g = torch.Generator().manual_seed(1)
        >>> bound = ddpm_nll_bound(oracle, x0, chain, variance="beta", generator=g)
        >>> abs(bound.mean().item() - math.log(2 * math.pi * math.e)) < 0.1  # 3 std errors
        True
    """
    bounds = ddpm_nll_bounds(
        eps_model, x0, schedule, decoder=decoder, levels=levels, variances=(variance,),
        generator=generator,
    )  # fmt: skip
    return bounds[variance]


def ddpm_nll_bounds(
    eps_model: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    schedule: DiscreteSchedule,
    *,
    decoder: Decoder = "gaussian",
    levels: int = 256,
    variances: Sequence[Variance] = ("beta", "beta_tilde"),
    generator: torch.Generator | None = None,
) -> dict[str, Tensor]:
    r"""The negative ELBO of :func:`ddpm_nll_bound` for each reverse variance, in one pass.

    The network calls, the draws of :math:`x_i` and the decoder and prior terms are shared:
    only the KL of each :math:`L_i` depends on :math:`\sigma_i^2` (T network calls in all,
    not T per variance). Each value is a valid bound on the NLL of the model sampled with
    that variance; ``min`` over the variances of their means is the tightest one to report
    (with the exact eps-predictor of 2-D data and T = 1000, ``beta`` is within its standard
    error of the true NLL and ``beta_tilde`` ~0.9 nats above it, tests/models/test_ddpm.py).
    Returns ``{variance: bound}``, each of shape (batch,); with the same ``generator`` each
    equals :func:`ddpm_nll_bound` for that variance alone.

    Example:
        >>> from probpath.paths import DiscreteSchedule, linear_betas
        >>> chain = DiscreteSchedule(linear_betas(20))
        >>> zero = lambda x, t: torch.zeros_like(x)
        >>> b = ddpm_nll_bounds(zero, torch.zeros(3, 2), chain)
        >>> sorted(b), b["beta"].shape
        (['beta', 'beta_tilde'], torch.Size([3]))
    """
    check_state(x0)
    if not variances or any(v not in ("beta", "beta_tilde") for v in variances):
        raise ValueError(f"variances must name 'beta' and/or 'beta_tilde', got {variances!r}")
    fixed = ddpm_decoder_nll(
        eps_model, x0, schedule, decoder=decoder, levels=levels, generator=generator
    )
    totals = {v: fixed for v in variances}
    for i in range(2, schedule.T + 1):  # one step for the whole batch: 0-dim coefficients
        terms = _kl_terms(eps_model, x0, schedule, torch.tensor(i), variances, None, generator)
        totals = {v: totals[v] + terms[v] for v in variances}
    prior = ddpm_prior_kl(x0, schedule)
    return {v: total + prior for v, total in totals.items()}
