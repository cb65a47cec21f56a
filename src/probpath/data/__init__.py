"""Data: the 2-D toy sets with known densities, sklearn's digits, user files (with an
optional label column), and standardisation."""

from probpath.data._toy_density import toy_log_prob
from probpath.data.digits import DIGITS, DIGITS_SHAPE, load_digits
from probpath.data.files import (
    SUFFIXES,
    LabelledData,
    is_finite,
    load_array,
    load_dataset,
    load_labelled,
)
from probpath.data.standardize import Standardizer
from probpath.data.toy import TOY_CLASSES, TOY_ENTROPY, TOY_NAMES, make_generator, sample_toy

__all__ = [
    "DIGITS",
    "DIGITS_SHAPE",
    "SUFFIXES",
    "TOY_CLASSES",
    "TOY_ENTROPY",
    "TOY_NAMES",
    "LabelledData",
    "Standardizer",
    "is_finite",
    "load_array",
    "load_dataset",
    "load_digits",
    "load_labelled",
    "make_generator",
    "sample_toy",
    "toy_log_prob",
]
