"""Metrics: likelihood (NLL, bits/dim), sample quality between samples and data (energy
distance, MMD, sliced Wasserstein) with the noise floor to read them against, and the
Fréchet distance between feature sets (the image judge of ``probpath eval --judge``).

- :mod:`.likelihood`: :func:`bits_per_dim`, :func:`dequantized_bits_per_dim`,
  :func:`mean_nll`;
- :mod:`.samples`: :func:`energy_distance`, :func:`mmd2`, :func:`sliced_wasserstein`,
  :func:`median_bandwidth`, :func:`noise_floor`;
- :mod:`.frechet`: :func:`frechet_distance`, :func:`gaussian_frechet`,
  :func:`gaussian_stats`.
"""

from probpath.metrics.frechet import frechet_distance, gaussian_frechet, gaussian_stats
from probpath.metrics.likelihood import bits_per_dim, dequantized_bits_per_dim, mean_nll
from probpath.metrics.samples import (
    NoiseFloor,
    energy_distance,
    median_bandwidth,
    mmd2,
    noise_floor,
    sliced_wasserstein,
)

__all__ = [
    "NoiseFloor",
    "bits_per_dim",
    "dequantized_bits_per_dim",
    "energy_distance",
    "frechet_distance",
    "gaussian_frechet",
    "gaussian_stats",
    "mean_nll",
    "median_bandwidth",
    "mmd2",
    "noise_floor",
    "sliced_wasserstein",
]
