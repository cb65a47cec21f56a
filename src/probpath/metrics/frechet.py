r"""The Fréchet distance between two sets of features, each summarised by a Gaussian.

For Gaussians :math:`N(\mu_a, \Sigma_a)` and :math:`N(\mu_b, \Sigma_b)` the squared
2-Wasserstein distance is (Dowson & Landau 1982; the statistic of Heusel et al. 2017's FID)

.. math:: d^2 = \lVert\mu_a - \mu_b\rVert^2 + \operatorname{Tr}\big(\Sigma_a + \Sigma_b
          - 2\,(\Sigma_a^{1/2}\,\Sigma_b\,\Sigma_a^{1/2})^{1/2}\big).

:func:`frechet_distance` fits the two Gaussians to feature sets (mean and unbiased
covariance) and evaluates :func:`gaussian_frechet` in float64 through two symmetric
eigendecompositions (no general matrix square root, so no complex parts to discard).
With the features of a classifier trained on the data (``probpath eval --judge``), this
is *not* the Inception FID: it is comparable only between numbers computed with the
same judge, and at the same sample size (its bias shrinks with n).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["frechet_distance", "gaussian_frechet", "gaussian_stats"]


def _psd_sqrt(cov: Tensor) -> Tensor:
    """The symmetric square root of a symmetric PSD matrix (negative rounding clamped)."""
    vals, vecs = torch.linalg.eigh(0.5 * (cov + cov.mT))
    return (vecs * vals.clamp(min=0).sqrt()) @ vecs.mT


def gaussian_stats(features: Tensor) -> tuple[Tensor, Tensor]:
    """Mean (F,) and unbiased covariance (F, F) of ``features`` (n, F), in float64.

    >>> mu, cov = gaussian_stats(torch.tensor([[0.0, 1.0], [2.0, 1.0]]))
    >>> mu.tolist(), cov.tolist()
    ([1.0, 1.0], [[2.0, 0.0], [0.0, 0.0]])
    """
    if features.ndim != 2 or len(features) < 2:
        raise ValueError(
            f"features must have shape (n >= 2, F), got {tuple(features.shape)}: a "
            "covariance needs at least two rows"
        )
    f = features.detach().to(torch.float64)
    if not bool(torch.isfinite(f).all()):
        raise ValueError("features hold NaN or inf values")
    return f.mean(0), torch.cov(f.mT)


def gaussian_frechet(mu_a: Tensor, cov_a: Tensor, mu_b: Tensor, cov_b: Tensor) -> float:
    r""":math:`\lVert\mu_a - \mu_b\rVert^2 + \operatorname{Tr}(\Sigma_a + \Sigma_b -
    2 (\Sigma_a^{1/2} \Sigma_b \Sigma_a^{1/2})^{1/2})` in float64.

    >>> eye = torch.eye(2, dtype=torch.float64)
    >>> gaussian_frechet(torch.zeros(2), eye, torch.ones(2), 4 * eye)  # 2 + (1 - 2)^2 * 2
    4.0
    """
    mu_a, mu_b = mu_a.to(torch.float64), mu_b.to(torch.float64)
    cov_a, cov_b = cov_a.to(torch.float64), cov_b.to(torch.float64)
    f = mu_a.shape[-1]
    if mu_b.shape != (f,) or cov_a.shape != (f, f) or cov_b.shape != (f, f):
        raise ValueError(
            f"need means (F,) and covariances (F, F) of one F, got {tuple(mu_a.shape)}, "
            f"{tuple(cov_a.shape)}, {tuple(mu_b.shape)}, {tuple(cov_b.shape)}"
        )
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    vals = torch.linalg.eigvalsh(0.5 * (middle + middle.mT))
    cross = vals.clamp(min=0).sqrt().sum()
    return float((mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross)


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """The Fréchet distance (squared, as FID reports it) between feature sets ``a`` (n, F)
    and ``b`` (m, F), each summarised by its mean and unbiased covariance
    (:func:`gaussian_stats`, :func:`gaussian_frechet`). Zero for identical sets; symmetric.

    >>> g = torch.Generator().manual_seed(0)
    >>> a = torch.randn(500, 3, generator=g, dtype=torch.float64)
    >>> frechet_distance(a, a) < 1e-10, round(frechet_distance(a, a + 1.0), 6)
    (True, 3.0)
    """
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1]:
        raise ValueError(
            f"a and b must be feature sets (n, F) and (m, F), got {tuple(a.shape)}, "
            f"{tuple(b.shape)}"
        )
    return gaussian_frechet(*gaussian_stats(a), *gaussian_stats(b.to(a.device)))
