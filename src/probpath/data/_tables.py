"""Reading a CSV table and encoding a label column: the text side of :mod:`.files`."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

__all__ = ["encode_labels", "label_index", "read_csv", "show_rows"]

_SHOW = 10  # offending rows named in an error message


def show_rows(idx: np.ndarray | list[int]) -> str:
    idx = list(idx)
    more = f" (and {len(idx) - _SHOW} more)" if len(idx) > _SHOW else ""
    return ", ".join(str(i) for i in idx[:_SHOW]) + more


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


def label_index(path: Path, column: int | str, header: list[str] | None, width: int) -> int:
    """The 0-based index of the label column, given by header name or by index."""
    if isinstance(column, str):
        if header is None:
            raise ValueError(
                f"{path}: no header row, so the label column {column!r} cannot be found by"
                " name; give its 0-based index"
            )
        if column not in header:
            raise ValueError(f"{path}: no column named {column!r}; columns: {', '.join(header)}")
        return header.index(column)
    if not -width <= column < width:
        raise ValueError(
            f"{path}: label column {column} is out of range for {width} columns (0-based)"
        )
    return column % width


def read_csv(
    path: Path, label_column: int | str | None = None
) -> tuple[np.ndarray, list[tuple[int, str]]]:
    """The numeric columns as float64 (N, D), and the label column's (line, cell) pairs."""
    with path.open(newline="") as fh:
        lines = [(i, row) for i, row in enumerate(csv.reader(fh), start=1) if any(row)]
    header = None
    if lines and not any(_is_number(c) for c in lines[0][1]):
        header = [c.strip() for c in lines[0][1]]  # a header row of column names
        lines = lines[1:]
    width = len(lines[0][1]) if lines else len(header or ())
    label = None if label_column is None else label_index(path, label_column, header, width)
    out = np.empty((len(lines), width - (label is not None)), dtype=np.float64)
    cells: list[tuple[int, str]] = []
    for r, (line, row) in enumerate(lines):
        if len(row) != width:
            raise ValueError(
                f"{path}: line {line} has {len(row)} columns, line 1 of data has {width}"
            )
        if label is not None:
            cells.append((line, row[label].strip()))
        c_out = 0
        for c, cell in enumerate(row):
            if c == label:
                continue
            try:
                out[r, c_out] = float(cell)
            except ValueError:
                raise ValueError(
                    f"{path}: line {line}, column {c + 1}: {cell!r} is not a number"
                ) from None
            c_out += 1
    bad = [lines[r][0] for r in np.flatnonzero(~np.isfinite(out).all(axis=1))]
    if bad:
        cols = [c + 1 for c in range(width) if c != label]
        cols = [cols[c] for c in np.flatnonzero(~np.isfinite(out).all(axis=0))]
        raise ValueError(
            f"{path}: {len(bad)} rows hold NaN or inf: lines {show_rows(bad)},"
            f" columns {show_rows(cols)} (1-based); clean or drop them explicitly"
        )
    return out, cells


def encode_labels(
    path: Path, values: list[str] | np.ndarray, where: list[int], unit: str
) -> tuple[Tensor, tuple[str, ...]]:
    """Labels as 0..K-1 and the K class names: the sorted distinct integers (all values
    integral numbers) or the sorted distinct strings; ``where[i]`` names value i."""
    if isinstance(values, list) and all(_is_number(v) for v in values):
        values = np.array([float(v) for v in values])
    if isinstance(values, np.ndarray):
        bad = [
            where[i] for i in np.flatnonzero(~(np.isfinite(values) & (values == np.floor(values))))
        ]
        if bad:
            raise ValueError(
                f"{path}: {len(bad)} labels are not integers: {unit} {show_rows(bad)};"
                " numeric labels must be whole numbers"
            )
        classes, y = np.unique(values.astype(np.int64), return_inverse=True)
    else:
        empty = [where[i] for i, v in enumerate(values) if not v]
        if empty:
            raise ValueError(f"{path}: {len(empty)} labels are empty: {unit} {show_rows(empty)}")
        classes, y = np.unique(np.array(values), return_inverse=True)
    return torch.as_tensor(y, dtype=torch.long), tuple(str(c) for c in classes)
