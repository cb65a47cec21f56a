"""Property tests of the file loaders (hypothesis): any finite table survives a round trip
through ``.npy``, ``.csv`` and ``.pt`` exactly; label columns of any integers or strings
encode to 0..K-1 with their sorted names; shuffles keep every row."""

from __future__ import annotations

import string
import tempfile
from pathlib import Path

import numpy as np
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from probpath.data import load_array, load_dataset, load_labelled

SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
tables = st.tuples(st.integers(1, 12), st.integers(1, 4)).flatmap(
    lambda shape: arrays(np.float64, shape, elements=finite)
)


def _folder() -> Path:
    return Path(tempfile.mkdtemp())


@SETTINGS
@given(tables, st.sampled_from([".npy", ".csv", ".pt"]), st.booleans())
def test_a_finite_table_round_trips_exactly(x, suffix, header):
    path = _folder() / f"d{suffix}"
    if suffix == ".npy":
        np.save(path, x)
    elif suffix == ".pt":
        torch.save(torch.from_numpy(x), path)
    else:  # repr precision (17 significant digits) reads back the same double
        names = ",".join(f"c{j}" for j in range(x.shape[1])) + "\n" if header else ""
        path.write_text(names + "\n".join(",".join(repr(float(v)) for v in row) for row in x))
    out = load_array(path, dim=x.shape[1], dtype=torch.float64)
    assert torch.equal(out, torch.from_numpy(x))


@SETTINGS
@given(tables, st.integers(0, 2**31 - 1))
def test_a_seeded_shuffle_keeps_every_row_once(x, seed):
    path = _folder() / "d.npy"
    np.save(path, x)
    rows = load_dataset(str(path), None, seed=seed, dtype=torch.float64).numpy()
    assert sorted(map(tuple, rows)) == sorted(map(tuple, x))
    again = load_dataset(str(path), None, seed=seed, dtype=torch.float64).numpy()
    assert np.array_equal(rows, again)  # the same seed, the same order


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


words = st.text(string.ascii_letters + "_-", min_size=1, max_size=6).filter(
    lambda s: not _is_number(s)  # "inf" and "nan" read as numbers
)
label_lists = st.one_of(
    st.lists(st.integers(-(2**40), 2**40), min_size=1, max_size=15),
    st.lists(words, min_size=1, max_size=15),
)


@SETTINGS
@given(label_lists, st.integers(0, 2), st.integers(0, 1000))
def test_csv_labels_encode_to_their_sorted_classes(labels, column, seed):
    # Feature 0 is the row number, so every shuffled row can be traced back.
    cells = [[str(i), str(0.5 * i)] for i in range(len(labels))]
    for row, label in zip(cells, labels, strict=True):
        row.insert(column, str(label))
    path = _folder() / "d.csv"
    path.write_text("\n".join(",".join(row) for row in cells) + "\n")
    d = load_labelled(str(path), None, seed=seed, label_column=column, dtype=torch.float64)
    expected = sorted(set(labels))
    assert d.classes == tuple(str(c) for c in expected)
    assert d.x.shape == (len(labels), 2) and d.y.dtype == torch.long
    for features, y in zip(d.x, d.y, strict=True):
        assert d.classes[int(y)] == str(labels[int(features[0])])


@SETTINGS
@given(st.lists(st.integers(-1000, 1000), min_size=1, max_size=15), st.integers(0, 2))
def test_npy_label_column_of_integers(labels, column):
    x = np.arange(len(labels), dtype=np.float64)[:, None].repeat(2, axis=1)
    table = np.insert(x, column, np.array(labels, dtype=np.float64), axis=1)
    path = _folder() / "d.npy"
    np.save(path, table)
    d = load_labelled(str(path), None, seed=0, label_column=column, dtype=torch.float64)
    assert d.classes == tuple(str(c) for c in sorted(set(labels)))
    for features, y in zip(d.x, d.y, strict=True):
        assert int(d.classes[int(y)]) == labels[int(features[0])]
