"""Data: the 2-D toy sets with known densities, sklearn's digits, user files (with an
optional label column), standardisation, and images (built-in sets, folders, IDX files,
NumPy arrays) with their number of grey levels; :func:`data_kind` tells which kind
(continuous, discrete, images) a spec names."""

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
from probpath.data.idx import read_idx, read_idx_images, write_idx
from probpath.data.image_arrays import IMAGE_KEYS, LABEL_KEYS, read_image_array
from probpath.data.image_builtin import IMAGE_SETS, load_builtin_images
from probpath.data.image_folder import read_image_folder
from probpath.data.image_set import (
    TEST_FRACTION,
    ImageSet,
    level_width,
    split_images,
    to_centered,
    to_pixels,
)
from probpath.data.images import load_images
from probpath.data.kinds import DATA_KINDS, DataKind, data_kind, integer_dtype
from probpath.data.standardize import Standardizer
from probpath.data.toy import TOY_CLASSES, TOY_ENTROPY, TOY_NAMES, make_generator, sample_toy

__all__ = [
    "DATA_KINDS",
    "DIGITS",
    "DIGITS_SHAPE",
    "IMAGE_KEYS",
    "IMAGE_SETS",
    "LABEL_KEYS",
    "SUFFIXES",
    "TEST_FRACTION",
    "TOY_CLASSES",
    "TOY_ENTROPY",
    "TOY_NAMES",
    "DataKind",
    "ImageSet",
    "LabelledData",
    "Standardizer",
    "data_kind",
    "integer_dtype",
    "is_finite",
    "level_width",
    "load_array",
    "load_builtin_images",
    "load_dataset",
    "load_digits",
    "load_images",
    "load_labelled",
    "make_generator",
    "read_idx",
    "read_idx_images",
    "read_image_array",
    "read_image_folder",
    "sample_toy",
    "split_images",
    "to_centered",
    "to_pixels",
    "toy_log_prob",
    "write_idx",
]
