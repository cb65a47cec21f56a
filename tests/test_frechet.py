"""The Fréchet distance against closed forms and scipy's matrix square root.

Tolerances: the closed forms are evaluated in float64 through eigendecompositions, so
agreement is to float64 rounding of numbers of order 10 (1e-9 relative).
"""

import numpy as np
import pytest
import scipy.linalg
import torch

from probpath.metrics import frechet_distance, gaussian_frechet, gaussian_stats


def _spd(f: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    a = torch.randn(f, f, generator=g, dtype=torch.float64)
    return a @ a.T + 0.1 * torch.eye(f, dtype=torch.float64)


def test_commuting_covariances_have_the_closed_form():
    # Sigma_a = Q diag(a) Q^T, Sigma_b = Q diag(b) Q^T commute: the cross term is
    # Tr(Q diag(sqrt(a b)) Q^T), so d^2 = |mu_a - mu_b|^2 + sum_i (sqrt a_i - sqrt b_i)^2
    g = torch.Generator().manual_seed(0)
    q, _ = torch.linalg.qr(torch.randn(5, 5, generator=g, dtype=torch.float64))
    a = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.01], dtype=torch.float64)
    b = torch.tensor([4.0, 1.0, 0.25, 3.0, 9.0], dtype=torch.float64)
    mu_a, mu_b = torch.randn(5, generator=g).double(), torch.randn(5, generator=g).double()
    expected = (mu_a - mu_b).square().sum() + (a.sqrt() - b.sqrt()).square().sum()
    got = gaussian_frechet(mu_a, q @ torch.diag(a) @ q.T, mu_b, q @ torch.diag(b) @ q.T)
    assert got == pytest.approx(float(expected), rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_agrees_with_scipy_sqrtm_and_is_symmetric(seed):
    ca, cb = _spd(6, seed), _spd(6, seed + 10)
    mu_a, mu_b = torch.zeros(6, dtype=torch.float64), torch.ones(6, dtype=torch.float64)
    root = scipy.linalg.sqrtm(ca.numpy() @ cb.numpy())  # Tr sqrt(A B) = Tr sqrt(A^1/2 B A^1/2)
    expected = 6.0 + np.trace(ca.numpy() + cb.numpy()) - 2 * np.trace(root).real
    ab = gaussian_frechet(mu_a, ca, mu_b, cb)
    assert ab == pytest.approx(expected, rel=1e-9)
    assert gaussian_frechet(mu_b, cb, mu_a, ca) == pytest.approx(ab, rel=1e-9)


def test_feature_sets_zero_shift_and_moments():
    g = torch.Generator().manual_seed(3)
    a = torch.randn(200, 4, generator=g, dtype=torch.float64) @ _spd(4, 5)
    b = torch.randn(150, 4, generator=g, dtype=torch.float64)
    assert abs(frechet_distance(a, a)) < 1e-9  # identical sets
    shift = torch.tensor([1.0, -2.0, 0.5, 0.0], dtype=torch.float64)
    assert frechet_distance(a, a + shift) == pytest.approx(5.25, rel=1e-9)  # |shift|^2
    # translating both sets changes nothing; the statistics are numpy's mean and cov
    assert frechet_distance(a + shift, b + shift) == pytest.approx(frechet_distance(a, b))
    mu, cov = gaussian_stats(a)
    np.testing.assert_allclose(cov.numpy(), np.cov(a.numpy(), rowvar=False), rtol=1e-12)
    np.testing.assert_allclose(mu.numpy(), a.numpy().mean(0), rtol=1e-12)
    assert frechet_distance(b, a) == pytest.approx(frechet_distance(a, b), rel=1e-9)


def test_rank_deficient_sets_stay_finite_and_non_negative():
    g = torch.Generator().manual_seed(4)
    a, b = torch.randn(5, 16, generator=g), torch.randn(7, 16, generator=g)  # n < F
    d = frechet_distance(a, b)
    assert np.isfinite(d) and d >= 0


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        (torch.zeros(1, 3), torch.zeros(4, 3), "at least two rows"),
        (torch.zeros(4, 3), torch.zeros(4, 2), "feature sets"),
        (torch.full((3, 2), float("nan")), torch.zeros(3, 2), "NaN"),
    ],
)
def test_errors(a, b, message):
    with pytest.raises(ValueError, match=message):
        frechet_distance(a, b)
