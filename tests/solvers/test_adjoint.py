"""Adjoint gradients against closed forms, backprop through the solver and finite differences.

Oracles: for ``y' = A y`` the solution is ``y(t) = exp(A (t - t0)) y0`` and autograd through
``torch.linalg.matrix_exp`` gives exact gradients for ``y0``, ``A`` and every output time.
For an MLP field the references are backprop through ``odeint`` and central differences.
"""

from __future__ import annotations

import weakref

import pytest
import torch
from torch import Tensor, nn

from probpath.solvers import SolverStats, odeint, odeint_adjoint

F64 = torch.float64
# dopri5 (order 5) at rtol = atol = 1e-10 keeps the local error per step near 1e-10; over
# O(100) steps on t ∈ [0, 1] with ‖A‖ ≲ 1 the global error of the solution and of the
# adjoint is ≲ 1e-8. Gradients are checked at 1e-6: two orders of margin, and far below
# what a wrong adjoint term (O(1) error) would give.
TOL = dict(rtol=1e-10, atol=1e-10)
GRAD_TOL = 1e-6


def _linear_problem(seed: int = 0) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = (0.5 * torch.randn(3, 3, generator=g, dtype=F64)).requires_grad_(True)
    y0 = torch.randn(4, 3, generator=g, dtype=F64).requires_grad_(True)
    w = torch.randn(4, 3, generator=g, dtype=F64)  # loss weights, see _loss
    return a, y0, w


def _loss(ys: Tensor, w: Tensor) -> Tensor:
    """L = Σ_i (i + 1) <w, y(t_i)> + 0.1 Σ_i |y(t_i)|²: every output time contributes."""
    steps = torch.arange(1, ys.shape[0] + 1, dtype=ys.dtype).view(-1, 1, 1)
    return (steps * w * ys).sum() + 0.1 * ys.square().sum()


def _grads(loss: Tensor, inputs: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    return torch.autograd.grad(loss, inputs)


@pytest.mark.parametrize(
    "times", [[0.0, 1.0], [0.0, 0.25, 0.7, 1.0], [1.0, 0.4, -0.5]], ids=["two", "many", "decr"]
)
def test_linear_field_matches_closed_form(times: list[float]) -> None:
    a, y0, w = _linear_problem()
    t = torch.tensor(times, dtype=F64, requires_grad=True)
    ys = odeint_adjoint(lambda t, y: y @ a.T, y0, t, adjoint_params=(a,), **TOL)
    got = _grads(_loss(ys, w), (y0, a, t))
    # closed form y(t_i) = y0 exp(A (t_i - t_0))^T, differentiated exactly by autograd
    exact = torch.stack([y0 @ torch.linalg.matrix_exp(a * (ti - t[0])).T for ti in t])
    want = _grads(_loss(exact, w), (y0, a, t))
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=GRAD_TOL, atol=GRAD_TOL)


class _MLPField(nn.Module):
    """f(t, y) = MLP(concat(y, t)), the reference problem of the benchmarks (smaller)."""

    def __init__(self, dim: int = 2, hidden: int = 16) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Linear(dim + 1, hidden), nn.Tanh(), nn.Linear(hidden, dim)).to(
            F64
        )

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.net(torch.cat([y, t.expand(y.shape[0], 1)], dim=1))


def test_mlp_field_matches_backprop_through_solver() -> None:
    field = _MLPField()
    y0 = torch.randn(5, 2, generator=torch.Generator().manual_seed(1), dtype=F64)
    y0.requires_grad_(True)
    t = torch.tensor([0.0, 0.5, 1.2], dtype=F64)
    params = tuple(field.parameters())
    w = torch.randn(5, 2, generator=torch.Generator().manual_seed(2), dtype=F64)
    got = _grads(_loss(odeint_adjoint(field, y0, t, **TOL), w), (y0, *params))
    want = _grads(_loss(odeint(field, y0, t, **TOL), w), (y0, *params))
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=GRAD_TOL, atol=GRAD_TOL)


def test_mlp_field_matches_finite_differences() -> None:
    field = _MLPField()
    y0 = torch.randn(3, 2, generator=torch.Generator().manual_seed(3), dtype=F64)
    w = torch.randn(3, 2, generator=torch.Generator().manual_seed(4), dtype=F64)
    t = torch.tensor([0.0, 0.6, 1.0], dtype=F64)
    weight = field.net[0].weight
    tight = dict(rtol=1e-12, atol=1e-12)

    def loss(y0_: Tensor, t_: Tensor) -> Tensor:
        with torch.no_grad():
            return _loss(odeint(field, y0_, t_, **tight), w)

    y0_ = y0.clone().requires_grad_(True)
    t_ = t.clone().requires_grad_(True)
    g_y0, g_t, g_w = _grads(_loss(odeint_adjoint(field, y0_, t_, **TOL), w), (y0_, t_, weight))
    # Central differences: truncation O(h^2 L''') ≈ 1e-8 and solver noise 1e-12 / h ≈ 1e-8
    # at h = 1e-4, so 1e-6 is again two orders of margin.
    h = 1e-4
    for tensor, grad, index in ((y0, g_y0, (1, 0)), (t, g_t, (0,)), (t, g_t, (1,)), (t, g_t, (2,))):
        bump = torch.zeros_like(tensor)
        bump[index] = h
        args_p = (y0 + bump, t) if tensor is y0 else (y0, t + bump)
        args_m = (y0 - bump, t) if tensor is y0 else (y0, t - bump)
        fd = (loss(*args_p) - loss(*args_m)) / (2 * h)
        torch.testing.assert_close(grad[index], fd, rtol=GRAD_TOL, atol=GRAD_TOL)
    with torch.no_grad():
        weight[0, 0] += h
        up = loss(y0, t)
        weight[0, 0] -= 2 * h
        down = loss(y0, t)
        weight[0, 0] += h
    torch.testing.assert_close(g_w[0, 0], (up - down) / (2 * h), rtol=GRAD_TOL, atol=GRAD_TOL)


def test_tuple_state_matches_closed_form() -> None:
    a, y0, w = _linear_problem(seed=5)
    t = torch.tensor([0.0, 0.3, 1.0], dtype=F64, requires_grad=True)
    pos, vel = y0[:, :1], y0[:, 1:]  # the same linear system, split into a tuple state

    def field(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        dy = torch.cat(state, dim=1) @ a.T
        return dy[:, :1], dy[:, 1:]

    ys_pos, ys_vel = odeint_adjoint(field, (pos, vel), t, adjoint_params=(a,), **TOL)
    got = _grads(_loss(torch.cat([ys_pos, ys_vel], dim=2), w), (y0, a, t))
    exact = torch.stack([y0 @ torch.linalg.matrix_exp(a * (ti - t[0])).T for ti in t])
    want = _grads(_loss(exact, w), (y0, a, t))
    for g, e in zip(got, want, strict=True):
        torch.testing.assert_close(g, e, rtol=GRAD_TOL, atol=GRAD_TOL)


def test_seminorm_cuts_backward_nfe() -> None:
    field = _MLPField(hidden=32)
    y0 = torch.randn(8, 2, generator=torch.Generator().manual_seed(6), dtype=F64)
    y0.requires_grad_(True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    tol = dict(rtol=1e-7, atol=1e-7)
    results = {}
    for norm in (None, "seminorm"):
        stats = SolverStats(0, 0, 0)
        options = {} if norm is None else {"norm": norm}
        ys = odeint_adjoint(field, y0, t, adjoint_options=options, adjoint_stats=stats, **tol)
        grads = _grads(ys[-1].square().sum(), (y0, *field.parameters()))
        results[norm] = (stats.nfe, grads)
    assert results["seminorm"][0] < results[None][0]
    # Both backward solves keep the local error of z and a_z below 1e-7 per step; over a
    # handful of steps with O(1) Lipschitz growth on [0, 1] the gradients' global error stays
    # well below 1e-5, so the two agree to 1e-4 (a wrong seminorm would give O(1) errors).
    for g, e in zip(results["seminorm"][1], results[None][1], strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-4)


def test_custom_adjoint_norm_sees_the_torchdiffeq_structure() -> None:
    a, y0, _ = _linear_problem(seed=7)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    seen: list[tuple[torch.Size, ...]] = []

    def semi(parts: tuple[Tensor, ...]) -> Tensor:  # (a_t, *z, *a_z, *a_params)
        seen.append(tuple(p.shape for p in parts))
        return torch.stack([p.square().mean().sqrt() for p in parts[1:3]]).max()

    counts = {}
    for norm in ("seminorm", semi):
        stats = SolverStats()
        ys = odeint_adjoint(
            lambda t, y: y @ a.T,
            y0,
            t,
            adjoint_params=(a,),
            adjoint_options={"norm": norm},
            adjoint_stats=stats,
            **TOL,
        )
        ys[-1].sum().backward()
        counts[norm == "seminorm"] = stats.nfe
    assert seen[0] == (torch.Size([]), y0.shape, y0.shape, a.shape)
    assert counts[True] == counts[False]  # the same seminorm, spelled by hand


@pytest.mark.parametrize("norm", ["rms", "max", "per_sample"])
def test_forward_norms(norm: str) -> None:
    a, y0, w = _linear_problem(seed=8)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=F64)
    ys = odeint_adjoint(
        lambda t, y: y @ a.T, y0, t, adjoint_params=(a,), options={"norm": norm}, **TOL
    )
    got = _grads(_loss(ys, w), (y0, a))
    exact = torch.stack([y0 @ torch.linalg.matrix_exp(a * ti).T for ti in t])
    for g, e in zip(got, _grads(_loss(exact, w), (y0, a)), strict=True):
        torch.testing.assert_close(g, e, rtol=GRAD_TOL, atol=GRAD_TOL)


class _Box:
    """Holds one saved tensor; autograd frees it exactly when it frees the saved tensor."""

    def __init__(self, x: Tensor) -> None:
        self.x = x


class _SavedBytes:
    """Peak bytes held by autograd's saved tensors (deterministic on CPU)."""

    def __init__(self) -> None:
        self.live = 0
        self.peak = 0

    def _release(self, nbytes: int) -> None:
        self.live -= nbytes

    def pack(self, x: Tensor) -> _Box:
        box = _Box(x)
        nbytes = x.numel() * x.element_size()
        self.live += nbytes
        self.peak = max(self.peak, self.live)
        weakref.finalize(box, self._release, nbytes)
        return box

    def unpack(self, box: _Box) -> Tensor:
        return box.x


def _peak_saved_bytes(adjoint: bool, n_steps: int) -> int:
    field = _MLPField()
    y0 = torch.randn(16, 2, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    solve = odeint_adjoint if adjoint else odeint
    meter = _SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        ys = solve(field, y0, t, method="rk4", options={"step_size": 1.0 / n_steps})
        ys[-1].sum().backward()
    return meter.peak


def test_memory_does_not_grow_with_steps() -> None:
    # The adjoint keeps only the outputs: 10x more steps must not hold one more byte.
    assert _peak_saved_bytes(True, 100) == _peak_saved_bytes(True, 10)
    # Control: the meter does see backprop through the solver grow with the step count.
    assert _peak_saved_bytes(False, 100) > 5 * _peak_saved_bytes(False, 10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtypes(dtype: torch.dtype) -> None:
    field = _MLPField().to(dtype)
    y0 = torch.randn(4, 2, dtype=dtype, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=dtype)
    odeint_adjoint(field, y0, t, rtol=1e-5, atol=1e-5)[-1].sum().backward()
    assert y0.grad is not None and y0.grad.dtype == dtype
    assert all(p.grad is not None and p.grad.dtype == dtype for p in field.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    field = _MLPField()
    y0 = torch.randn(4, 2, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    grads = []
    for device in ("cpu", "cuda"):
        field.to(device)
        y = y0.to(device).requires_grad_(True)
        ys = odeint_adjoint(field, y, t.to(device), **TOL)
        grads.append(_grads(ys[-1].square().sum(), (y,))[0].cpu())
    torch.testing.assert_close(grads[0], grads[1], rtol=GRAD_TOL, atol=GRAD_TOL)


def test_errors_teach() -> None:
    a, y0, _ = _linear_problem()
    t = torch.tensor([0.0, 1.0], dtype=F64)

    def plain(t: Tensor, y: Tensor) -> Tensor:
        return y @ a.T

    with pytest.raises(ValueError, match="adjoint_params"):
        odeint_adjoint(plain, y0, t)
    with pytest.raises(ValueError, match="seminorm"):
        odeint_adjoint(plain, y0, t, adjoint_params=(a,), adjoint_options={"norm": "l1"})
    with pytest.raises(ValueError, match="adjoint_options"):
        odeint_adjoint(
            plain,
            y0,
            t,
            adjoint_params=(a,),
            method="rk4",
            options={"step_size": 0.1},
            adjoint_method="euler",
        )
    with pytest.raises(TypeError, match="y0"):
        odeint_adjoint(plain, [y0], t, adjoint_params=(a,))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="adjoint_options"):
        odeint_adjoint(plain, y0, t, adjoint_params=(a,), adjoint_options="seminorm")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="adjoint_params"):
        odeint_adjoint(plain, y0, t, adjoint_params=(1.0,))  # type: ignore[arg-type]
