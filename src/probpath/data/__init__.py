"""Data: the 2-D toy sets with known densities, user files, and standardisation."""

from probpath.data._toy_density import toy_log_prob
from probpath.data.files import SUFFIXES, load_array, load_dataset
from probpath.data.standardize import Standardizer
from probpath.data.toy import TOY_ENTROPY, TOY_NAMES, make_generator, sample_toy

__all__ = [
    "SUFFIXES",
    "TOY_ENTROPY",
    "TOY_NAMES",
    "Standardizer",
    "load_array",
    "load_dataset",
    "make_generator",
    "sample_toy",
    "toy_log_prob",
]
