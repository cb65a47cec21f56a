"""sdeint against closed forms: OU moments, GBM strong order, noise shapes, reverse time."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from torch import Tensor

from probpath.solvers.sde import sdeint

F64 = torch.float64


def sde(f, g, noise_type: str = "diagonal") -> SimpleNamespace:
    """torchsde's SDE protocol from two functions."""
    return SimpleNamespace(f=f, g=g, noise_type=noise_type, sde_type="ito")


def _ou(theta: float, sigma: float) -> SimpleNamespace:
    return sde(lambda t, y: -theta * y, lambda t, y: torch.full_like(y, sigma))


@pytest.mark.parametrize("method", ["euler", "milstein"])
def test_ornstein_uhlenbeck_moments(method: str) -> None:
    theta, sigma, x0, h, n = 1.5, 0.8, 2.0, 0.02, 20_000
    ou = _ou(theta, sigma)
    t = torch.tensor([0.0, 0.3, 1.0, 2.0], dtype=F64)
    y0 = torch.full((n, 1), x0, dtype=F64)
    ys = sdeint(ou, y0, t, dt=h, method=method, generator=torch.Generator().manual_seed(0))
    assert ys.shape == (4, n, 1)
    torch.testing.assert_close(ys[0], y0)
    for k in range(1, 4):
        tk = t[k].item()
        mean = x0 * math.exp(-theta * tk)
        var = sigma**2 / (2 * theta) * (1 - math.exp(-2 * theta * tk))
        # Weak bias of the scheme (additive noise: Milstein = Euler): both apply the exact
        # linear recursion y <- (1 - θh) y + σ ΔW, whose moments are closed form.
        steps = round(tk / h)
        a = 1 - theta * h
        mean_em = x0 * a**steps
        var_em = sigma**2 * h * (1 - a ** (2 * steps)) / (1 - a**2)
        sample = ys[k, :, 0]
        # Sampling error: mean within 5 standard errors, variance within 5 chi-square
        # standard errors (SE of s^2 is σ² sqrt(2 / (n - 1)) for Gaussian samples), each
        # widened by the O(h) weak bias |EM moment - exact moment|.
        se_mean = math.sqrt(var_em / n)
        se_var = var_em * math.sqrt(2 / (n - 1))
        assert abs(sample.mean().item() - mean) < 5 * se_mean + abs(mean_em - mean)
        assert abs(sample.var().item() - var) < 5 * se_var + abs(var_em - var)
        assert abs(mean_em - mean) < 0.1 * mean and abs(var_em - var) < 0.1 * var  # O(h)


def _slope(dts: list[float], errs: list[float]) -> float:
    x = torch.log(torch.tensor(dts, dtype=F64))
    y = torch.log(torch.tensor(errs, dtype=F64))
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


@pytest.mark.parametrize(("method", "order"), [("euler", 0.5), ("milstein", 1.0)])
def test_gbm_strong_order(method: str, order: float) -> None:
    # dX = μX dt + σX dW has X_T = X_0 exp((μ - σ²/2) T + σ W_T) on the same Brownian path.
    mu, sigma, n_paths, fine = 1.0, 1.0, 4000, 2**9
    gen = torch.Generator().manual_seed(1)
    dw_fine = torch.randn(fine, n_paths, 1, generator=gen, dtype=F64) / math.sqrt(fine)
    y0 = torch.ones(n_paths, 1, dtype=F64)
    exact = torch.exp(torch.tensor(mu - sigma**2 / 2) + sigma * dw_fine.sum(0))
    t = torch.tensor([0.0, 1.0], dtype=F64)
    dts, errs = [], []
    for level in range(3, 8):  # dt = 2^-3 ... 2^-7, each sums 2^(9 - level) fine increments
        n = 2**level
        bm = dw_fine.reshape(n, fine // n, n_paths, 1).sum(1)
        gbm = sde(lambda t, y: mu * y, lambda t, y: sigma * y)
        ys = sdeint(gbm, y0, t, dt=1 / n, method=method, bm=bm)
        dts.append(1 / n)
        errs.append((ys[-1] - exact).abs().mean().item())
    # Observed order from a least-squares fit of log E|X_N - X(T)| on log dt; the slack of
    # 0.15 covers Monte-Carlo noise of 4000 paths and pre-asymptotic curvature.
    assert abs(_slope(dts, errs) - order) < 0.15


def test_reverse_time_equals_forward_in_reflected_time() -> None:
    # Integrating dy = f dt + g dW from t=1 down to 0 with steps h < 0 is the forward
    # integration in s = 1 - t of dy = -f ds + g dW (same increments, variance |h|).
    theta, sigma, n = 0.7, 0.3, 8
    gen = torch.Generator().manual_seed(2)
    y0 = torch.randn(n, 3, dtype=F64, generator=gen)
    bm = torch.randn(50, n, 3, dtype=F64, generator=gen) * math.sqrt(0.02)
    f = lambda t, y: -theta * y * (1 + t)  # noqa: E731
    g = lambda t, y: sigma * torch.cos(y) * t  # noqa: E731
    back = sdeint(sde(f, g), y0, torch.tensor([1.0, 0.5, 0.0], dtype=F64), dt=0.02, bm=bm)
    reflected = sde(lambda s, y: -f(1 - s, y), lambda s, y: g(1 - s, y))
    fwd = sdeint(reflected, y0, torch.tensor([0.0, 0.5, 1.0], dtype=F64), dt=0.02, bm=bm)
    torch.testing.assert_close(back, fwd, rtol=1e-12, atol=1e-12)


def test_reverse_time_moments() -> None:
    # Backwards from t=1 to 0, dy = -θ y dt + σ dW grows like forward dy = θ y ds + σ dW:
    # mean x0 e^{θ}, var σ²(e^{2θ} - 1)/(2θ); same 5-SE and O(h) bias budget as above.
    theta, sigma, x0, h, n = 0.5, 0.6, 1.0, 0.01, 20_000
    ou = _ou(theta, sigma)
    y0 = torch.full((n, 1), x0, dtype=F64)
    t = torch.tensor([1.0, 0.0], dtype=F64)
    ys = sdeint(ou, y0, t, dt=h, generator=torch.Generator().manual_seed(3))
    a, steps = 1 + theta * h, 100
    mean, var = x0 * math.exp(theta), sigma**2 * (math.exp(2 * theta) - 1) / (2 * theta)
    mean_em, var_em = x0 * a**steps, sigma**2 * h * (a ** (2 * steps) - 1) / (a**2 - 1)
    sample = ys[-1, :, 0]
    se_mean, se_var = math.sqrt(var_em / n), var_em * math.sqrt(2 / (n - 1))
    assert abs(sample.mean().item() - mean) < 5 * se_mean + abs(mean_em - mean)
    assert abs(sample.var().item() - var) < 5 * se_var + abs(var_em - var)


def test_noise_shapes() -> None:
    gen = torch.Generator().manual_seed(4)
    zero = lambda t, y: torch.zeros_like(y)  # noqa: E731
    t = torch.tensor([0.0, 1.0], dtype=F64)
    # Diagonal with a (batch, c, h, w) state and a broadcast diffusion of shape (batch, 1, 1, 1).
    y0 = torch.zeros(5, 2, 3, 3, dtype=F64)
    ones = sde(zero, lambda t, y: torch.ones(5, 1, 1, 1, dtype=F64))
    ys = sdeint(ones, y0, t, dt=0.1, generator=gen)
    assert ys.shape == (2, 5, 2, 3, 3) and ys[-1].std() > 0
    # Scalar: one Brownian motion per batch row, shared by coordinates scaled by c.
    c = torch.tensor([1.0, -2.0, 3.0], dtype=F64)
    y0 = torch.zeros(4, 3, dtype=F64)
    ys = sdeint(sde(zero, lambda t, y: c[:, None].expand(4, 3, 1), "scalar"), y0, t, dt=0.1)
    w = ys[-1] / c
    torch.testing.assert_close(w, w[:, :1].expand(4, 3), rtol=1e-12, atol=1e-12)
    # General: y_T = y_0 + G W_T exactly for constant G (batch, d, m) and zero drift.
    gmat = torch.randn(4, 3, 2, dtype=F64, generator=gen)
    bm = torch.randn(10, 4, 2, dtype=F64, generator=gen) * math.sqrt(0.1)
    ys = sdeint(sde(zero, lambda t, y: gmat, "general"), y0, t, bm=bm, dt=0.1)
    torch.testing.assert_close(ys[-1], (gmat @ bm.sum(0)[..., None])[..., 0])


def test_scalar_noise_milstein_matches_closed_form_linear_sde() -> None:
    # dX = σ X dW with X in R^2 driven by one W: X_T = X_0 exp(-σ²T/2 + σ W_T). Milstein's
    # strong error is O(h): with h = 2^-10 and σ = 0.5 the pathwise error stays below 1e-2.
    sigma, n, steps = 0.5, 200, 2**10
    gen = torch.Generator().manual_seed(5)
    bm = torch.randn(steps, n, 1, 1, dtype=F64, generator=gen) / math.sqrt(steps)
    y0 = torch.ones(n, 2, dtype=F64)
    t = torch.tensor([0.0, 1.0], dtype=F64)
    linear = sde(lambda t, y: torch.zeros_like(y), lambda t, y: sigma * y[..., None], "scalar")
    ys = sdeint(linear, y0, t, bm=bm, method="milstein", dt=1 / steps)
    exact = torch.exp(-(sigma**2) / 2 + sigma * bm.sum(0)[..., 0]).expand(n, 2)
    assert (ys[-1] - exact).abs().mean() < 1e-2


def test_steps_land_on_output_times() -> None:
    seen: list[float] = []

    def f(t: Tensor, y: Tensor) -> Tensor:
        seen.append(t.item())
        return torch.zeros_like(y)

    t = torch.tensor([0.0, 0.25, 0.3, 1.0], dtype=F64)
    sdeint(sde(f, lambda t, y: torch.zeros_like(y)), torch.zeros(1, 1, dtype=F64), t, dt=0.1)
    # [0, .25] -> 3 steps (0.1, 0.1, 0.05); [.25, .3] -> 1; [.3, 1] -> 7.
    assert len(seen) == 11
    assert any(abs(s - 0.25) < 1e-15 for s in seen) and any(abs(s - 0.3) < 1e-15 for s in seen)


def test_generator_reproducibility_and_dtype() -> None:
    ou = _ou(1.0, 1.0)
    y0 = torch.zeros(16, 2)
    t = torch.linspace(0, 1, 3)
    a = sdeint(ou, y0, t, dt=0.05, generator=torch.Generator().manual_seed(7))
    b = sdeint(ou, y0, t, dt=0.05, generator=torch.Generator().manual_seed(7))
    c = sdeint(ou, y0, t, dt=0.05, generator=torch.Generator().manual_seed(8))
    assert a.dtype == torch.float32 and torch.equal(a, b) and not torch.equal(a, c)


def test_gradient_flows_through_solver() -> None:
    # d y_T / d y_0 = (1 - θh)^N for the Euler recursion of OU, whatever the noise.
    theta = 0.5
    y0 = torch.ones(3, 1, dtype=F64, requires_grad=True)
    ys = sdeint(_ou(theta, 1.0), y0, torch.tensor([0.0, 1.0], dtype=F64), dt=0.1)
    ys[-1].sum().backward()
    assert y0.grad is not None
    torch.testing.assert_close(y0.grad, torch.full_like(y0, (1 - theta * 0.1) ** 10))


def test_bad_arguments_raise() -> None:
    ou = _ou(1.0, 1.0)
    f, g = ou.f, ou.g
    y0 = torch.zeros(4, 2)
    t = torch.tensor([0.0, 1.0])
    with pytest.raises(ValueError, match="dt must be"):
        sdeint(ou, y0, t, dt=0.0)
    with pytest.raises(ValueError, match="dt must be"):
        sdeint(ou, y0, t, dt=-0.1)
    with pytest.raises(ValueError, match="strictly increasing or decreasing"):
        sdeint(ou, y0, torch.tensor([0.0, 1.0, 0.5]), dt=0.1)
    with pytest.raises(ValueError, match="strictly increasing or decreasing"):
        sdeint(ou, y0, torch.tensor([0.0, 0.0]), dt=0.1)
    with pytest.raises(ValueError, match=r"f\(t, y\) returned shape"):
        sdeint(sde(lambda t, y: y[:, :1], g), y0, t, dt=0.1)
    with pytest.raises(ValueError, match=r"g\(t, y\) returned shape"):
        sdeint(sde(f, lambda t, y: torch.ones(4, 3)), y0, t, dt=0.1)
    with pytest.raises(ValueError, match=r"g\(t, y\) returned shape"):
        sdeint(sde(f, g, "general"), y0, t, dt=0.1)
    with pytest.raises(ValueError, match="Lévy areas"):
        sdeint(sde(f, lambda t, y: y[..., None], "general"), y0, t, method="milstein", dt=0.1)
    with pytest.raises(ValueError, match="bm must be a tensor of 10"):
        sdeint(ou, y0, t, bm=torch.zeros(9, 4, 2), dt=0.1)
    with pytest.raises(ValueError, match="bm has increments of shape"):
        sdeint(ou, y0, t, bm=torch.zeros(10, 4, 3), dt=0.1)
    with pytest.raises(ValueError, match="method must be"):
        sdeint(ou, y0, t, method="heun", dt=0.1)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="noise_type must be"):
        sdeint(sde(f, g, "additive"), y0, t, dt=0.1)
    with pytest.raises(ValueError, match="Itô"):
        sdeint(SimpleNamespace(f=f, g=g, noise_type="diagonal", sde_type="stratonovich"), y0, t)
    with pytest.raises(TypeError, match=r"f\(t, y\) \(drift\)"):
        sdeint((f, g), y0, t)  # type: ignore[arg-type]
