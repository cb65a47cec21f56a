"""Score SDE: continuous-time denoising score matching."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from probpath.losses._common import Reduction, _check_out, _dsm, _reduce
from probpath.paths import GaussianPath
from probpath.samplers._common import check_state

__all__ = ["WEIGHTINGS", "score_sde_loss"]

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
    check_state(x0)
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
