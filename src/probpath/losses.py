r"""Training objectives, one plain function per formula.

Sections (later ones are added next to these, one definition each):

* **Score matching** -- fit :math:`s_\theta(x) \approx \nabla_x \log p(x)` without knowing
  :math:`p`: the Fisher divergence (the target when :math:`\nabla\log p` is known), implicit
  score matching, sliced score matching, denoising score matching at one noise level and
  the noise-conditional (NCSN) objective over several levels.
* **Flow matching** -- regress a velocity field on the conditional velocity of a Gaussian
  path, :func:`conditional_flow_matching` (Lipman et al. 2023).
* **Diffusion (DDPM)** -- :math:`L_\text{simple}` and every term of the ELBO of the DDPM
  chain (decoder :math:`L_0`, the KL terms :math:`L_i`, the prior :math:`L_T`), whose sum
  bounds the NLL in nats.
* **Score SDE** -- continuous-time denoising score matching with t ~ U(t_min, 1) and the
  weight sigma(t)^2 or the likelihood weight g(t)^2, :func:`score_sde_loss`.

Conventions. Data ``x`` has shape ``(batch, ...)``. An *unconditional* score is a callable
``score(x) -> tensor shaped like x``; the *noise-conditional* score of
:func:`noise_conditional_score_matching` is ``score(x, sigma)`` with ``sigma`` of shape
``(batch,)``. Any callable works: a network, a closed form, or the score of an energy-based
model computed by autograd, ``lambda x: -torch.autograd.grad(E(x).sum(), x,
create_graph=True)[0]`` (create the graph so the loss can be back-propagated to ``E``'s
parameters). Every loss returns the batch mean, or per-example values with
``reduction="none"``; all squared norms sum over every non-batch dimension.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from probpath.divergence import ProbeKind, exact_divergence, hutchinson_divergence, sample_probe
from probpath.paths import DiscreteSchedule, GaussianPath

__all__ = [
    "ddpm_decoder_nll",
    "ddpm_kl_term",
    "ddpm_nll_bound",
    "ddpm_prior_kl",
    "ddpm_simple_loss",
    "denoising_score_matching",
    "fisher_divergence",
    "implicit_score_matching",
    "noise_conditional_score_matching",
    "score_sde_loss",
    "sliced_score_matching",
]

Reduction = Literal["mean", "none"]
Score = Callable[[Tensor], Tensor]


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (batch, ...), got {type(x).__name__}.")
    if x.dim() < 1 or x.shape[0] == 0:
        raise ValueError(f"x must have a non-empty leading batch dimension, got {tuple(x.shape)}.")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating-point tensor, got {x.dtype}.")


def _check_out(out: Tensor, x: Tensor, what: str = "score(x)") -> Tensor:
    if not isinstance(out, Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"{what} must return a tensor shaped like x {tuple(x.shape)}, got {shape}; "
            "a score is a gradient with respect to x."
        )
    return out


def _sqnorm(v: Tensor) -> Tensor:
    """Squared Euclidean norm of each batch element, shape (batch,)."""
    return v.reshape(v.shape[0], -1).pow(2).sum(1)


def _reduce(per_example: Tensor, reduction: Reduction) -> Tensor:
    if reduction == "mean":
        return per_example.mean()
    if reduction == "none":
        return per_example
    raise ValueError(f"reduction must be 'mean' or 'none', got {reduction!r}.")


def _dsm(score_value: Tensor, eps: Tensor, sigma: Tensor) -> Tensor:
    r"""Per-example :math:`\tfrac12\|s + \varepsilon/\sigma\|^2`; ``sigma`` is (batch,) or 0-d."""
    sigma = sigma.reshape(-1, *([1] * (eps.dim() - 1))) if sigma.dim() == 1 else sigma
    return 0.5 * _sqnorm(score_value + eps / sigma)


# --------------------------------------------------------------------------- score matching


def fisher_divergence(
    score: Score, target_score: Score, x: Tensor, *, reduction: Reduction = "mean"
) -> Tensor:
    r"""Fisher divergence :math:`\tfrac12\,\mathbb{E}_{p}\|s_\theta(x) - \nabla_x\log p(x)\|^2`.

    The objective score matching approximates when :math:`\nabla\log p` is unknown (lecture
    notes, "Fisher divergence"); use it directly when the target score is known in closed
    form (tests, toy densities, distillation). ``x`` are samples from :math:`p`.

    Example:
        >>> x = torch.randn(8, 2)
        >>> fisher_divergence(lambda x: -x, lambda x: -x, x)
        tensor(0.)
    """
    _check_x(x)
    diff = _check_out(score(x), x) - _check_out(target_score(x), x, "target_score(x)")
    return _reduce(0.5 * _sqnorm(diff), reduction)


def implicit_score_matching(score: Score, x: Tensor, *, reduction: Reduction = "mean") -> Tensor:
    r"""Implicit score matching :math:`\mathbb{E}_p\big[\operatorname{tr}\nabla_x s_\theta(x)
    + \tfrac12\|s_\theta(x)\|^2\big]`.

    Equals the Fisher divergence minus the data constant
    :math:`\tfrac12\mathbb{E}_p\|\nabla\log p\|^2`, by integration by parts (Hyvärinen 2005,
    Theorem 1; lecture notes, "Score matching" theorem). The trace of the score's Jacobian
    (the Hessian of :math:`\log p_\theta`) is exact,
    :func:`probpath.divergence.exact_divergence`: ``d`` backward passes, so keep ``d`` small
    or use :func:`sliced_score_matching`. The graph is kept when gradients are enabled, so
    ``loss.backward()`` reaches the score's parameters.

    Example:
        >>> x = torch.randn(4, 3)
        >>> ism = implicit_score_matching(lambda x: -x, x, reduction="none")  # tr = -3
        >>> torch.allclose(ism, -3.0 + 0.5 * (x**2).sum(1))
        True
    """
    _check_x(x)
    out, trace = exact_divergence(score, x, create_graph=torch.is_grad_enabled())
    return _reduce(trace + 0.5 * _sqnorm(out), reduction)


def sliced_score_matching(
    score: Score,
    x: Tensor,
    *,
    n_projections: int = 1,
    kind: ProbeKind = "rademacher",
    variance_reduction: bool = False,
    generator: torch.Generator | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Sliced score matching :math:`\mathbb{E}_{p,v}\big[v^\top\nabla_x(v^\top s_\theta(x))
    + \tfrac12 (v^\top s_\theta(x))^2\big]`.

    Song et al. (2019), *Sliced Score Matching*, eq. (7): implicit score matching along random
    directions :math:`v` with :math:`\mathbb{E}[vv^\top] = I`, one backward pass whatever the
    dimension (:func:`probpath.divergence.hutchinson_divergence`). Its expectation over
    :math:`v` equals :func:`implicit_score_matching`. With ``variance_reduction=True`` the
    second term is replaced by its expectation :math:`\tfrac12\|s_\theta(x)\|^2` (SSM-VR,
    eq. (8)). ``n_projections`` directions per example are averaged (the batch is repeated,
    so still one forward and one backward pass).

    Args:
        score: ``score(x)`` shaped like ``x``.
        x: data samples, shape ``(batch, ...)``.
        n_projections: directions per example, >= 1.
        kind: ``"rademacher"`` or ``"gaussian"`` directions
            (:func:`probpath.divergence.sample_probe`).
        variance_reduction: use the SSM-VR form.
        generator: ``torch.Generator`` for the directions.
        reduction: ``"mean"`` or ``"none"`` (shape ``(batch,)``).

    Example:
        >>> x = torch.randn(4, 3)
        >>> g = torch.Generator().manual_seed(0)
        >>> ssm = sliced_score_matching(lambda x: -x, x, variance_reduction=True, generator=g,
        ...                             reduction="none")  # v^T (-I) v = -3 for Rademacher v
        >>> torch.allclose(ssm, -3.0 + 0.5 * (x**2).sum(1))
        True
    """
    _check_x(x)
    if not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"n_projections must be a positive int, got {n_projections!r}.")
    batch = x.shape[0]
    xs = x.repeat(n_projections, *([1] * (x.dim() - 1)))  # (n_projections * batch, ...)
    v = sample_probe(xs, kind, generator=generator)
    out, vjv = hutchinson_divergence(score, xs, v, create_graph=torch.is_grad_enabled())
    if variance_reduction:
        second = 0.5 * _sqnorm(out)
    else:
        second = 0.5 * (out * v).reshape(out.shape[0], -1).sum(1).pow(2)
    per_example = (vjv + second).reshape(n_projections, batch).mean(0)
    return _reduce(per_example, reduction)


def denoising_score_matching(
    score: Score,
    x: Tensor,
    sigma: float | Tensor,
    *,
    generator: torch.Generator | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Denoising score matching at one noise level,
    :math:`\tfrac12\,\mathbb{E}\|s_\theta(x + \sigma\varepsilon) + \varepsilon/\sigma\|^2`.

    Vincent (2011), eq. (8) with :math:`q_\sigma(\tilde x\mid x) = \mathcal N(x, \sigma^2 I)`,
    whose score is :math:`-(\tilde x - x)/\sigma^2 = -\varepsilon/\sigma`. Equals the Fisher
    divergence to the *smoothed* density :math:`p_\sigma = p * \mathcal N(0, \sigma^2 I)`
    plus a constant, so the minimiser is :math:`\nabla\log p_\sigma`, not
    :math:`\nabla\log p` (for Gaussian data :math:`\mathcal N(m, S)`: the score of
    :math:`\mathcal N(m, S + \sigma^2 I)`). ``score`` is unconditional, ``score(x)``.

    Example:
        >>> x = torch.zeros(3, 2)  # point mass at 0: p_sigma = N(0, sigma^2 I)
        >>> g = torch.Generator().manual_seed(0)
        >>> denoising_score_matching(lambda x: -x / 0.25, x, 0.5, generator=g)
        tensor(0.)
    """
    _check_x(x)
    sigma_t = torch.as_tensor(sigma, dtype=x.dtype, device=x.device)
    if sigma_t.dim() != 0 or not bool(sigma_t > 0) or not bool(torch.isfinite(sigma_t)):
        raise ValueError(
            f"sigma must be one positive finite noise level, got {sigma!r}; for several levels "
            "use noise_conditional_score_matching."
        )
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    out = _check_out(score(x + sigma_t * eps), x)
    return _reduce(_dsm(out, eps, sigma_t), reduction)


def noise_conditional_score_matching(
    score: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    sigmas: Tensor,
    *,
    generator: torch.Generator | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""NCSN objective: denoising score matching over noise levels, weighted by
    :math:`\lambda(\sigma) = \sigma^2`,

    .. math:: \mathbb{E}_{\sigma\sim U\{\sigma_1..\sigma_L\}}\ \tfrac12\sigma^2\,
              \mathbb{E}\|s_\theta(x + \sigma\varepsilon, \sigma) + \varepsilon/\sigma\|^2
              = \mathbb{E}\ \tfrac12\|\sigma s_\theta(\tilde x, \sigma) + \varepsilon\|^2.

    Song & Ermon (2019), *Generative Modeling by Estimating Gradients of the Data
    Distribution*, eqs. (5)-(6); lecture notes, "NCSN objective". One level is drawn
    uniformly per example (an unbiased estimate of the average over levels); the weight
    makes every level's term of order one. ``score(x_noisy, sigma)`` receives ``sigma`` of
    shape ``(batch,)``; its minimiser at each level is :math:`\nabla\log p_\sigma`. With a
    single level this is :math:`\sigma^2` times :func:`denoising_score_matching`.

    Example:
        >>> x = torch.zeros(4, 2)  # point mass at 0: the smoothed score is -x / sigma^2
        >>> sigmas = torch.tensor([1.0, 0.5, 0.25])  # powers of two: exact arithmetic
        >>> noise_conditional_score_matching(lambda x, s: -x / s[:, None] ** 2, x, sigmas)
        tensor(0.)
    """
    _check_x(x)
    if not isinstance(sigmas, Tensor) or sigmas.dim() != 1 or sigmas.numel() == 0:
        raise ValueError("sigmas must be a 1-D tensor of noise levels (sigma_1, ..., sigma_L).")
    if not bool((sigmas > 0).all()) or not bool(torch.isfinite(sigmas).all()):
        raise ValueError(f"sigmas must be positive and finite, got {sigmas.tolist()}.")
    sigmas = sigmas.to(dtype=x.dtype, device=x.device)
    eps = torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    idx = torch.randint(len(sigmas), (x.shape[0],), generator=generator, device=x.device)
    sigma = sigmas[idx]
    x_noisy = x + sigma.reshape(-1, *([1] * (x.dim() - 1))) * eps
    out = _check_out(score(x_noisy, sigma), x, "score(x, sigma)")
    return _reduce(sigma.pow(2) * _dsm(out, eps, sigma), reduction)


# --------------------------------------------------------------------------- diffusion (DDPM)
#
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


def _pad(c: Tensor, x: Tensor) -> Tensor:
    c = c.to(dtype=x.dtype, device=x.device)
    return c.reshape(c.shape + (1,) * (x.dim() - c.dim()))


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
    _check_x(x0)
    i = torch.randint(1, schedule.T + 1, (x0.shape[0],), generator=generator)
    mean_coef, var = schedule.marginal(i)
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    x_i = _pad(mean_coef, x0) * x0 + _pad(var.sqrt(), x0) * eps
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
    _check_x(x0)
    abar = schedule.alphas_cumprod[-1].to(dtype=x0.dtype, device=x0.device)
    d = x0[0].numel()
    return 0.5 * (abar * _sqnorm(x0) - d * abar - d * torch.log1p(-abar))


def _gaussian_kl(mu_q: Tensor, var_q: Tensor, mu_p: Tensor, var_p: Tensor) -> Tensor:
    """KL(N(mu_q, var_q I) || N(mu_p, var_p I)) per example; variances of shape (batch,)."""
    d = mu_q[0].numel()
    ratio = var_q / var_p
    return 0.5 * (d * (ratio - 1 - torch.log(ratio)) + _sqnorm(mu_q - mu_p) / var_p)


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
    _check_x(x0)
    idx = _steps(i, x0.shape[0])
    if idx.is_floating_point() or not bool(((idx >= 2) & (idx <= schedule.T)).all()):
        raise ValueError(
            f"the KL terms run over i = 2..T = 2..{schedule.T}, got {i}; "
            "i = 1 is the decoder term (ddpm_decoder_nll)"
        )
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    mean_coef, var = schedule.marginal(idx)
    x_i = _pad(mean_coef, x0) * x0 + _pad(var.sqrt(), x0) * noise
    eps = _chain_call(eps_model, x_i, idx, schedule.T)
    x0_hat = (x_i - _pad(var.sqrt(), x0) * eps) / _pad(mean_coef, x0)
    mu_q, var_q = schedule.posterior(idx, x_i, x0)
    mu_p, _ = schedule.posterior(idx, x_i, x0_hat)
    var_p = _model_variance(schedule, idx, variance).to(x0)
    return _gaussian_kl(mu_q, var_q, mu_p, var_p)


def _log_normal_bin(lo: Tensor, hi: Tensor) -> Tensor:
    """log(Phi(hi) - Phi(lo)) for standardised edges lo < hi, stable in both tails."""
    flip = lo > 0  # upper tail: Phi(hi) - Phi(lo) = Phi(-lo) - Phi(-hi)
    a, b = torch.where(flip, -hi, lo), torch.where(flip, -lo, hi)
    log_b, log_a = torch.special.log_ndtr(b), torch.special.log_ndtr(a)
    return log_b + torch.log(-torch.expm1((log_a - log_b).clamp(max=0.0)))


def ddpm_decoder_nll(
    eps_model: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    schedule: DiscreteSchedule,
    *,
    decoder: Decoder = "gaussian",
    noise: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""Decoder term :math:`L_0 = -\log p_\theta(x_0\mid x_1)` at one draw of
    :math:`x_1`; shape ``(batch,)``, nats.

    :math:`p_\theta(x_0 \mid x_1)` has mean :math:`\mu_\theta(x_1, 1)` and variance
    :math:`\sigma_1^2 = \beta_1` (:math:`\tilde\beta_1 = 0`, so the posterior variance cannot
    serve here). ``"gaussian"``: the density :math:`\mathcal N(x_0; \mu_\theta, \beta_1 I)`,
    for continuous data. ``"discretized"``: Ho et al. (2020, eq. 13) for 8-bit data scaled
    to [-1, 1], the probability of the bin :math:`[x - 1/255, x + 1/255]` of each
    coordinate, the outer bins extended to :math:`\pm\infty`; then the ELBO bounds a
    discrete NLL.

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
    _check_x(x0)
    if decoder not in ("gaussian", "discretized"):
        raise ValueError(f"decoder must be 'gaussian' or 'discretized', got {decoder!r}")
    if decoder == "discretized" and not bool(((x0 >= -1) & (x0 <= 1)).all()):
        raise ValueError("the discretized decoder needs 8-bit data scaled to [-1, 1]")
    if noise is None:
        noise = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    one = torch.ones(x0.shape[0], dtype=torch.long)
    mean_coef, var = schedule.marginal(one)
    x1 = _pad(mean_coef, x0) * x0 + _pad(var.sqrt(), x0) * noise
    eps = _chain_call(eps_model, x1, one, schedule.T)
    beta1 = schedule.betas[0].to(x0)
    mu = (x1 - beta1 / var.sqrt().to(x0)[0] * eps) / (1 - beta1).sqrt()
    if decoder == "gaussian":
        log_p = -0.5 * ((x0 - mu) ** 2 / beta1 + torch.log(2 * torch.pi * beta1))
    else:
        std, half = beta1.sqrt(), 1.0 / 255
        lo = torch.where(x0 <= -1 + 1e-6, -torch.inf, (x0 - half - mu) / std)
        hi = torch.where(x0 >= 1 - 1e-6, torch.inf, (x0 + half - mu) / std)
        log_p = _log_normal_bin(lo, hi)
    return -log_p.reshape(x0.shape[0], -1).sum(1)


def ddpm_nll_bound(
    eps_model: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    schedule: DiscreteSchedule,
    *,
    decoder: Decoder = "gaussian",
    variance: Variance = "beta_tilde",
    generator: torch.Generator | None = None,
) -> Tensor:
    r"""The negative ELBO :math:`L_0 + \sum_{i=2}^T L_i + L_T \ge -\log p_\theta(x_0)`,
    nats per example, shape ``(batch,)``.

    Every term is evaluated (T network calls on the batch), each :math:`L_i` at one draw of
    :math:`x_i`, so the result is an unbiased estimate of the bound; divide by
    ``dim * ln 2`` for bits/dim (:func:`probpath.metrics.bits_per_dim`).

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
    _check_x(x0)
    total = ddpm_decoder_nll(eps_model, x0, schedule, decoder=decoder, generator=generator)
    for i in range(2, schedule.T + 1):
        total = total + ddpm_kl_term(
            eps_model, x0, schedule, i, variance=variance, generator=generator
        )
    return total + ddpm_prior_kl(x0, schedule)


# --------------------------------------------------------------------------- flow matching


def conditional_flow_matching(
    velocity: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    path: GaussianPath,
    *,
    x1: Tensor | None = None,
    t: Tensor | None = None,
    t_min: float = 0.0,
    generator: torch.Generator | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Conditional flow matching, :math:`\mathbb{E}_{t, x_0, x_1}
    \|u_\theta(x_t, t) - (\alpha'(t) x_0 + \sigma'(t) x_1)\|^2`,
    :math:`x_t = \alpha(t) x_0 + \sigma(t) x_1`.

    The seeds' flow-matching objective :math:`\mathbb{E}_t\mathbb{E}_{x\sim p_t}
    \|u(x, t) - u_\theta(x, t)\|^2` (lecture 13) needs the unknown marginal field u. Lipman
    et al. (2023, Theorem 2) replace it by the conditional velocity of
    :meth:`~probpath.paths.GaussianPath.conditional_velocity` given the pair
    :math:`(x_0, x_1)`: both objectives differ by a constant, since
    :math:`u(x, t) = \mathbb{E}[\alpha' x_0 + \sigma' x_1 \mid x_t = x]`, so the minimiser is
    the marginal field, the probability-flow ODE's drift. Our clock has the data x_0 at
    t = 0 and the source x_1 at t = 1; the seeds' base time 0 is our t = 1.

    Args:
        velocity: ``velocity(x_t, t) -> tensor like x_t``, ``t`` of shape (batch,).
        x0: data batch, shape (batch, ...).
        path: the Gaussian path (its schedule gives alpha, sigma and their derivatives).
        x1: source samples paired with ``x0`` (default: fresh N(0, I) draws). Any sampler
            works, e.g. minibatch-OT-paired noise (:func:`probpath.coupling.ot_coupling`)
            or samples of a second data set: with ``CondOTSchedule()`` (sigma_min = 0) the
            path is then the interpolant :math:`(1 - t) x_0 + t x_1` between two samples, a
            data-to-data flow (Tong et al. 2024, I-CFM with sigma = 0; Liu et al. 2023).
        t: times of shape (batch,) (default uniform on ``[t_min, 1]``).
        t_min: lower end of the default times (the VP velocity is infinite at t = 0).
        generator: for the default ``x1`` and ``t``.
        reduction: ``"mean"`` or ``"none"`` (shape (batch,)).

    Example:
        >>> from probpath.paths import CondOTSchedule, GaussianPath
        >>> x0, x1 = torch.zeros(4, 2), torch.ones(4, 2)  # the straight field x1 - x0 = 1
        >>> path = GaussianPath(CondOTSchedule())
        >>> conditional_flow_matching(lambda x, t: torch.ones_like(x), x0, path, x1=x1)
        tensor(0.)
    """
    _check_x(x0)
    if x1 is None:
        x1 = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    elif x1.shape != x0.shape:
        raise ValueError(f"x1 must be shaped like x0 {tuple(x0.shape)}, got {tuple(x1.shape)}.")
    if t is None:
        if not 0.0 <= t_min < 1.0:
            raise ValueError(f"t_min must lie in [0, 1), got {t_min}.")
        t = torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype, device=x0.device)
        if t_min > 0:
            t = t_min + (1 - t_min) * t
        s = path.schedule(t)  # t in [0, 1] by construction: skip the path's check
    elif not isinstance(t, Tensor) or t.shape != (x0.shape[0],):
        shape_t = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"t must be a tensor of shape (batch,) = ({x0.shape[0]},), got {shape_t}.")
    else:
        s = path.marginal_params(t.to(x0.dtype))
    shape = (-1,) + (1,) * (x0.dim() - 1)  # (batch,) coefficients against (batch, ...)
    alpha, sigma, d_alpha, d_sigma = (
        c.reshape(shape) for c in (s.alpha, s.sigma, s.d_alpha, s.d_sigma)
    )
    x_t = torch.addcmul(alpha * x0, sigma, x1)
    target = torch.addcmul(d_alpha * x0, d_sigma, x1)  # GaussianPath.conditional_velocity
    out = _check_out(velocity(x_t, t), x0, "velocity(x_t, t)")
    # the fused squared error (one autograd node) keeps the training step lean
    if reduction == "mean":
        return torch.nn.functional.mse_loss(out, target, reduction="sum") / x0.shape[0]
    return _reduce(_sqnorm(out - target), reduction)


# --------------------------------------------------------------------------- score SDE

WEIGHTINGS = ("sigma2", "likelihood")


def score_sde_loss(
    score: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    path: GaussianPath,
    *,
    t_min: float = 1e-3,
    weighting: str = "sigma2",
    generator: torch.Generator | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Continuous-time denoising score matching of score SDEs,

    .. math:: \mathbb{E}_{t\sim U(t_\min, 1)}\ \lambda(t)\ \mathbb{E}_{x_0, \varepsilon}\,
              \tfrac12\|s_\theta(x_t, t) + \varepsilon/\sigma(t)\|^2,\qquad
              x_t = \alpha(t) x_0 + \sigma(t)\varepsilon .

    Song et al. 2021, eq. 7 (the score of :math:`p_t(x_t\mid x_0)` is
    :math:`-\varepsilon/\sigma`). ``weighting="sigma2"``: :math:`\lambda = \sigma^2`, the
    paper's choice, under which the loss is :math:`\tfrac12\|\sigma s_\theta +
    \varepsilon\|^2` (an eps-regression; NCSN's weight in continuous time).
    ``"likelihood"``: :math:`\lambda = g(t)^2`, for which the loss bounds the KL divergence
    and hence the NLL (Song et al. 2021b, *Maximum likelihood training of score-based
    diffusion models*, Thm. 1); its estimate has a larger variance near t_min (no importance
    sampling of t here).

    Args:
        score: ``score(x_t, t)``, ``t`` of shape (batch,).
        x0: data, shape (batch, ...); path: the Gaussian path.
        t_min: lower end of the uniform times (the score blows up as sigma -> 0).
        weighting: ``"sigma2"`` or ``"likelihood"``.
        generator: for t and eps; reduction: ``"mean"`` or ``"none"``.

    Example:
        >>> from probpath.paths import VPSchedule
        >>> path = GaussianPath(VPSchedule())
        >>> x0 = torch.zeros(4, 2)  # point mass: the score of p_t is -x / sigma^2
        >>> score = lambda x, t: -x / path.schedule(t).sigma[:, None] ** 2
        >>> score_sde_loss(score, x0, path).abs().item() < 1e-10
        True
    """
    _check_x(x0)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}.")
    if not 0.0 < t_min < 1.0:
        raise ValueError(f"t_min must lie in (0, 1): the score is singular at t = 0, got {t_min}.")
    t = t_min + (1 - t_min) * torch.rand(
        x0.shape[0], generator=generator, dtype=x0.dtype, device=x0.device
    )
    x_t, eps = path.sample(x0, t, generator=generator)
    s = path.schedule(t)
    out = _check_out(score(x_t, t), x0, "score(x_t, t)")
    weight = s.sigma**2 if weighting == "sigma2" else s.diffusion_sq
    return _reduce(weight * _dsm(out, eps, s.sigma), reduction)
