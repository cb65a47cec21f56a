r"""Minibatch optimal-transport couplings (Tong et al. 2024; Pooladian et al. 2023).

Flow matching may pair each data point with any noise sample. Pairing a minibatch of
``n`` data points with ``n`` noise samples by the exact optimal-transport plan for the
squared Euclidean cost straightens the conditional paths (OT-CFM). With uniform weights
and equal batch sizes the optimal plan is a permutation (Birkhoff–von Neumann), so it is
the solution of the linear assignment problem

.. math:: \pi^\star = \arg\min_{\pi \in S_n} \sum_i \|x_i - y_{\pi(i)}\|^2 .

Three exact solvers (``backend=``):

- ``"pot"``: POT's network simplex (``ot.emd``, Bonneel et al. 2011; the solver torchcfm
  calls) with unit masses, so every basic solution is integral and the plan is a
  permutation matrix; install ``probpath[ot]``.
- ``"scipy"``: ``scipy.optimize.linear_sum_assignment``, shortest augmenting paths
  (Jonker & Volgenant 1987; Crouse 2016) in C++.
- ``"numpy"``: probpath's own shortest-augmenting-path solver in vectorised numpy,
  O(n³) in the worst case; dual variables start from a row and column reduction and
  rows whose cheapest column is free and tight are matched at once. A dependency-free
  fallback, ~10× slower than scipy at n = 256.

``"auto"`` takes the first importable of pot, scipy, numpy. On minibatch OT costs (noise
against clustered data: many near-ties) the network simplex is 2–3× faster than scipy's
augmenting paths at n = 256 (docs/benchmarks.md, "Flow matching"); on such costs both
are exact to float64 rounding.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from torch import Tensor

__all__ = ["Backend", "linear_assignment", "ot_coupling", "pairing_cost"]

Backend = Literal["auto", "numpy", "pot", "scipy"]


def _check_cost(cost: np.ndarray) -> np.ndarray:
    cost = np.asarray(cost, dtype=np.float64)
    if cost.ndim != 2 or cost.shape[0] != cost.shape[1]:
        raise ValueError(f"cost must be a square (n, n) matrix, got shape {cost.shape}")
    if not np.isfinite(cost).all():
        raise ValueError("cost has NaN or inf entries; the assignment needs finite costs")
    return cost


def _augment(
    cost: np.ndarray, u: np.ndarray, v: np.ndarray, row4col: np.ndarray, col4row: np.ndarray, i: int
) -> None:
    """One shortest augmenting path from the free row ``i``; updates duals and matching."""
    n = cost.shape[0]
    key = np.full(n, np.inf)  # tentative distances of the columns not yet final
    dist = np.zeros(n)  # final shortest reduced path length of the scanned columns
    pred = np.zeros(n, dtype=np.int64)  # row preceding each column on its path
    done = np.zeros(n, dtype=bool)  # columns whose distance is final
    v_open = v.copy()  # v, with -inf at final columns: their reduced costs read +inf
    rows = [i]  # rows reached (SR)
    min_val, row = 0.0, i
    while True:
        reduced = cost[row] - (u[row] - min_val) - v_open
        better = reduced < key
        key[better] = reduced[better]
        pred[better] = row
        j = int(np.argmin(key))
        min_val = dist[j] = float(key[j])
        key[j], v_open[j], done[j] = np.inf, -np.inf, True
        if row4col[j] < 0:
            break
        row = int(row4col[j])
        rows.append(row)
    # dual update keeps every matched edge tight and all reduced costs >= 0
    u[i] += min_val
    others = np.asarray(rows[1:], dtype=np.int64)
    if others.size:
        u[others] += min_val - dist[col4row[others]]
    v[done] -= min_val - dist[done]
    while True:  # flip the matching along the path
        r = int(pred[j])
        row4col[j] = r
        col4row[r], j = j, int(col4row[r])
        if r == i:
            break


def _assignment_numpy(cost: np.ndarray) -> np.ndarray:
    n = cost.shape[0]
    u = cost.min(1)
    v = (cost - u[:, None]).min(0)
    reduced = cost - u[:, None] - v
    col4row = np.full(n, -1, dtype=np.int64)
    row4col = np.full(n, -1, dtype=np.int64)
    best = reduced.argmin(1)
    tight = np.flatnonzero(reduced[np.arange(n), best] <= 0.0)
    cols, first = np.unique(best[tight], return_index=True)  # one row per tight column
    col4row[tight[first]] = cols
    row4col[cols] = tight[first]
    for i in np.flatnonzero(col4row < 0):
        _augment(cost, u, v, row4col, col4row, int(i))
    return col4row


def _importable(module: str) -> bool:
    try:
        __import__(module)
    except ImportError:
        return False
    return True


def _assignment_pot(cost: np.ndarray) -> np.ndarray:
    """Network simplex with unit masses: the optimal vertex is a 0/1 permutation matrix.

    POT's simplex can end "infeasible" on negative costs, so the cost is shifted to a
    minimum of 0 (a constant shift adds n·shift to every permutation: same argmin).
    """
    import ot

    n = cost.shape[0]
    ones = np.ones(n)
    plan, log = ot.emd(
        ones,
        ones,
        cost - cost.min(),
        numItermax=max(100_000, 100 * n * n),
        log=True,
        center_dual=False,
        check_marginals=False,
    )
    if log["result_code"] != 1:  # 1 = OPTIMAL; 3 = iteration limit
        raise RuntimeError(
            f"POT's network simplex stopped before optimality ({log['warning']}); "
            "use backend='scipy' or backend='numpy'"
        )
    return plan.argmax(1)


_NEEDS = {"pot": ("ot", "POT"), "scipy": ("scipy.optimize", "scipy")}  # module, package


def linear_assignment(cost: Tensor | np.ndarray, *, backend: Backend = "auto") -> Tensor:
    r"""Exact solution ``perm`` of :math:`\min_\pi \sum_i C_{i\pi(i)}` over permutations.

    ``backend`` is ``"pot"`` (network simplex, Bonneel et al. 2011), ``"scipy"``
    (shortest augmenting paths, Crouse 2016), ``"numpy"`` (probpath's own augmenting
    paths) or ``"auto"`` (the first importable of these, in that order). Returns a long
    tensor of shape (n,) on the CPU: row ``i`` is assigned to column ``perm[i]``.

    >>> linear_assignment(torch.tensor([[4.0, 1.0, 3.0], [2.0, 0.0, 5.0], [3.0, 2.0, 2.0]]))
    tensor([1, 0, 2])
    """
    c = _check_cost(cost.detach().cpu().numpy() if isinstance(cost, Tensor) else cost)
    if backend not in ("auto", "numpy", "pot", "scipy"):
        raise ValueError(f"backend must be 'auto', 'numpy', 'pot' or 'scipy', got {backend!r}")
    if backend == "auto":
        backend = next((b for b in ("pot", "scipy") if _importable(_NEEDS[b][0])), "numpy")
    elif backend != "numpy" and not _importable(_NEEDS[backend][0]):
        raise ImportError(
            f"backend={backend!r} needs {_NEEDS[backend][1]}: pip install 'probpath[ot]', "
            "or use backend='numpy' (probpath's own exact solver)"
        )
    if c.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long)
    if backend == "pot":
        perm = _assignment_pot(c)
    elif backend == "scipy":
        from scipy.optimize import linear_sum_assignment

        perm = linear_sum_assignment(c)[1]
    else:
        perm = _assignment_numpy(c)
    return torch.from_numpy(np.ascontiguousarray(perm, dtype=np.int64))


def pairing_cost(x: Tensor, y: Tensor) -> Tensor:
    r"""Mean squared distance of the pairing :math:`\frac1n \sum_i \|x_i - y_i\|^2`."""
    return (x - y).flatten(1).pow(2).sum(1).mean()


def ot_coupling(x: Tensor, y: Tensor, *, backend: Backend = "auto") -> Tensor:
    r"""Reorder ``y`` so that ``(x_i, y_i)`` is the exact OT pairing of the two minibatches.

    Minimises :math:`\sum_i \|x_i - y_{\pi(i)}\|^2` over permutations π (squared
    Euclidean cost over all non-batch dimensions) and returns ``y[π]``; no gradient
    flows through the choice of π. Never costlier than the identity pairing.

    >>> x = torch.tensor([[0.0], [10.0]])
    >>> ot_coupling(x, torch.tensor([[9.0], [1.0]]))
    tensor([[1.],
            [9.]])
    """
    if x.shape[0] != y.shape[0] or x.shape[1:] != y.shape[1:]:
        raise ValueError(
            f"x and y must be batches of equal size and shape, got {tuple(x.shape)} and "
            f"{tuple(y.shape)}"
        )
    with torch.no_grad():  # ||x_i||^2 + ||y_j||^2 - 2 x_i . y_j, one fused matrix product
        xf, yf = x.flatten(1).double(), y.flatten(1).double()
        sq = xf.pow(2).sum(1)[:, None] + yf.pow(2).sum(1)
        cost = torch.addmm(sq, xf, yf.T, alpha=-2)
    perm = linear_assignment(cost, backend=backend).to(y.device)
    return y[perm]
