"""probpath.solvers.odeint against closed forms, torchdiffeq and scipy.

Oracles (float64 unless the test is about float32): y' = A y with exp(tA) y0;
y' = -2 t y^2 with y = 1 / (1 + t^2) (nonlinear and non-autonomous, so every node c_i
matters); the harmonic oscillator with (cos, -sin).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchdiffeq
from scipy.integrate import solve_ivp

from probpath.solvers import SolverError, SolverStats, odeint, rms_norm

F64 = torch.float64
FIXED = {"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}
ADAPTIVE = ("dopri5", "bosh3")


def riccati(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return -2 * t * y**2


def riccati_exact(t: torch.Tensor) -> torch.Tensor:
    return 1 / (1 + t**2)


def oscillator(t: torch.Tensor, y: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
    x, v = y
    return v, -x


@pytest.mark.parametrize("method", ADAPTIVE)
def test_linear_system_against_matrix_exp(method: str) -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4, 4, generator=g, dtype=F64) / 2
    y0 = torch.randn(4, generator=g, dtype=F64)
    t = torch.linspace(0, 2, 5, dtype=F64)
    y = odeint(lambda s, y: a @ y, y0, t, method=method, rtol=1e-10, atol=1e-10)
    exact = torch.stack([torch.linalg.matrix_exp(a * s) @ y0 for s in t])
    # Tolerance per step is 1e-10; the global error is that times the growth of
    # perturbations, exp(||A|| T) <= e^4 here, and the number of steps: 1e-6 is ample.
    torch.testing.assert_close(y, exact, rtol=0, atol=1e-6)
    assert y.shape == (5, 4)


@pytest.mark.parametrize("method", [*ADAPTIVE, "rk4"])
def test_harmonic_oscillator_tuple_state(method: str) -> None:
    t = torch.linspace(0, 2 * math.pi, 9, dtype=F64)
    y0 = (torch.ones(3, dtype=F64), torch.zeros(3, dtype=F64))
    opts = {"step_size": 0.01} if method == "rk4" else None
    x, v = odeint(oscillator, y0, t, method=method, rtol=1e-9, atol=1e-9, options=opts)
    assert x.shape == v.shape == (9, 3)
    # rk4 at h = 0.01: global error ~ T h^4 / 5! ~ 1e-9; adaptive: ~100 x tol.
    torch.testing.assert_close(x, torch.cos(t)[:, None].expand(9, 3), rtol=0, atol=1e-6)
    torch.testing.assert_close(v, -torch.sin(t)[:, None].expand(9, 3), rtol=0, atol=1e-6)


@pytest.mark.parametrize("method", FIXED)
def test_observed_order_of_fixed_methods(method: str) -> None:
    t_end = torch.tensor([0.0, 2.0], dtype=F64)
    hs = [0.1, 0.05, 0.025, 0.0125]
    errs = []
    for h in hs:
        y = odeint(
            riccati, torch.ones((), dtype=F64), t_end, method=method, options={"step_size": h}
        )
        errs.append(abs(float(y[-1] - riccati_exact(t_end[-1]))))
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    # The global error is C h^p + O(h^(p+1)); over a factor 8 in h the fitted slope
    # lies within 0.3 of p (the criterion).
    assert abs(slope - FIXED[method]) < 0.3, (method, slope, errs)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_error_scales_with_tolerance(method: str) -> None:
    t = torch.tensor([0.0, 2.0], dtype=F64)
    errs = []
    for tol in (1e-5, 1e-7, 1e-9):
        y = odeint(riccati, torch.ones(1, dtype=F64), t, method=method, rtol=tol, atol=tol)
        errs.append(abs(float(y[-1, 0] - riccati_exact(t[-1]))))
        # the per-step tolerance accumulates over the steps: ~10 x tol globally here
        assert errs[-1] < 10 * tol, (tol, errs)
    # tolerance proportionality: 100 x smaller tol gives a markedly smaller error
    assert errs[1] < errs[0] / 10 and errs[2] < errs[1] / 10, errs


@pytest.mark.parametrize("method", ADAPTIVE)
def test_dense_output_costs_no_steps_and_is_accurate(method: str) -> None:
    t_two = torch.tensor([0.0, 2.0], dtype=F64)
    t_many = torch.linspace(0, 2, 41, dtype=F64)
    s_two, s_many = SolverStats(), SolverStats()
    odeint(riccati, torch.ones(2, dtype=F64), t_two, method=method, stats=s_two, rtol=1e-8)
    y = odeint(riccati, torch.ones(2, dtype=F64), t_many, method=method, stats=s_many, rtol=1e-8)
    assert s_many == s_two  # off-grid outputs are interpolated, not stepped to
    exact = riccati_exact(t_many)[:, None].expand(41, 2)
    # interpolant of order >= 3 on steps of local error 1e-8: well below 1e-5
    torch.testing.assert_close(y, exact, rtol=0, atol=1e-5)


@pytest.mark.parametrize(("method", "order"), [("dopri5", 4), ("bosh3", 3)])
def test_dense_output_order(method: str, order: int) -> None:
    # One step of size h (loose tolerance, so it is accepted), output at 0.37 h: the
    # interpolant of order p has local error O(h^(p+1)).
    hs = [0.4, 0.2, 0.1]
    errs = []
    for h in hs:
        t = torch.tensor([0.0, 0.37 * h, h], dtype=F64)
        y0 = riccati_exact(torch.tensor(0.5, dtype=F64))
        y = odeint(riccati, y0, t + 0.5, method=method, rtol=1, atol=1,
                   options={"first_step": h})  # fmt: skip
        errs.append(abs(float(y[1] - riccati_exact(t[1] + 0.5))))
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert slope > order + 1 - 0.3, (slope, errs)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_decreasing_t(method: str) -> None:
    t = torch.linspace(2, 0, 6, dtype=F64)
    opts = {"step_size": 0.01} if method == "rk4" else None
    y0 = riccati_exact(t[0]).reshape(1)
    y = odeint(riccati, y0, t, method=method, rtol=1e-8, atol=1e-8, options=opts)
    # rk4 at h = 0.01: ~T h^4 = 2e-8; dopri5: steps x tol ~ 1e-8^(4/5) = 4e-7
    torch.testing.assert_close(y[:, 0], riccati_exact(t), rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4", "euler"])
def test_dtypes_and_batched_shapes(dtype: torch.dtype, method: str) -> None:
    y0 = torch.ones(5, 3, 2, dtype=dtype)
    t = torch.tensor([0.0, 0.5, 1.0], dtype=dtype)
    opts = {"step_size": 1e-3 if method == "euler" else 1e-2} if method in FIXED else None
    y = odeint(riccati, y0, t, method=method, rtol=1e-6, atol=1e-6, options=opts)
    assert y.shape == (3, 5, 3, 2) and y.dtype == dtype
    exact = riccati_exact(t).reshape(3, 1, 1, 1).expand_as(y)
    # euler at h = 1e-3: error ~ h; otherwise tolerance 1e-6 (float32 eps ~ 1e-7)
    torch.testing.assert_close(y, exact, rtol=0, atol=2e-3 if method == "euler" else 1e-5)


def _mlp_field() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(3, 16), torch.nn.Tanh(), torch.nn.Linear(16, 2)
    ).double()
    return net, torch.randn(4, 2, dtype=F64)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_agrees_with_scipy_and_torchdiffeq_on_mlp_field(method: str) -> None:
    net, y0 = _mlp_field()

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return net(torch.cat([y, t.expand(y.shape[0], 1)], dim=1))

    t = torch.linspace(0, 1, 4, dtype=F64)
    with torch.no_grad():
        ours = odeint(f, y0, t, method=method, rtol=1e-8, atol=1e-8)
        theirs = torchdiffeq.odeint(f, y0, t, method=method, rtol=1e-8, atol=1e-8)

        def g(s: float, y: np.ndarray) -> np.ndarray:
            return (
                f(torch.tensor(s, dtype=F64), torch.from_numpy(y).reshape(4, 2)).reshape(-1).numpy()
            )

        ref = solve_ivp(
            g, (0, 1), y0.reshape(-1).numpy(), "DOP853", t.numpy(), rtol=1e-13, atol=1e-13
        )
    ref_t = torch.from_numpy(ref.y.T).reshape(4, 4, 2)
    # Each step errs by about tol = 1e-8, and there are ~tol^(-1/k) steps (k = 5 for
    # dopri5, 3 for bosh3); the field is Lipschitz ~1 over T = 1, so the global error is
    # about tol^(1 - 1/k): 4x that is the bound, for us and for torchdiffeq alike.
    bound = 4 * 1e-8 ** (1 - 1 / (5 if method == "dopri5" else 3))
    torch.testing.assert_close(ours, ref_t, rtol=0, atol=bound)
    torch.testing.assert_close(theirs, ref_t, rtol=0, atol=bound)


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4"])
def test_fixed_grid_equals_torchdiffeq(method: str) -> None:
    net, y0 = _mlp_field()
    t = torch.linspace(0, 1, 11, dtype=F64)

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return net(torch.cat([y, t.expand(y.shape[0], 1)], dim=1))

    with torch.no_grad():  # same method on the same grid: equal to rounding
        torch.testing.assert_close(
            odeint(f, y0, t, method=method), torchdiffeq.odeint(f, y0, t, method=method)
        )


@pytest.mark.parametrize("method", ["rk4", "dopri5"])
def test_backprop_through_solver_matches_finite_differences(method: str) -> None:
    g = torch.Generator().manual_seed(1)
    w = torch.randn(3, 3, generator=g, dtype=F64, requires_grad=True)
    y0 = torch.randn(2, 3, generator=g, dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 0.7, 1.0], dtype=F64)
    kw = {"options": {"step_size": 0.05}} if method == "rk4" else {"rtol": 1e-12, "atol": 1e-12}

    def loss(w: torch.Tensor, y0: torch.Tensor) -> torch.Tensor:
        return odeint(lambda s, y: torch.tanh(y @ w) * s, y0, t, method=method, **kw).square().sum()

    # rk4 on a fixed grid is a smooth map: exact gradcheck. dopri5's steps depend on the
    # inputs, which moves the output by ~tol = 1e-12; with eps = 1e-5 that is 1e-7
    # relative, against an O(eps^2) = 1e-10 truncation error: atol 1e-5 is safe.
    assert torch.autograd.gradcheck(loss, (w, y0), eps=1e-5, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("method", ["dopri5", "bosh3", "rk4", "heun"])
def test_stats_count_every_evaluation(method: str) -> None:
    calls = 0

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return riccati(t, y)

    stats = SolverStats()
    odeint(f, torch.ones(3, dtype=F64), torch.linspace(0, 2, 5, dtype=F64), method=method,
           rtol=1e-6, atol=1e-6, options={"step_size": 0.1} if method in FIXED else None,
           stats=stats)  # fmt: skip
    assert stats.nfe == calls > 0
    assert stats.n_accepted > 0
    if method in FIXED:
        assert stats.n_accepted == 20 and stats.nfe == 20 * (4 if method == "rk4" else 2)


def test_per_sample_norm_holds_every_sample_to_tolerance() -> None:
    # 63 slow samples and one fast one: under one RMS over the batch, the fast sample's
    # error is diluted by sqrt(64) = 8 and it exceeds what it gets when solved alone.
    rates = torch.ones(64, 1, dtype=F64)
    rates[0] = 30.0
    t = torch.tensor([0.0, 1.0], dtype=F64)
    exact = torch.exp(-rates[:, 0])
    y0 = torch.ones(64, 1, dtype=F64)

    def solve(y: torch.Tensor, r: torch.Tensor, norm: str) -> torch.Tensor:
        out = odeint(lambda s, z: -r * z, y, t, rtol=1e-6, atol=1e-6, options={"norm": norm})
        return (out[-1, :, 0] - torch.exp(-r[:, 0])).abs()

    alone = solve(y0[:1], rates[:1], "rms")[0]
    per_sample = solve(y0, rates, "per_sample")
    rms = solve(y0, rates, "rms")
    assert per_sample[0] <= 1.01 * alone  # steps are at most those of the solo solve
    assert rms[0] > 2 * alone  # the failure mode that per_sample fixes
    assert bool((per_sample <= 10 * 1e-6 * (1 + exact)).all())


def test_callable_norm_seminorm() -> None:
    y0 = (torch.ones(2, dtype=F64), torch.zeros(1, dtype=F64))

    def f(t: torch.Tensor, y: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return -y[0], torch.sin(40 * t).reshape(1)  # the second part is ignored by the norm

    t = torch.tensor([0.0, 1.0], dtype=F64)
    full, semi = SolverStats(), SolverStats()
    odeint(f, y0, t, rtol=1e-6, atol=1e-6, stats=full)
    y, _ = odeint(
        f, y0, t, rtol=1e-6, atol=1e-6, stats=semi, options={"norm": lambda r: rms_norm(r[:1])}
    )
    assert semi.nfe < full.nfe
    torch.testing.assert_close(y[-1], torch.full((2,), math.exp(-1), dtype=F64), rtol=0, atol=1e-5)


def test_autograd_modes() -> None:
    w = torch.ones((), dtype=F64, requires_grad=True)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    y0 = torch.ones(2, dtype=F64)
    with torch.no_grad():
        assert odeint(lambda s, y: -w * y, y0, t).grad_fn is None
    assert odeint(lambda s, y: -w * y, y0, t).requires_grad


def test_grid_points_and_step_size() -> None:
    t = torch.tensor([0.0, 1.0], dtype=F64)
    a = odeint(riccati, torch.ones(1, dtype=F64), t, method="rk4", options={"step_size": 0.25})
    grid = torch.tensor([0.75, 0.25, 0.5], dtype=F64)  # any order; t is merged in
    b = odeint(riccati, torch.ones(1, dtype=F64), t, method="rk4", options={"grid_points": grid})
    torch.testing.assert_close(a, b)


def _bad(**kw: object) -> None:
    args: dict[str, object] = {"func": riccati, "y0": torch.ones(2), "t": torch.tensor([0.0, 1.0])}
    args.update(kw)
    odeint(args.pop("func"), args.pop("y0"), args.pop("t"), **args)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kw", "err", "match"),
    [
        ({"t": torch.tensor([0.0, 1.0, 0.5])}, ValueError, "strictly increasing or strictly"),
        ({"t": torch.tensor([[0.0, 1.0]])}, ValueError, "1-D tensor"),
        ({"rtol": 0.0}, ValueError, "rtol must be a positive"),
        ({"atol": -1e-9}, ValueError, "atol must be a positive"),
        ({"method": "rk45"}, ValueError, "unknown method 'rk45'; choose one of 'bosh3', 'dopri5'"),
        ({"func": lambda t, y: y[:1]}, ValueError, r"shape \(1,\) but y has shape \(2,\)"),
        ({"func": lambda t, y: y.double()}, TypeError, "dtype torch.float64 but y has"),
        ({"func": lambda t, y: (y,)}, TypeError, "must return a tensor like y"),
        ({"y0": torch.ones(2, dtype=torch.long)}, TypeError, "must be floating point"),
        ({"y0": [torch.ones(2)]}, TypeError, "tensor or a non-empty tuple"),
        ({"options": {"step_size": 0.1}}, ValueError, r"not used by the adaptive method"),
        ({"options": {"norm": "l2"}}, ValueError, "unknown norm 'l2'"),
        ({"y0": torch.tensor(1.0), "options": {"norm": "per_sample"}}, ValueError, "batch"),
        (
            {"method": "rk4", "options": {"step_size": 0.1, "grid_points": torch.ones(2)}},
            ValueError,
            "not both",
        ),
        ({"options": {"max_num_steps": 0}}, ValueError, "positive int"),
        ({"func": 3}, TypeError, "func must be callable"),
    ],
)
def test_argument_errors_teach(kw: dict[str, object], err: type[Exception], match: str) -> None:
    with pytest.raises(err, match=match):
        _bad(**kw)


def test_solver_failures_raise_not_hang() -> None:
    with pytest.raises(SolverError, match="max_num_steps=5"):
        _bad(func=lambda t, y: torch.cos(50 * t) * y, options={"max_num_steps": 5})
    # y' = y^2, y(0) = 1 blows up at t = 1
    with pytest.raises(SolverError, match=r"step size underflow|not finite"):
        _bad(func=lambda t, y: y**2, y0=torch.ones(2, dtype=F64), t=torch.tensor([0.0, 2.0]))
    # f is nan from t > 0.5 on, so the euler step from 0.6 gives the first nan, at 0.7
    nan_after = lambda t, y: torch.where(t > 0.5, torch.nan, -y)  # noqa: E731
    with pytest.raises(SolverError, match=r"not finite \(nan or inf\) at t=0\.7"):
        _bad(func=nan_after, method="euler", t=torch.linspace(0, 1, 11))
    with pytest.raises(SolverError, match="not finite"):
        _bad(func=nan_after)


@pytest.mark.parametrize("method", ADAPTIVE)
def test_func_is_never_called_outside_the_span_of_t(method: str) -> None:
    seen: list[float] = []

    def f(t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        seen.append(float(t))
        return torch.cos(t) * y

    odeint(f, torch.ones(2, dtype=F64), torch.tensor([1.0, 0.999, 0.0], dtype=F64), method=method)
    odeint(f, torch.ones(2, dtype=F64), torch.tensor([0.0, 1e-3], dtype=F64), method=method)
    assert min(seen) >= 0.0 and max(seen) <= 1.0


@pytest.mark.parametrize("method", ADAPTIVE)
def test_zero_error_grows_the_step(method: str) -> None:
    # y' = 1 is integrated exactly, so the error estimate is 0: the step must grow by
    # ifactor = 10 per step, not stall at HINIT's 1e-6 guess (a hang in all but name).
    stats = SolverStats()
    t = torch.tensor([0.0, 1000.0], dtype=F64)
    y = odeint(lambda s, y: torch.ones_like(y), torch.zeros(1, dtype=F64), t, method=method,
               stats=stats)  # fmt: skip
    assert float(y[-1, 0]) == pytest.approx(1000.0, rel=1e-12)
    assert stats.n_accepted < 20


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_cuda_matches_cpu(method: str) -> None:
    y0 = torch.ones(8, 2, dtype=F64)
    t = torch.linspace(0, 2, 5, dtype=F64)
    opts = {"step_size": 0.05} if method == "rk4" else None
    cpu = odeint(riccati, y0, t, method=method, options=opts)
    gpu = odeint(riccati, y0.cuda(), t.cuda(), method=method, options=opts)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu)  # same steps; differences are rounding
