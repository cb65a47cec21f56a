"""Score matching: Fisher divergence, implicit, sliced, denoising and noise-conditional."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from probpath._batch import check_state
from probpath.divergence import ProbeKind, exact_divergence, hutchinson_divergence, sample_probe
from probpath.losses._common import Reduction, Score, _check_out, _dsm, _reduce, _sqnorm

__all__ = [
    "denoising_score_matching",
    "fisher_divergence",
    "implicit_score_matching",
    "noise_conditional_score_matching",
    "sliced_score_matching",
]


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
    check_state(x)
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
    check_state(x)
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
    check_state(x)
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
    check_state(x)
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
    check_state(x)
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
