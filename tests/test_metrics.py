"""Metrics against brute-force and closed-form oracles; unbiasedness; positivity."""

import math

import numpy as np
import pytest
import torch
from scipy.spatial.distance import cdist, pdist
from scipy.stats import wasserstein_distance

from probpath.data import sample_toy
from probpath.metrics import (
    bits_per_dim,
    dequantized_bits_per_dim,
    energy_distance,
    mean_nll,
    median_bandwidth,
    mmd2,
    noise_floor,
    sliced_wasserstein,
)


def _pair(n=13, m=9, d=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64), 1 + torch.randn(
        m, d, generator=g, dtype=torch.float64
    )


def test_bits_per_dim():
    assert bits_per_dim(3 * math.log(2), 3) == pytest.approx(1.0)
    # the uniform density on [0, 1)^D (NLL 0) is 256^-D on the 8-bit scale: 8 bits/dim
    assert dequantized_bits_per_dim(0.0, 64) == pytest.approx(8.0)
    # a model of y = x / 128 in [0, 2): uniform density 2^-D, NLL = D ln 2; 8 bits/dim again
    assert dequantized_bits_per_dim(10 * math.log(2), 10, scale=1 / 128) == pytest.approx(8.0)
    with pytest.raises(ValueError, match="dim must be positive"):
        bits_per_dim(1.0, 0)


def test_mean_nll():
    x = torch.randn(100, 2, generator=torch.Generator().manual_seed(0))
    normal = torch.distributions.Normal(0.0, 1.0)
    nll, se = mean_nll(lambda z: normal.log_prob(z).sum(-1), x, batch_size=7)
    lp = normal.log_prob(x).sum(-1).double()
    assert nll == pytest.approx(-lp.mean().item()) and se == pytest.approx(lp.std().item() / 10)


def test_energy_distance_brute_force():
    x, y = _pair()
    a, b = x.numpy(), y.numpy()
    n, m = len(a), len(b)
    # U-statistic: within-sample means over i != i' (the diagonal is 0 anyway)
    ref = (
        2 * cdist(a, b).mean()
        - cdist(a, a).sum() / (n * (n - 1))
        - cdist(b, b).sum() / (m * (m - 1))
    )
    assert energy_distance(x, y, chunk=4) == pytest.approx(ref, rel=1e-12)
    # two point masses at distance 5: 2 |a - b| exactly
    pa, pb = torch.zeros(4, 2), torch.tensor([[3.0, 4.0]]).repeat(6, 1)
    assert energy_distance(pa, pb) == pytest.approx(10.0)


def test_mmd_brute_force():
    x, y = _pair()
    a, b = x.numpy(), y.numpy()
    h = float(np.median(pdist(np.concatenate([a, b]))))
    assert median_bandwidth(x, y) == pytest.approx(h)

    def k(u, v):
        return np.exp(-cdist(u, v, "sqeuclidean") / (2 * h * h))

    n, m = len(a), len(b)
    kxx, kyy = k(a, a), k(b, b)
    ref = (
        (kxx.sum() - np.trace(kxx)) / (n * (n - 1))
        + (kyy.sum() - np.trace(kyy)) / (m * (m - 1))
        - 2 * k(a, b).mean()
    )
    assert mmd2(x, y, chunk=5) == pytest.approx(ref, rel=1e-10)


def test_sliced_wasserstein_1d_is_exact():
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(17, 1, generator=g), 2 * torch.rand(11, 1, generator=g)
    ref = wasserstein_distance(x[:, 0].numpy(), y[:, 0].numpy())  # exact W1 for any n, m
    assert sliced_wasserstein(x, y, p=1, projections=3, generator=0) == pytest.approx(ref, rel=1e-6)
    # equal sizes, p = 2: W2^2 = mean (x_(i) - y_(i))^2 over sorted samples
    x2, y2 = torch.randn(20, 1, generator=g), torch.randn(20, 1, generator=g) + 1
    ref2 = (x2.sort(0).values - y2.sort(0).values).pow(2).mean().sqrt().item()
    assert sliced_wasserstein(x2, y2, p=2, generator=0) == pytest.approx(ref2, rel=1e-6)


def test_sliced_wasserstein_of_a_shift():
    # For y = x + v every projection moves by <theta, v>, so SW_2^2 = mean (theta . v)^2,
    # whose expectation over theta ~ U(S^1) is |v|^2 / 2 with variance |v|^4 / 8 per
    # projection: with L = 4000 projections, within 5 sqrt(1/8 / L) |v|^2 of |v|^2 / 2.
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    v = torch.tensor([3.0, 4.0], dtype=torch.float64)
    sw2 = sliced_wasserstein(x, x + v, projections=4000, generator=0) ** 2
    assert abs(sw2 - 12.5) <= 5 * math.sqrt(1 / 8 / 4000) * 25
    assert sliced_wasserstein(x, x.flip(0), generator=0) == pytest.approx(0.0, abs=1e-12)
    assert sliced_wasserstein(x, x, generator=3) == sliced_wasserstein(x, x, generator=3)


def _sampler(name):
    return lambda n, g: sample_toy(name, n, generator=g, dtype=torch.float64)


@pytest.mark.parametrize("statistic", [energy_distance, mmd2])
def test_unbiased_zero_for_equal_laws_and_positive_otherwise(statistic):
    # The U-statistics are unbiased: over R independent pairs from the same law the mean
    # is within 5 standard errors (std / sqrt(R)) of 0. Different laws (8gaussians vs
    # moons) give a value far above the noise floor: > mean + 5 std.
    floor = noise_floor(statistic, _sampler("8gaussians"), 300, repeats=12, generator=0)
    assert abs(floor.mean) <= 5 * floor.std / math.sqrt(12)
    g = torch.Generator().manual_seed(9)
    value = statistic(_sampler("8gaussians")(300, g), _sampler("moons")(300, g))
    assert value > floor.mean + 5 * floor.std


def test_sliced_wasserstein_noise_floor():
    sw = lambda x, y: sliced_wasserstein(x, y, generator=0)  # noqa: E731
    floor = noise_floor(sw, _sampler("moons"), 300, repeats=8, generator=1)
    assert floor.mean > 0  # SW is a distance between two empirical laws: biased upwards
    g = torch.Generator().manual_seed(9)
    assert sw(_sampler("moons")(300, g), _sampler("circles")(300, g)) > floor.mean + 5 * floor.std


def test_chunking_does_not_change_results():
    x, y = _pair(n=40, m=30)
    for f in (energy_distance, mmd2):
        assert f(x, y, chunk=7) == pytest.approx(f(x, y, chunk=1000), rel=1e-12)


def test_errors():
    with pytest.raises(ValueError, match="at least 2 points"):
        energy_distance(torch.zeros(1, 2), torch.zeros(3, 2))
    with pytest.raises(ValueError, match=r"\(n, D\) and \(m, D\)"):
        mmd2(torch.zeros(3, 2), torch.zeros(3, 3))
    with pytest.raises(ValueError, match="median pairwise distance is 0"):
        mmd2(torch.zeros(3, 2), torch.zeros(3, 2))
