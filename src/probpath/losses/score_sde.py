"""Score SDE: continuous-time denoising score matching."""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor

from probpath._batch import check_state
from probpath._schedules import evaluate
from probpath.losses._common import Reduction, _check_out, _dsm, _reduce
from probpath.paths import GaussianPath, Schedule
from probpath.samplers.dpm_solver import logsnr_times

__all__ = ["WEIGHTINGS", "score_sde_loss"]

WEIGHTINGS = ("sigma2", "likelihood")
IS_BINS = 256
"""Segments of the importance-sampling proposal of t (piecewise uniform, equal log-SNR steps)."""


@functools.lru_cache(maxsize=16)
def _logsnr_grid(schedule: Schedule, t_min: float) -> Tensor:
    """``IS_BINS + 1`` increasing times from t_min to 1, equally spaced in log-SNR (float64)."""
    return logsnr_times(schedule, IS_BINS, t_min=t_min, t_max=1.0).flip(0)


def score_sde_loss(
    score: Callable[[Tensor, Tensor], Tensor],
    x0: Tensor,
    path: GaussianPath,
    *,
    t_min: float = 1e-3,
    weighting: str = "sigma2",
    importance_sampling: bool = False,
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
    diffusion models*, Thm. 1).

    ``importance_sampling=True`` draws t from a proposal :math:`q(t) \propto g^2/\sigma^2
    = -\tfrac{d}{dt}\log\mathrm{SNR}(t)` (every Gaussian path: :math:`g^2 = (\sigma^2)'
    - 2(\alpha'/\alpha)\sigma^2`) and weighs each term by :math:`1/((1 - t_\min)\,q(t))`:
    the estimator keeps the expectation of the uniform one and, with the likelihood weight,
    becomes :math:`\tfrac12\|\sigma s_\theta + \varepsilon\|^2` times a near-constant,
    the low-variance form of Song et al. 2021b, Sec. 5, and of Kingma et al. 2021 (VDM,
    eq. 17: t uniform in log-SNR). q is exact to sampling: uniform on each of
    :data:`IS_BINS` segments of equal log-SNR width (times tabulated once per schedule).

    Args:
        score: ``score(x_t, t)``, ``t`` of shape (batch,).
        x0: data, shape (batch, ...); path: the Gaussian path.
        t_min: lower end of the uniform times (the score blows up as sigma -> 0).
        weighting: ``"sigma2"`` or ``"likelihood"``.
        importance_sampling: t from q above instead of uniform (needs a finite log-SNR at
            t_min and at 1, and a hashable schedule).
        generator: for t and eps; reduction: ``"mean"`` or ``"none"``.

    Example:
        >>> from probpath.paths import VPSchedule
        >>> path = GaussianPath(VPSchedule())
        >>> x0 = torch.zeros(4, 2)  # point mass: the score of p_t is -x / sigma^2
        >>> score = lambda x, t: -x / path.schedule(t).sigma[:, None] ** 2
        >>> score_sde_loss(score, x0, path).abs().item() < 1e-10
        True
    """
    check_state(x0)
    if weighting not in WEIGHTINGS:
        raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}.")
    if not 0.0 < t_min < 1.0:
        raise ValueError(f"t_min must lie in (0, 1): the score is singular at t = 0, got {t_min}.")
    u = torch.rand(x0.shape[0], generator=generator, dtype=x0.dtype, device=x0.device)
    if importance_sampling:  # segment k = floor(u K), uniform inside it: q = 1 / (K width_k)
        grid = _logsnr_grid(path.schedule, t_min).to(x0)
        u = u * IS_BINS
        k = u.long().clamp_(max=IS_BINS - 1)
        width = grid[k + 1] - grid[k]
        t = torch.addcmul(grid[k], u - k, width)
        inv_q = width * (IS_BINS / (1 - t_min))  # 1 / ((1 - t_min) q(t))
    else:
        t = t_min + (1 - t_min) * u
    s = evaluate(path.schedule, t)  # t in [t_min, 1] by construction: no check
    eps = torch.randn(x0.shape, generator=generator, dtype=x0.dtype, device=x0.device)
    c = s.expand_like(x0)
    x_t = torch.addcmul(c.alpha * x0, c.sigma, eps)  # GaussianPath.sample
    out = _check_out(score(x_t, t), x0, "score(x_t, t)")
    weight = s.sigma**2 if weighting == "sigma2" else s.diffusion_sq
    if importance_sampling:
        weight = weight * inv_q
    return _reduce(weight * _dsm(out, eps, s.sigma), reduction)
