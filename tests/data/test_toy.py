"""The toy sets: seeding, labels, normalisation and entropy against closed forms."""

import math

import pytest
import torch

from probpath.data import TOY_ENTROPY, TOY_NAMES, sample_toy, toy_log_prob
from probpath.data._toy_density import (
    _log_2spirals,
    _log_moons,
    _log_pinwheel,
    _log_swissroll,
)
from probpath.data.toy import _8G_CENTERS

# cheaper settings of the numerical densities for the grid test: (function, nodes)
_REDUCED = {
    "moons": (_log_moons, 64),
    "swissroll": (_log_swissroll, 64),
    "2spirals": (_log_2spirals, 64),
    "pinwheel": (_log_pinwheel, 1024),
}
WITH_DENSITY = TOY_NAMES


@pytest.mark.parametrize("name", TOY_NAMES)
def test_seeded_and_global_rng_untouched(name):
    state = torch.get_rng_state()
    a = sample_toy(name, 64, generator=3)
    b = sample_toy(name, 64, generator=torch.Generator().manual_seed(3))
    c = sample_toy(name, 64, generator=4)
    assert torch.equal(torch.get_rng_state(), state)
    assert a.shape == (64, 2) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert sample_toy(name, 0, generator=0).shape == (0, 2)
    assert sample_toy(name, 3, generator=0, dtype=torch.float64).dtype == torch.float64


def test_bad_arguments():
    with pytest.raises(ValueError, match="8gaussians, checkerboard"):
        sample_toy("gaussians8", 3)
    with pytest.raises(ValueError, match="no labels"):
        sample_toy("swissroll", 3, labels=True)
    with pytest.raises(ValueError, match="unknown toy set"):
        toy_log_prob("pinwheels", torch.zeros(2, 2))
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        toy_log_prob("moons", torch.zeros(2, 3))
    with pytest.raises(TypeError):
        sample_toy("moons", 3, generator=1.5)  # type: ignore[arg-type]


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_density_integrates_to_one(name):
    # Midpoint rule on [-6, 6]^2 with h = 1/16; all mass lies within 6 (the outermost curve
    # is at radius <= 3.5, noise std <= 0.35, > 7 std away; pinwheel's |x| = 2|f| > 6 needs
    # f_0 > 6.7 std above its mean). For smooth densities the
    # rule's error is ~exp(-2 pi^2 (s / h)^2) (Poisson summation), s the smallest
    # smoothing scale (0.08 for rings, 0.1 for 2spirals): < 1e-13. Checkerboard: cell
    # edges (multiples of 2) fall on grid-cell edges, so the rule is exact. The quadrature
    # densities are mixtures of normalised kernels over the curve; 64 nodes per curve
    # suffice to test the kernels' normalisation (the default uses 512-2048). pinwheel's
    # density is a change of variables with a numerical inverse (1024 bracketing nodes
    # change it by < 1e-9); its sharper inner arms make the grid error larger but still
    # fast-decaying: 1.2e-5, 7e-7, 8e-8, 9e-9 at h = 1/8, 1/12, 1/16, 1/24.
    h = 1 / 16
    k = round(12 / h)
    g = -6 + h * (torch.arange(k, dtype=torch.float64) + 0.5)
    pts = torch.stack(torch.meshgrid(g, g, indexing="ij"), dim=-1).reshape(-1, 2)
    if name in _REDUCED:
        fn, nodes = _REDUCED[name]
        log_p = fn(pts, nodes)
    else:
        log_p = toy_log_prob(name, pts)
    assert abs((log_p.exp().sum() * h * h).item() - 1) < 1e-6


@pytest.mark.parametrize("name", WITH_DENSITY)
def test_entropy_matches_table(name):
    # TOY_ENTROPY (shared/toy-entropies.md) was computed by Monte Carlo with standard
    # error <= 0.01 and rounded to 3 decimals; our own estimate has standard error se.
    # The two independent errors combine: |ours - table| <= 5 sqrt(se^2 + 0.01^2) + 5e-4.
    n = 20_000 if name in ("8gaussians", "checkerboard", "rings", "circles") else 2_000
    x = sample_toy(name, n, generator=11, dtype=torch.float64)
    nll = -toy_log_prob(name, x)
    se = nll.std().item() / math.sqrt(n)
    table_se = 0.0 if name == "checkerboard" else 0.01
    assert abs(nll.mean().item() - TOY_ENTROPY[name]) <= 5 * math.hypot(se, table_se) + 5e-4


def test_8gaussians_entropy_within_5_se():
    # The tighter check the issue asks for, with our own standard error only (plus the
    # table's rounding, 5e-4): exact mixture density, 40k samples, se ~ 0.005.
    n = 40_000
    nll = -toy_log_prob("8gaussians", sample_toy("8gaussians", n, generator=5, dtype=torch.float64))
    se = nll.std().item() / math.sqrt(n)
    assert abs(nll.mean().item() - TOY_ENTROPY["8gaussians"]) <= 5 * se + 5e-4


def test_checkerboard_exact():
    # Uniform on 8 squares of area 2 x 2 (total 32): -log p = ln 32 exactly for every
    # sample, and moving a point by one square (2 along x) lands outside the support.
    x = sample_toy("checkerboard", 5000, generator=0, dtype=torch.float64)
    assert torch.allclose(-toy_log_prob("checkerboard", x), torch.tensor(math.log(32.0)).double())
    shifted = x + torch.tensor([2.0, 0.0], dtype=torch.float64)
    assert torch.isinf(toy_log_prob("checkerboard", shifted)).all()
    assert TOY_ENTROPY["checkerboard"] == math.log(32)


def _mean_bound(x):
    # 5 standard errors of a sample mean, per coordinate
    return 5 * x.std(0) / math.sqrt(len(x))


@pytest.mark.parametrize(
    ("name", "k"),
    [
        ("8gaussians", 8),
        ("pinwheel", 5),
        ("2spirals", 2),
        ("moons", 2),
        ("circles", 2),
        ("rings", 4),
    ],
)
def test_label_frequencies(name, k):
    # Labels are i.i.d. uniform over k classes: each count is Binomial(n, 1/k), within 5 sd.
    n = 4000
    _, y = sample_toy(name, n, generator=2, labels=True)
    counts = torch.bincount(y, minlength=k).double()
    assert len(counts) == k
    assert ((counts - n / k).abs() <= 5 * math.sqrt(n / k * (1 - 1 / k))).all()


def test_labels_match_closed_form_means():
    x, y = sample_toy("8gaussians", 8000, generator=1, labels=True, dtype=torch.float64)
    for c in range(8):
        xc = x[y == c]
        assert ((xc.mean(0) - _8G_CENTERS[c]).abs() <= _mean_bound(xc)).all()
    # moons: theta ~ U[0, pi]: E cos = 0, E sin = 2/pi; after 2 * arc - (1, 0.2)
    x, y = sample_toy("moons", 8000, generator=1, labels=True, dtype=torch.float64)
    means = {0: (-1.0, 4 / math.pi - 0.2), 1: (1.0, 0.8 - 4 / math.pi)}
    for c, m in means.items():
        xc = x[y == c]
        assert ((xc.mean(0) - torch.tensor(m).double()).abs() <= _mean_bound(xc)).all()
    # circles: E|x|^2 = R^2 + 2 std^2 for a ring of radius R blurred by N(0, std^2 I)
    x, y = sample_toy("circles", 8000, generator=1, labels=True, dtype=torch.float64)
    for c, radius in enumerate((3.0, 1.5)):
        r2 = x[y == c].pow(2).sum(-1)
        assert abs(r2.mean() - (radius**2 + 2 * 0.24**2)) <= 5 * r2.std() / math.sqrt(len(r2))
    # 2spirals: arm 1 is arm 0 reflected through the origin (before the Gaussian noise)
    x, y = sample_toy("2spirals", 8000, generator=1, labels=True, dtype=torch.float64)
    a, b = x[y == 0], x[y == 1]
    assert ((a.mean(0) + b.mean(0)).abs() <= _mean_bound(a) + _mean_bound(b)).all()
    # pinwheel: arm k is arm 0 rotated by -2 pi k / 5
    x, y = sample_toy("pinwheel", 10000, generator=1, labels=True, dtype=torch.float64)
    a = x[y == 0]
    for c in range(1, 5):
        ang = 2 * math.pi * c / 5
        rot = torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
        b = x[y == c] @ rot.double().T
        assert ((a.mean(0) - b.mean(0)).abs() <= _mean_bound(a) + _mean_bound(b)).all()


def test_8gaussians_score_by_autograd():
    # log p is differentiable: its gradient is the mixture score
    # sum_k w_k(x) (mu_k - x) / s^2, w_k the posterior component weights.
    x = sample_toy("8gaussians", 50, generator=4, dtype=torch.float64).requires_grad_()
    (grad,) = torch.autograd.grad(toy_log_prob("8gaussians", x).sum(), x)
    s2 = (0.5 / 1.414) ** 2
    w = torch.softmax(-(x.detach()[:, None] - _8G_CENTERS).pow(2).sum(-1) / (2 * s2), dim=-1)
    exact = (w[..., None] * (_8G_CENTERS - x.detach()[:, None])).sum(1) / s2
    assert torch.allclose(grad, exact, rtol=1e-10, atol=1e-10)
