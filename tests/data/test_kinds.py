"""Which kind of data a spec names, and integer rows as levels."""

import gzip

import numpy as np
import pytest
import torch

from probpath.data import data_kind, integer_dtype, write_idx
from probpath.train.rows import as_levels


@pytest.mark.parametrize(
    ("array", "kind", "levels"),
    [
        (np.zeros((4, 6), np.uint8), "discrete", 256),  # flattened 8-bit images
        (np.zeros((4, 6), np.bool_), "discrete", 2),
        (np.zeros((4, 6), np.int64), "discrete", None),  # levels from the values
        (np.zeros((4, 6), np.uint16), "discrete", None),
        (np.zeros((4, 6), np.float32), "continuous", None),
        (np.zeros((4, 8, 8), np.uint8), "images", None),  # (N, H, W)
        (np.zeros((4, 1, 8, 8), np.uint8), "images", None),
    ],
)
def test_npy_files_by_dtype_and_shape(tmp_path, array, kind, levels):
    path = tmp_path / "x.npy"
    np.save(path, array)
    assert data_kind(str(path)) == (kind, levels)


def test_every_other_source(tmp_path):
    assert data_kind("moons").kind == "continuous"
    assert data_kind("digits").kind == data_kind("mnist5k").kind == "images"
    torch.save(torch.zeros(3, 2, dtype=torch.uint8), tmp_path / "u.pt")
    torch.save(torch.zeros(3, 2, dtype=torch.long), tmp_path / "l.pt")
    torch.save(torch.zeros(3, 2), tmp_path / "f.pt")
    assert data_kind(str(tmp_path / "u.pt")) == ("discrete", 256)
    assert data_kind(str(tmp_path / "l.pt")) == ("discrete", None)
    assert data_kind(str(tmp_path / "f.pt")) == ("continuous", None)
    csv = tmp_path / "c.csv"
    csv.write_text("1,2\n3,4\n")
    assert data_kind(str(csv)).kind == "continuous"
    assert data_kind(str(csv), levels=5).kind == "discrete"  # declared discrete
    np.savez(tmp_path / "i.npz", x=np.zeros((3, 4, 4), np.uint8))
    assert data_kind(str(tmp_path / "i.npz")).kind == "images"
    assert data_kind(f"{tmp_path / 'i.npz'}:x").kind == "images"
    (tmp_path / "folder").mkdir()
    assert data_kind(str(tmp_path / "folder")).kind == "images"
    idx = tmp_path / "train-images-idx3-ubyte.gz"
    write_idx(idx, np.zeros((2, 3, 3), np.uint8))
    assert gzip.decompress(idx.read_bytes())[:4] == b"\x00\x00\x08\x03"
    assert data_kind(str(idx)).kind == "images"  # IDX: any other existing file
    with pytest.raises(ValueError, match="continuous toy set"):
        data_kind("moons", levels=4)


def test_as_levels_keeps_integers_and_refuses_the_rest():
    x, k = as_levels(torch.tensor([[0.0, 5.0], [2.0, 1.0]], dtype=torch.float64), "d", None)
    assert k == 6 and x.dtype == torch.uint8 and x.tolist() == [[0, 5], [2, 1]]
    assert as_levels(torch.zeros(2, 1, dtype=torch.float64), "d", None)[1] == 2  # K >= 2
    assert as_levels(torch.full((1, 1), 299.0), "d", 300)[0].dtype == torch.int32
    for bad, levels, value in [(-1.0, None, "-1"), (0.5, None, "0.5"), (7.0, 7, "7")]:
        with pytest.raises(ValueError, match=f"found {value} in row 1"):
            as_levels(torch.tensor([[1.0], [bad]], dtype=torch.float64), "d", levels)
    assert integer_dtype(256) == torch.uint8 and integer_dtype(2**40) == torch.int64
