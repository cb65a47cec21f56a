r"""Training objectives, one plain function per formula.

Sections (later ones are added next to these, one definition each):

* **Score matching** -- fit :math:`s_\theta(x) \approx \nabla_x \log p(x)` without knowing
  :math:`p`: the Fisher divergence (the target when :math:`\nabla\log p` is known), implicit
  score matching, sliced score matching, denoising score matching at one noise level and
  the noise-conditional (NCSN) objective over several levels.

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

__all__ = [
    "denoising_score_matching",
    "fisher_divergence",
    "implicit_score_matching",
    "noise_conditional_score_matching",
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
