"""User data from ``.npy``, ``.csv`` and ``.pt`` files, validated, and the CLI entry point.

Every problem is a ``ValueError`` naming the file and the offending rows or columns:
NaN/inf values, a shape other than N x D, a dimension mismatch, an empty file, a
non-numeric CSV cell. Nothing is silently dropped (only fully blank CSV lines, which
hold no data, are skipped).
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from probpath.data.toy import TOY_NAMES, make_generator, sample_toy

__all__ = ["SUFFIXES", "load_array", "load_dataset"]

SUFFIXES = (".npy", ".csv", ".pt")
_SHOW = 10  # offending rows named in an error message


def _rows(idx: np.ndarray | list[int]) -> str:
    idx = list(idx)
    more = f" (and {len(idx) - _SHOW} more)" if len(idx) > _SHOW else ""
    return ", ".join(str(i) for i in idx[:_SHOW]) + more


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> np.ndarray:
    with path.open(newline="") as fh:
        lines = [(i, row) for i, row in enumerate(csv.reader(fh), start=1) if any(row)]
    if lines and not any(_is_number(c) for c in lines[0][1]):
        lines = lines[1:]  # a header row of column names
    width = len(lines[0][1]) if lines else 0
    out = np.empty((len(lines), width), dtype=np.float64)
    for r, (line, row) in enumerate(lines):
        if len(row) != width:
            raise ValueError(
                f"{path}: line {line} has {len(row)} columns, line 1 of data has {width}"
            )
        for c, cell in enumerate(row):
            try:
                out[r, c] = float(cell)
            except ValueError:
                raise ValueError(
                    f"{path}: line {line}, column {c + 1}: {cell!r} is not a number"
                ) from None
    bad = [lines[r][0] for r in np.flatnonzero(~np.isfinite(out).all(axis=1))]
    if bad:
        cols = np.flatnonzero(~np.isfinite(out).all(axis=0)) + 1
        raise ValueError(
            f"{path}: {len(bad)} rows hold NaN or inf: lines {_rows(bad)},"
            f" columns {_rows(list(cols))} (1-based); clean or drop them explicitly"
        )
    return out


def _read(path: Path) -> np.ndarray | Tensor:
    if path.suffix == ".npy":
        arr = np.load(path, allow_pickle=False)
        if not (np.issubdtype(arr.dtype, np.number) or arr.dtype == np.bool_):
            raise ValueError(f"{path}: array dtype {arr.dtype} is not numeric")
        return arr
    if path.suffix == ".csv":
        return _read_csv(path)
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(obj, Tensor):
        raise ValueError(f"{path}: expected a saved torch.Tensor, found {type(obj).__name__}")
    return obj


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
    path = Path(path)
    if path.suffix not in SUFFIXES:
        raise ValueError(f"{path}: unsupported file type {path.suffix!r}; use one of {SUFFIXES}")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path}: the file is empty")
    raw = _read(path)
    x = torch.as_tensor(raw).to(torch.float64)
    if x.ndim != 2:
        hint = " (reshape 1-D data to (N, 1))" if x.ndim == 1 else ""
        raise ValueError(f"{path}: expected an N x D array, got shape {tuple(x.shape)}{hint}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{path}: no data (shape {tuple(x.shape)})")
    if dim is not None and x.shape[1] != dim:
        raise ValueError(f"{path}: expected D={dim} columns, got D={x.shape[1]}")
    bad = (~torch.isfinite(x)).any(dim=1).nonzero().flatten().tolist()
    if bad:
        cols = (~torch.isfinite(x)).any(dim=0).nonzero().flatten().tolist()
        raise ValueError(
            f"{path}: {len(bad)} rows hold NaN or inf: rows {_rows(bad)},"
            f" columns {_rows(cols)} (0-based indices); clean or drop them explicitly"
        )
    return x.to(dtype)


def load_dataset(
    spec: str, n: int | None, *, seed: int, dtype: torch.dtype = torch.float32
) -> Tensor:
    """The data the CLI trains and evaluates on: a toy set name or a file path.

    For a toy set, ``n`` fresh samples drawn with ``seed``. For a file, ``n`` rows drawn
    without replacement in a seeded random order (``n=None``: all rows, shuffled);
    asking for more rows than the file holds is an error, never silent resampling.

    >>> load_dataset("8gaussians", 3, seed=0).shape
    torch.Size([3, 2])
    """
    if spec in TOY_NAMES:
        if n is None:
            raise ValueError(f"toy set {spec!r} needs a sample size n")
        return sample_toy(spec, n, generator=seed, dtype=dtype)
    path = Path(spec)
    if path.suffix not in SUFFIXES or not path.is_file():
        raise ValueError(
            f"{spec!r} is neither a toy set ({', '.join(TOY_NAMES)}) nor an existing"
            f" {'/'.join(SUFFIXES)} file"
        )
    x = load_array(path, dtype=dtype)
    if n is not None and not 0 < n <= x.shape[0]:
        raise ValueError(f"{path}: asked for n={n} rows, the file has {x.shape[0]}")
    perm = torch.randperm(x.shape[0], generator=make_generator(seed))
    return x[perm if n is None else perm[:n]]
