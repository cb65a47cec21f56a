"""Which kind of data a spec names: continuous vectors, discrete vectors or images.

One spec (``probpath train --data SPEC``) names one kind, so every family and every
metric treats it alike:

- ``"continuous"``: a toy set's name; a ``.npy`` (2-D) or ``.pt`` file of floats; a
  ``.csv`` file. A model of them has a density, scored in nats of the data space.
- ``"discrete"``: a 2-D ``.npy`` or ``.pt`` file of integers or booleans (N x D; e.g.
  flattened 8-bit images), or any vector file when the number of levels K is given
  (``levels=K``: e.g. a CSV of counts). Values are levels 0..K-1: K is 256 for uint8, 2 for
  bool, the largest value + 1 for other integers, unless given. A model of them is scored
  by the dequantized bound on -log P(x) (:func:`probpath.dequantization.discrete_nll`).
- ``"images"``: a built-in image set's name (``digits``, ``mnist5k``), a folder, a
  ``.npz`` (or ``file.npz:KEY``), a ``.npy`` holding a 3-D or 4-D array, or any other
  existing file (read as IDX): :func:`probpath.data.load_images`. Discrete too, with the
  set's own K (17 for ``digits``, 256 otherwise).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal, NamedTuple

import numpy as np
import torch

from probpath.data.files import SUFFIXES, _read
from probpath.data.image_builtin import IMAGE_SETS
from probpath.data.toy import TOY_NAMES

__all__ = ["DATA_KINDS", "DataKind", "data_kind", "integer_dtype"]

DATA_KINDS = ("continuous", "discrete", "images")
_NPZ_KEY = re.compile(r".+\.npz:\w+")


class DataKind(NamedTuple):
    """What :func:`data_kind` finds: the ``kind`` (one of ``DATA_KINDS``) and, for an
    integer vector file, the number of levels its dtype implies (uint8: 256, bool: 2;
    ``None``: from the values, or not discrete)."""

    kind: Literal["continuous", "discrete", "images"]
    dtype_levels: int | None = None


def _npy_header(path: Path) -> tuple[int, np.dtype]:
    """The number of axes and the dtype of a ``.npy`` file (memory-mapped: its header is
    read, not its data)."""
    try:
        arr = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError):
        return 2, np.dtype(np.float64)  # not a numeric .npy: the vector loader says why
    return arr.ndim, arr.dtype


def _levels_of(dtype: np.dtype | torch.dtype) -> DataKind:
    """Booleans: 2 levels; uint8: 256; other integers: from the values; floats: continuous."""
    if dtype in (np.bool_, torch.bool):
        return DataKind("discrete", 2)
    if dtype in (np.uint8, torch.uint8):
        return DataKind("discrete", 256)
    if isinstance(dtype, torch.dtype):
        integer = not (dtype.is_floating_point or dtype.is_complex)
    else:
        integer = np.issubdtype(dtype, np.integer)
    return DataKind("discrete") if integer else DataKind("continuous")


def data_kind(spec: str, *, levels: int | None = None) -> DataKind:
    """The kind of data ``spec`` names (see the module docstring for the rules).

    >>> data_kind("moons"), data_kind("digits")
    (DataKind(kind='continuous', dtype_levels=None), DataKind(kind='images', dtype_levels=None))
    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> np.save(p, np.zeros((4, 64), np.uint8))
    >>> data_kind(p)
    DataKind(kind='discrete', dtype_levels=256)
    """
    if spec in TOY_NAMES:
        if levels is not None:
            raise ValueError(f"levels apply to discrete data; {spec!r} is a continuous toy set")
        return DataKind("continuous")
    if spec in IMAGE_SETS or _NPZ_KEY.fullmatch(spec):
        return DataKind("images")
    path = Path(spec)
    if path.is_dir() or path.suffix == ".npz":
        return DataKind("images")
    if path.is_file() and path.suffix not in SUFFIXES:
        return DataKind("images")  # MNIST's IDX files have no suffix of their own
    found = DataKind("continuous")
    if path.suffix == ".npy" and path.is_file():
        ndim, dtype = _npy_header(path)
        if ndim >= 3:
            return DataKind("images")
        found = _levels_of(dtype)
    elif path.suffix == ".pt" and path.is_file():
        found = _levels_of(torch.as_tensor(_read(path)).dtype)
    if levels is not None:
        return DataKind("discrete", found.dtype_levels)
    return found


def integer_dtype(levels: int) -> torch.dtype:
    """The smallest integer dtype that holds levels 0..K-1 (uint8 up to K = 256): how a
    run keeps discrete data in memory.

    >>> integer_dtype(17), integer_dtype(300)
    (torch.uint8, torch.int32)
    """
    if levels <= 256:
        return torch.uint8
    return torch.int32 if levels <= 2**31 else torch.int64
