"""User data from ``.npy``, ``.csv`` and ``.pt`` files, validated, and the CLI entry point.

A file may hold a label column (an integer or string class per row) for conditional
models; :func:`load_labelled` maps its values to 0..K-1 and keeps their names.

Every problem is a ``ValueError`` naming the file and the offending rows or columns:
NaN/inf values, a shape other than N x D, a dimension mismatch, an empty file, a
non-numeric CSV cell, complex values, a ``.pt`` file holding pickled objects. Nothing is
silently dropped (only fully blank CSV lines, which hold no data, are skipped).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path
from pickle import UnpicklingError  # the error torch.load(weights_only=True) raises
from typing import Literal, overload

import numpy as np
import torch
from torch import Tensor

from probpath.data._tables import encode_labels, label_index, read_csv, show_rows
from probpath.data.digits import DIGITS, load_digits
from probpath.data.toy import TOY_CLASSES, TOY_NAMES, make_generator, sample_toy

__all__ = ["SUFFIXES", "LabelledData", "is_finite", "load_array", "load_dataset", "load_labelled"]

SUFFIXES = (".npy", ".csv", ".pt")


def _read(path: Path) -> np.ndarray | Tensor:
    """The array of a ``.npy`` or ``.pt`` file: real numbers, never unpickled."""
    if path.suffix == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:  # an object array (pickled) or a corrupt header
            raise ValueError(f"{path}: not a numeric .npy array ({e})") from None
        if np.iscomplexobj(arr):
            raise ValueError(f"{path}: complex values ({arr.dtype}); give real columns")
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise ValueError(f"{path}: array dtype {arr.dtype} is not numeric")
        return arr
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path}: not a file written by torch.save (a zip archive)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except UnpicklingError:
        raise ValueError(
            f"{path}: holds pickled Python objects, which probpath never loads; save a "
            "plain tensor (torch.save(tensor, path)) or a .npy array"
        ) from None
    except (RuntimeError, EOFError, OSError) as e:  # a damaged archive
        raise ValueError(f"{path}: cannot be read as a saved tensor ({e})") from None
    if not isinstance(obj, Tensor):
        raise ValueError(f"{path}: expected a saved torch.Tensor, found {type(obj).__name__}")
    if obj.is_complex():
        raise ValueError(f"{path}: complex values ({obj.dtype}); give real columns")
    return obj


def _load(
    path: str | Path, label_column: int | str | None
) -> tuple[Tensor, Tensor, tuple[str, ...]]:
    """Features (N, D) in float64, checked; labels 0..K-1 and the class names (an empty
    tensor and ``()`` when ``label_column`` is ``None``)."""
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of {SUFFIXES}")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    labels: list[str] | np.ndarray | None = None
    if path.suffix == ".csv":
        out, cells = read_csv(path, label_column)
        x = torch.from_numpy(out)
        if label_column is not None:
            labels, where, unit = [c for _, c in cells], [line for line, _ in cells], "lines"
    else:
        x = torch.as_tensor(_read(path)).to(torch.float64)
        if x.ndim != 2:
            hint = " (reshape 1-D data to (N, 1))" if x.ndim == 1 else ""
            raise ValueError(f"{path}: expected an N x D array, got shape {tuple(x.shape)}{hint}")
        if label_column is not None:
            if isinstance(label_column, str):
                raise ValueError(
                    f"{path}: columns have no names in a {path.suffix} file; give the label"
                    " column's 0-based index"
                )
            c = label_index(path, label_column, None, x.shape[1])
            labels, where, unit = x[:, c].numpy(), list(range(len(x))), "rows"
            x = torch.cat([x[:, :c], x[:, c + 1 :]], dim=1)
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{path}: no data (shape {tuple(x.shape)})")
    bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten().tolist()
    if bad:  # CSV cells were checked by line already; this catches .npy/.pt files
        cols = (~torch.isfinite(x)).any(dim=0).nonzero().flatten().tolist()
        raise ValueError(
            f"{path}: {len(bad)} rows hold NaN or inf: rows {show_rows(bad)},"
            f" columns {show_rows(cols)} (0-based indices); clean or drop them explicitly"
        )
    if labels is None:
        return x, torch.empty(0, dtype=torch.long), ()
    y, classes = encode_labels(path, labels, where, unit)
    return x, y, classes


def load_array(
    path: str | Path, *, dim: int | None = None, dtype: torch.dtype = torch.float32
) -> Tensor:
    """Load an N x D data file (``.npy``, ``.csv`` or ``.pt``) as a tensor of ``dtype``.

    A CSV may start with a header row of non-numeric column names (detected and
    skipped). ``.pt`` files are read with ``torch.load(weights_only=True)`` and must hold
    a single tensor. If ``dim`` is given, D must equal it.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "d.csv")
    >>> _ = open(p, "w").write("a,b\\n1,2\\n3,4\\n")
    >>> load_array(p, dim=2)
    tensor([[1., 2.],
            [3., 4.]])
    """
    x = _load(path, None)[0]
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{path}: expected D={dim} columns, got D={x.shape[1]}")
    return x.to(dtype)


@dataclass(frozen=True)
class LabelledData:
    """Rows ``x`` (N, D), labels ``y`` (N,) in 0..K-1 and the K class names (label k is
    ``classes[k]``: the original value in a file, ``str(k)`` for the built-in sets)."""

    x: Tensor
    y: Tensor
    classes: tuple[str, ...]

    @property
    def n_classes(self) -> int:
        """K, the number of classes."""
        return len(self.classes)


def is_finite(spec: str) -> bool:
    """True for a data set with a fixed number of rows (a file, ``digits``); False for a
    toy set, which draws as many fresh samples as asked."""
    return spec not in TOY_NAMES


def load_labelled(
    spec: str,
    n: int | None,
    *,
    seed: int,
    dtype: torch.dtype = torch.float32,
    label_column: int | str | None = None,
) -> LabelledData:
    """:func:`load_dataset` with labels, plus the class names.

    Labels: the mixture component, arm or class of a labelled toy set (``TOY_CLASSES``);
    the digit of ``digits``; for a file, the column ``label_column`` (a 0-based index, or
    a CSV header name), removed from the features. A file's labels may be any integers or
    strings: their sorted distinct values become 0..K-1, in the order of ``classes``.

    >>> d = load_labelled("8gaussians", 5, seed=0)
    >>> d.x.shape, d.y.shape, d.n_classes
    (torch.Size([5, 2]), torch.Size([5]), 8)
    """
    n_toy = _toy_size(spec, n, label_column)
    if n_toy is not None:
        x, y = sample_toy(spec, n_toy, generator=seed, labels=True, dtype=dtype)
        return LabelledData(x, y, tuple(str(k) for k in range(TOY_CLASSES[spec])))
    if spec == DIGITS:
        x, y = load_digits(torch.float64)
        classes = tuple(str(k) for k in range(10))
    else:
        if label_column is None:
            raise ValueError(f"{spec}: give the label column (label_column / --label-column)")
        x, y, classes = _load(_file(spec), label_column)
    rows = _shuffled_rows(spec, len(x), n, seed)
    return LabelledData(x[rows].to(dtype), y[rows], classes)


def _toy_size(spec: str, n: int | None, label_column: int | str | None) -> int | None:
    """``n`` for a toy set (which needs it), ``None`` for a finite set; refuses a
    ``label_column`` for anything but a file."""
    if label_column is not None and (not is_finite(spec) or spec == DIGITS):
        raise ValueError(f"label_column applies to data files, not to {spec!r}")
    if is_finite(spec):
        return None
    if n is None:
        raise ValueError(f"toy set {spec!r} needs a sample size n")
    return n


def _file(spec: str) -> Path:
    path = Path(spec)
    if path.suffix not in SUFFIXES or not path.is_file():
        raise ValueError(
            f"{spec!r} is neither a toy set ({', '.join(TOY_NAMES)}), {DIGITS!r}, nor an"
            f" existing {'/'.join(SUFFIXES)} file"
        )
    return path


def _shuffled_rows(spec: str, n_rows: int, n: int | None, seed: int) -> Tensor:
    """``n`` row indices of a finite set in a seeded random order (``None``: all)."""
    if n is not None and not 0 < n <= n_rows:
        what = "data set" if spec == DIGITS else "file"
        raise ValueError(f"{spec}: asked for n={n} rows, the {what} has {n_rows}")
    perm = torch.randperm(n_rows, generator=make_generator(seed))
    return perm if n is None else perm[:n]


@overload
def load_dataset(
    spec: str,
    n: int | None,
    *,
    seed: int,
    dtype: torch.dtype = ...,
    labels: Literal[False] = ...,
    label_column: int | str | None = ...,
) -> Tensor: ...


@overload
def load_dataset(
    spec: str,
    n: int | None,
    *,
    seed: int,
    dtype: torch.dtype = ...,
    labels: Literal[True],
    label_column: int | str | None = ...,
) -> tuple[Tensor, Tensor]: ...


def load_dataset(
    spec: str,
    n: int | None,
    *,
    seed: int,
    dtype: torch.dtype = torch.float32,
    labels: bool = False,
    label_column: int | str | None = None,
) -> Tensor | tuple[Tensor, Tensor]:
    """The data the CLI trains and evaluates on: a toy set, ``digits`` or a file path.

    For a toy set, ``n`` fresh samples drawn with ``seed``. For a finite set (a file or
    ``digits``, see :mod:`probpath.data.digits`), ``n`` rows drawn without replacement in
    a seeded random order (``n=None``: all rows, shuffled); asking for more rows than it
    holds is an error, never silent resampling. ``labels=True`` returns ``(x, y)`` (see
    :func:`load_labelled`, which also gives the class names); a file's ``label_column``
    is never a feature, with or without ``labels``.

    >>> load_dataset("8gaussians", 3, seed=0).shape
    torch.Size([3, 2])
    >>> x, y = load_dataset("digits", 4, seed=0, labels=True)
    >>> x.shape, y.shape
    (torch.Size([4, 64]), torch.Size([4]))
    """
    if labels:
        d = load_labelled(spec, n, seed=seed, dtype=dtype, label_column=label_column)
        return d.x, d.y
    n_toy = _toy_size(spec, n, label_column)
    if n_toy is not None:
        return sample_toy(spec, n_toy, generator=seed, dtype=dtype)
    if spec == DIGITS:
        x = load_digits(torch.float64)[0]
    else:
        x = _load(_file(spec), label_column)[0]
    return x[_shuffled_rows(spec, len(x), n, seed)].to(dtype)
