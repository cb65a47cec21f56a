"""Labelled data: toy components, sklearn's digits, and label columns of user files."""

import numpy as np
import pytest
import torch

from probpath.data import (
    TOY_CLASSES,
    load_dataset,
    load_digits,
    load_labelled,
    sample_toy,
)


def test_toy_labels_are_the_sampler_components():
    d = load_labelled("pinwheel", 50, seed=3)
    x, y = sample_toy("pinwheel", 50, generator=3, labels=True)
    assert torch.equal(d.x, x) and torch.equal(d.y, y)
    assert d.classes == ("0", "1", "2", "3", "4") and d.n_classes == TOY_CLASSES["pinwheel"]
    x2, y2 = load_dataset("pinwheel", 50, seed=3, labels=True)
    assert torch.equal(x2, x) and torch.equal(y2, y)
    with pytest.raises(ValueError, match="'swissroll' has no labels"):
        load_labelled("swissroll", 5, seed=0)
    with pytest.raises(ValueError, match="label_column applies to data files"):
        load_labelled("moons", 5, seed=0, label_column=0)


def test_digits():
    x, y = load_digits(torch.float64)
    # pixel grey levels 0..16 map to p / 8 - 1: every value is a multiple of 1/8 in [-1, 1]
    assert x.shape == (1797, 64) and y.shape == (1797,)
    assert torch.equal(x * 8, (x * 8).round()) and x.min() == -1 and x.max() == 1
    assert torch.bincount(y).tolist() == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    d = load_labelled("digits", None, seed=0)
    assert d.classes == tuple(str(k) for k in range(10))
    # a seeded permutation of the rows, labels moving with their images
    perm = torch.randperm(1797, generator=torch.Generator().manual_seed(0))
    assert torch.equal(d.x.double(), x[perm]) and torch.equal(d.y, y[perm])
    assert torch.equal(load_dataset("digits", 7, seed=0), d.x[:7])
    with pytest.raises(ValueError, match="asked for n=2000 rows, the data set has 1797"):
        load_dataset("digits", 2000, seed=0)


def _check(d, x_rows, labels, classes):
    """``d`` holds a permutation of the rows, each row with its own label."""
    got = {(tuple(r), d.classes[k]) for r, k in zip(d.x.tolist(), d.y.tolist(), strict=True)}
    assert got == set(zip(map(tuple, x_rows), labels, strict=True))
    assert d.classes == classes


def test_csv_label_column_by_name_and_index(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("a,kind,b\n1,cat,2\n3,dog,4\n5,cat,6\n")
    rows = [(1.0, 2.0), (3.0, 4.0), (5.0, 6.0)]
    for column in ("kind", 1, -2):
        d = load_labelled(str(p), None, seed=0, label_column=column)
        _check(d, rows, ["cat", "dog", "cat"], ("cat", "dog"))
    # the label column is never a feature, with or without labels
    assert load_dataset(str(p), None, seed=0, label_column="kind").shape == (3, 2)
    q = tmp_path / "ints.csv"
    q.write_text("1,2,7\n3,4,-2\n5,6,7.0\n")  # arbitrary integers map to 0..K-1 in sorted order
    _check(load_labelled(str(q), None, seed=1, label_column=2), rows, ["7", "-2", "7"], ("-2", "7"))


@pytest.mark.parametrize("suffix", [".npy", ".pt"])
def test_array_label_column(tmp_path, suffix):
    data = np.array([[0.5, 3.0, 1.0], [1.5, 1.0, 2.0], [2.5, 3.0, 3.0], [3.5, 0.0, 4.0]])
    p = tmp_path / f"d{suffix}"
    np.save(p, data) if suffix == ".npy" else torch.save(torch.from_numpy(data), p)
    d = load_labelled(str(p), None, seed=0, label_column=1)
    _check(d, data[:, [0, 2]].tolist(), ["3", "1", "3", "0"], ("0", "1", "3"))
    assert d.y.dtype == torch.long and d.x.shape == (4, 2)
    with pytest.raises(
        ValueError, match=r"no names in a \.(npy|pt) file; give the label column.s 0-based"
    ):
        load_labelled(str(p), None, seed=0, label_column="y")


@pytest.mark.parametrize(
    ("text", "column", "match"),
    [
        ("a,y\n1,2\n", "z", "no column named 'z'; columns: a, y"),
        ("1,2\n3,4\n", "y", "no header row, so the label column 'y' cannot be found by name"),
        ("1,2\n3,4\n", 2, "label column 2 is out of range for 2 columns"),
        ("a,y\n1,0\n2,1.5\n3,2\n4,nan\n", "y", r"2 labels are not integers: lines 3, 5;"),
        ("a,y\n1,cat\n2,\n", "y", r"1 labels are empty: lines 3"),
        ("a,y\n1,0\nx,1\n", "y", r"line 3, column 1: 'x' is not a number"),
        ("a,b,y\n1,nan,0\n", "y", r"lines 2, columns 2 \(1-based\)"),
    ],
)
def test_label_errors_name_rows(tmp_path, text, column, match):
    p = tmp_path / "bad.csv"
    p.write_text(text)
    with pytest.raises(ValueError, match=match):
        load_labelled(str(p), None, seed=0, label_column=column)


def test_label_errors_arrays_and_missing_column(tmp_path):
    data = np.array([[0.0, 1.0], [1.0, 0.5], [2.0, np.inf]])
    np.save(tmp_path / "d.npy", data)
    with pytest.raises(ValueError, match=r"2 labels are not integers: rows 1, 2;"):
        load_labelled(str(tmp_path / "d.npy"), None, seed=0, label_column=1)
    with pytest.raises(ValueError, match="give the label column"):
        load_labelled(str(tmp_path / "d.npy"), None, seed=0)
