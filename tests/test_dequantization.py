"""Dequantization and the discrete bits/dim bound against closed forms."""

import itertools
import math

import pytest
import torch

from probpath.data import Standardizer, to_centered
from probpath.dequantization import Dequantizer, discrete_nll
from probpath.metrics import bits_per_dim


@pytest.fixture(autouse=True)
def _float64():
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(old)


TRANSFORMS = ["centered", "logit", "standardized"]


def _dequantizer(levels: int, transform: str, d: int, lam: float = 1e-6) -> Dequantizer:
    """A dequantizer of ``transform``; ``"standardized"`` gets an affine map of D columns
    with different shifts and scales (rows (batch, d) only)."""
    if transform != "standardized":
        return Dequantizer(levels, transform, lam=lam)
    std = Standardizer(tuple(0.3 * j for j in range(d)), tuple(0.5 + j for j in range(d)))
    return Dequantizer(levels, transform, standardizer=std)


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("levels", [2, 17, 256])
def test_round_trip_and_cubes(transform: str, levels: int) -> None:
    """Every dequantized draw stays in its pixel's cube; the centred map is the images' own."""
    dq = _dequantizer(levels, transform, d=levels)
    x = torch.arange(levels).reshape(1, -1)
    g = torch.Generator().manual_seed(0)
    z = dq.dequantize(x.expand(50, -1), generator=g)
    assert torch.equal(dq.to_pixels(z), x.expand(50, -1))  # every draw stays in its cube
    assert torch.equal(dq.to_pixels(dq.center(x)), x)
    if transform == "centered":
        assert torch.equal(dq.center(x), to_centered(x, levels, torch.float64))
    v = torch.rand(20, levels, generator=g) * levels - 0.5  # the cubes cover [-1/2, K - 1/2)
    torch.testing.assert_close(dq.inverse(dq.forward(v)), v)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_log_det_is_the_jacobian(transform: str) -> None:
    """log|det dz/dv| against autograd's diagonal Jacobian (the map acts per coordinate)."""
    dq = _dequantizer(16, transform, d=3, lam=0.05)
    v = torch.rand(4, 3, generator=torch.Generator().manual_seed(1)) * 16 - 0.5
    v.requires_grad_(True)
    z = dq.forward(v)
    (dz_dv,) = torch.autograd.grad(z.sum(), v)
    torch.testing.assert_close(dq.log_det(z.detach()), dz_dv.log().sum(1))


@pytest.mark.parametrize("transform", TRANSFORMS)
@pytest.mark.parametrize("levels", [17, 256])
def test_uniform_model_scores_log2_levels_bits_per_dim(transform: str, levels: int) -> None:
    """A model uniform on the unit cube y' = y/K has P(x) = K^-D exactly: log2 K bits/dim.

    In model space its density is p_y'(y') |dy'/dz| = exp(-log_det(z)) K^-D (v = K y' - 1/2),
    with no error term. Images (7, 2, 3, 3); the standardized map takes rows (7, 18).
    """
    d = 2 * 3 * 3
    dq = _dequantizer(levels, transform, d, lam=1e-3)
    shape = (7, d) if transform == "standardized" else (7, 2, 3, 3)

    def log_prob(z: torch.Tensor) -> torch.Tensor:
        return -dq.log_det(z) - d * math.log(levels)  # p_y'(y') = 1 on [0, 1)^D

    x = torch.randint(0, levels, shape, generator=torch.Generator().manual_seed(2))
    for k in (1, 4):
        nll = discrete_nll(log_prob, x, dq, k=k, generator=torch.Generator().manual_seed(3))
        torch.testing.assert_close(bits_per_dim(nll, d), torch.full((7,), math.log2(levels)))


def _table(levels: int, d: int, seed: int) -> torch.Tensor:
    """A random law P on {0..K-1}^d, as a flat table of K^d probabilities."""
    w = torch.rand(levels**d, generator=torch.Generator().manual_seed(seed)) ** 3
    return w / w.sum()


def _flat_index(x: torch.Tensor, levels: int) -> torch.Tensor:
    powers = levels ** torch.arange(x.shape[1] - 1, -1, -1)
    return (x * powers).sum(1)


@pytest.mark.parametrize("transform", TRANSFORMS)
def test_piecewise_constant_model_scores_the_exact_entropy(transform: str) -> None:
    """The dequantized version of P, p(v) = P(x) on x's unit cube, makes Jensen's bound tight:
    -log P(x) exactly for every x (any k), so its mean under P is the entropy H(P)."""
    levels, d = 4, 3
    dq = _dequantizer(levels, transform, d, lam=0.01)
    table = _table(levels, d, seed=4)

    def log_prob(z: torch.Tensor) -> torch.Tensor:
        pixels = dq.to_pixels(z)
        return table[_flat_index(pixels, levels)].log() - dq.log_det(z)  # p_v = P(x), unit cubes

    every = torch.cartesian_prod(*[torch.arange(levels)] * d)  # all K^D pixel vectors
    exact = -table[_flat_index(every, levels)].log()
    for k in (1, 3):
        nll = discrete_nll(log_prob, every, dq, k=k, generator=torch.Generator().manual_seed(5))
        torch.testing.assert_close(nll, exact)
    entropy = float(-(table * table.log()).sum())
    weights = table[_flat_index(every, levels)]
    assert float((weights * nll).sum()) == pytest.approx(entropy, rel=1e-12)


def test_importance_weighted_bound_decreases_in_k_and_stays_above_the_true_nll() -> None:
    """A factorised Gaussian in model space has the exact discrete law
    P(x) = prod_d [Phi(b_d) - Phi(a_d)] over the cube edges (centered transform, D = 2). The
    k-sample bound is >= -log P(x) in expectation over the draws (Jensen), and its mean
    decreases in k towards it.

    Tolerance: each mean is over n = 4000 draws; its standard error (measured here from the
    draws themselves) sets the allowance, 4 standard errors."""
    levels, n = 8, 4000
    dq = Dequantizer(levels)
    mu, sd = torch.tensor([0.2, -0.3]), torch.tensor([0.3, 0.5])
    normal = torch.distributions.Normal(mu, sd)

    def log_prob(z: torch.Tensor) -> torch.Tensor:
        return normal.log_prob(z).sum(1)

    x = torch.tensor([[3, 4]]).expand(n, 2)
    lo, hi = dq.forward(x.double() - 0.5), dq.forward(x.double() + 0.5)
    true_nll = -torch.log(normal.cdf(hi) - normal.cdf(lo)).sum(1)[0]
    means = []
    for k in (1, 4, 32):
        b = discrete_nll(log_prob, x, dq, k=k, generator=torch.Generator().manual_seed(k))
        mean, se = float(b.mean()), float(b.std() / math.sqrt(n))
        assert mean > float(true_nll) - 4 * se
        means.append((mean, se))
    for (m1, s1), (m2, s2) in itertools.pairwise(means):
        assert m2 < m1 + 4 * math.hypot(s1, s2)
    assert means[0][0] - float(true_nll) > 4 * means[0][1]  # k = 1 is visibly loose here
    assert means[-1][0] - float(true_nll) < means[0][0] - float(true_nll)


def test_errors() -> None:
    with pytest.raises(ValueError, match="levels"):
        Dequantizer(1)
    with pytest.raises(ValueError, match="transform"):
        Dequantizer(4, "affine")
    with pytest.raises(ValueError, match="needs a standardizer"):
        Dequantizer(4, "standardized")
    std = Standardizer((0.0, 0.0), (1.0, 2.0))
    with pytest.raises(ValueError, match="only it takes one"):
        Dequantizer(4, standardizer=std)
    with pytest.raises(ValueError, match=r"rows \(batch, 2\)"):
        Dequantizer(4, "standardized", standardizer=std).center(
            torch.zeros(3, 1, 2, dtype=torch.long)
        )
    dq = Dequantizer(4)
    with pytest.raises(ValueError, match=r"0\.\.3"):
        dq.center(torch.tensor([[4]]))
    with pytest.raises(TypeError, match="integer"):
        dq.center(torch.tensor([[1.0]]))
    with pytest.raises(ValueError, match="positive int"):
        discrete_nll(lambda z: z.sum(1), torch.zeros(2, 2, dtype=torch.long), dq, k=0)
    with pytest.raises(ValueError, match="shape"):
        discrete_nll(lambda z: z, torch.zeros(2, 2, dtype=torch.long), dq)
