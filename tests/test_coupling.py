"""Minibatch OT coupling: the exact assignment against scipy and brute force."""

from __future__ import annotations

import itertools
import sys

import numpy as np
import pytest
import torch
from scipy.optimize import linear_sum_assignment

from probpath import coupling
from probpath.coupling import linear_assignment, ot_coupling, pairing_cost

BACKENDS = ["numpy", "pot", "scipy"]


def brute_force(cost: np.ndarray) -> float:
    n = cost.shape[0]
    return min(cost[np.arange(n), list(p)].sum() for p in itertools.permutations(range(n)))


def total(cost: np.ndarray, perm: torch.Tensor) -> float:
    return float(cost[np.arange(cost.shape[0]), perm.numpy()].sum())


@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_brute_force_on_tiny_problems(backend: str) -> None:
    # exact solvers: equal optimal cost up to float64 summation error (n terms of O(10))
    rng = np.random.default_rng(0)
    for n in range(1, 7):
        for _ in range(20):
            cost = rng.standard_normal((n, n)) * 3
            if rng.random() < 0.3:  # many ties: integer costs
                cost = rng.integers(0, 3, (n, n)).astype(float)
            perm = linear_assignment(cost, backend=backend)  # type: ignore[arg-type]
            assert sorted(perm.tolist()) == list(range(n))
            assert total(cost, perm) == pytest.approx(brute_force(cost), abs=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "pot"])
def test_solvers_match_scipy_on_ot_problems(backend: str) -> None:
    # minibatch OT costs (noise vs a two-cluster law) have many near-ties: the hard case
    rng = np.random.default_rng(1)
    for n in (17, 64, 150):
        x = rng.standard_normal((n, 2))
        y = 0.5 * rng.standard_normal((n, 2)) + rng.choice([-2.0, 2.0], (n, 2))
        cost = ((x[:, None] - y[None]) ** 2).sum(-1)
        ref = cost[np.arange(n), linear_sum_assignment(cost)[1]].sum()
        mine = total(cost, linear_assignment(cost, backend=backend))  # type: ignore[arg-type]
        assert mine == pytest.approx(ref, rel=1e-12)  # float64 rounding of n terms


@pytest.mark.parametrize("backend", BACKENDS)
def test_ot_coupling_is_a_permutation_never_worse_than_identity(backend: str) -> None:
    g = torch.Generator().manual_seed(0)
    for n in (1, 5, 64):
        x = torch.randn(n, 3, generator=g, dtype=torch.float64)
        y = torch.randn(n, 3, generator=g, dtype=torch.float64) + 1.0
        y_ot = ot_coupling(x, y, backend=backend)  # type: ignore[arg-type]
        assert torch.equal(torch.sort(y_ot, 0).values, torch.sort(y, 0).values)
        assert pairing_cost(x, y_ot) <= pairing_cost(x, y)
        if n <= 5:  # the brute-force optimum of the squared-distance pairing
            cost = (torch.cdist(x, y) ** 2).numpy()
            assert float(pairing_cost(x, y_ot)) * n == pytest.approx(brute_force(cost), rel=1e-12)


def test_ot_coupling_flattens_images_and_keeps_dtype() -> None:
    y = torch.stack([torch.full((1, 2, 2), 5.0), torch.zeros(1, 2, 2)])
    x = y.flip(0) + 0.1
    out = ot_coupling(x, y)
    assert out.dtype == y.dtype and torch.equal(out, y.flip(0))


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="square"):
        linear_assignment(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="NaN or inf"):
        linear_assignment(np.array([[0.0, np.nan], [1.0, 0.0]]))
    with pytest.raises(ValueError, match="backend"):
        linear_assignment(np.zeros((2, 2)), backend="lapjv")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="equal size"):
        ot_coupling(torch.zeros(3, 2), torch.zeros(4, 2))


@pytest.mark.parametrize(("backend", "module"), [("scipy", "scipy.optimize"), ("pot", "ot")])
def test_missing_backend_says_what_to_install(monkeypatch, backend: str, module: str) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # import now fails
    with pytest.raises(ImportError, match=r"probpath\[ot\]"):
        linear_assignment(np.eye(2), backend=backend)  # type: ignore[arg-type]


def test_auto_backend_falls_back_in_order(monkeypatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(coupling, "_assignment_pot", lambda c: calls.append("pot") or [1, 0])
    assert linear_assignment(np.array([[1.0, 0.0], [0.0, 1.0]])).tolist() == [1, 0]
    assert calls == ["pot"]  # POT first when importable
    monkeypatch.setitem(sys.modules, "ot", None)
    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    # neither: probpath's own solver
    assert linear_assignment(np.array([[1.0, 0.0], [0.0, 1.0]])).tolist() == [1, 0]
    assert calls == ["pot"]


def test_pot_backend_refuses_a_stopped_simplex(monkeypatch) -> None:
    import ot

    def stopped(*args, **kwargs):
        return np.eye(2), {"result_code": 3, "warning": "numItermax reached before optimality"}

    monkeypatch.setattr(ot, "emd", stopped)
    with pytest.raises(RuntimeError, match="before optimality"):
        linear_assignment(np.eye(2), backend="pot")
