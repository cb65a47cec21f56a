"""User files and the standardisation: round trips, change of variables, clear errors."""

import json
import math

import numpy as np
import pytest
import torch

from probpath.data import Standardizer, load_array, load_dataset

DATA = np.array([[1.0, 2.0, 3.0], [4.0, 5.0, 6.5], [-1.0, 0.0, 2.0]])


def _write_csv(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("suffix", [".npy", ".csv", ".pt"])
def test_round_trip(tmp_path, suffix):
    p = tmp_path / f"d{suffix}"
    if suffix == ".npy":
        np.save(p, DATA)
    elif suffix == ".pt":
        torch.save(torch.from_numpy(DATA), p)
    else:
        np.savetxt(p, DATA, delimiter=",")
    x = load_array(p, dim=3, dtype=torch.float64)
    assert torch.equal(x, torch.from_numpy(DATA))


def test_csv_header_detected(tmp_path):
    p = _write_csv(tmp_path / "h.csv", "x,y\n1,2\n\n3,4\n")
    assert load_array(p).tolist() == [[1.0, 2.0], [3.0, 4.0]]


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("1,2\n3,abc\n", r"line 2, column 2: 'abc'"),
        ("x,1\n2,3\n", r"line 1, column 1: 'x'"),  # half a header is not a header
        ("1,2\n3\n", "line 2 has 1 columns"),
        ("a,b\n", "no data"),
        ("a,b\n1,2\nnan,3\n4,5\ninf,1\n", r"lines 3, 5, columns 1 \(1-based\)"),
    ],
)
def test_csv_errors_name_rows_and_columns(tmp_path, text, match):
    with pytest.raises(ValueError, match=match):
        load_array(_write_csv(tmp_path / "bad.csv", text))


def test_bad_arrays(tmp_path):
    np.save(tmp_path / "one.npy", np.arange(4.0))
    with pytest.raises(ValueError, match=r"shape \(4,\).*reshape"):
        load_array(tmp_path / "one.npy")
    np.save(tmp_path / "three.npy", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="N x D"):
        load_array(tmp_path / "three.npy")
    np.save(tmp_path / "d.npy", DATA)
    with pytest.raises(ValueError, match="expected D=2 columns, got D=3"):
        load_array(tmp_path / "d.npy", dim=2)
    (tmp_path / "empty.npy").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        load_array(tmp_path / "empty.npy")
    bad = DATA.copy()
    bad[2, 1] = np.nan
    np.save(tmp_path / "nan.npy", bad)
    with pytest.raises(ValueError, match=r"rows 2, columns 1 \(0-based"):
        load_array(tmp_path / "nan.npy")
    torch.save({"x": torch.zeros(2, 2)}, tmp_path / "dict.pt")
    with pytest.raises(ValueError, match=r"torch\.Tensor, found dict"):
        load_array(tmp_path / "dict.pt")
    with pytest.raises(ValueError, match="unsupported file type"):
        load_array(tmp_path / "d.txt")
    with pytest.raises(ValueError, match="no such file"):
        load_array(tmp_path / "missing.npy")


def test_load_dataset(tmp_path):
    assert load_dataset("moons", 10, seed=1).shape == (10, 2)
    assert torch.equal(load_dataset("moons", 10, seed=1), load_dataset("moons", 10, seed=1))
    p = tmp_path / "d.npy"
    np.save(p, DATA)
    a, b = load_dataset(str(p), 2, seed=0), load_dataset(str(p), None, seed=0)
    assert torch.equal(a, b[:2])  # the same seeded order
    rows = {tuple(r) for r in b.tolist()}
    assert rows == {tuple(r) for r in torch.from_numpy(DATA).float().tolist()}  # a permutation
    with pytest.raises(ValueError, match="n=4 rows, the file has 3"):
        load_dataset(str(p), 4, seed=0)
    with pytest.raises(ValueError, match=r"neither a toy set .*8gaussians.*nor"):
        load_dataset("nope", 3, seed=0)


def test_standardizer_change_of_variables():
    g = torch.Generator().manual_seed(0)
    mean, std = torch.tensor([1.0, -2.0, 5.0]).double(), torch.tensor([0.5, 3.0, 10.0]).double()
    x = mean + std * torch.randn(500, 3, generator=g, dtype=torch.float64)
    s = Standardizer.fit(x)
    z = s.forward(x)
    # fit uses the population std: z has mean 0 and std 1 to rounding
    assert torch.allclose(z.mean(0), torch.zeros(3).double(), atol=1e-12)
    assert torch.allclose(z.std(0, unbiased=False), torch.ones(3).double())
    assert torch.allclose(s.inverse(z), x, atol=1e-12)
    # log p_x(x) = log p_z(z) + log|det dz/dx|, checked against the exact density of x
    # under the Gaussian N(mean_s, diag std_s^2) that a standard-normal z implies.
    ms, ss = torch.tensor(s.mean).double(), torch.tensor(s.std).double()
    exact = torch.distributions.Normal(ms, ss).log_prob(x).sum(-1)
    via_z = torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(-1) + s.log_abs_det_jacobian()
    assert torch.allclose(exact, via_z, atol=1e-12)
    assert s.log_abs_det_jacobian() == pytest.approx(-sum(math.log(v) for v in s.std))
    assert Standardizer.from_dict(json.loads(json.dumps(s.to_dict()))) == s


def test_standardizer_errors():
    s = Standardizer.fit(torch.tensor([[1.0, 2.0], [1.0, 4.0]]))
    assert s.std[0] == 1.0  # a constant column is shifted, not divided by 0
    with pytest.raises(ValueError, match="does not match the fitted D=2"):
        s.forward(torch.zeros(3, 3))
    with pytest.raises(ValueError, match="positive and finite; dimensions \\[1\\]"):
        Standardizer((0.0, 0.0), (1.0, 0.0))
    with pytest.raises(ValueError, match="same non-zero length"):
        Standardizer((0.0,), (1.0, 2.0))
    with pytest.raises(ValueError, match="keys 'mean' and 'std'"):
        Standardizer.from_dict({"mean": [0.0]})
