"""DPM-Solver-1/2/3 and DPM-Solver++(2M) against closed forms.

For Gaussian data N(m, S) the probability-flow ODE is linear and solved in closed form,
``x_t - alpha_t m = C_t^{1/2} C_s^{-1/2} (x_s - alpha_s m)`` with ``C = alpha^2 S + sigma^2 I``
(every C_t commutes with S), so each solver's global error is measured exactly, on every
kind of Gaussian path; the closed form itself is checked against dopri5.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from probpath.analytic import Gaussian
from probpath.cli import main
from probpath.models.diffusion import DiffusionModel
from probpath.paths import VPSchedule, make_schedule
from probpath.samplers import (
    ddim,
    dpm_solver,
    dpm_solver_pp,
    logsnr_times,
    probability_flow,
)

MEAN = torch.tensor([1.0, -0.5], dtype=torch.float64)
COV = torch.tensor([[0.5, 0.2], [0.2, 0.3]], dtype=torch.float64)
SCHEDULES = ["vp", "subvp", "ve", "ot", "ddpm-linear", "ddpm-cosine"]


def _oracle(name: str) -> tuple[DiffusionModel, torch.Tensor, torch.Tensor]:
    """A model with the exact eps of N(MEAN, COV), prior draws x_1 and the exact x_0."""
    gauss = Gaussian(MEAN, COV, make_schedule(name))
    model = DiffusionModel(dim=2, schedule=name, net=gauss.eps_mean).double()
    x1 = model.prior_sample(64, generator=torch.Generator().manual_seed(0))
    ends = model.schedule(torch.tensor([model.t_max, model.t_min], dtype=torch.float64))
    lam, u = torch.linalg.eigh(COV)
    var = ends.alpha[:, None] ** 2 * lam + ends.sigma[:, None] ** 2  # eigenvalues of C_t
    x0 = ends.alpha[1] * MEAN + ((x1 - ends.alpha[0] * MEAN) @ u) * (var[1] / var[0]).sqrt() @ u.T
    return model, x1, x0


def test_closed_form_reference_is_the_pf_ode_solution() -> None:
    for name in ("vp", "ot"):
        model, x1, x0 = _oracle(name)
        ends = torch.tensor([model.t_max, model.t_min], dtype=torch.float64)
        ref = probability_flow(model.velocity, x1, ends, rtol=1e-10, atol=1e-10)[0]
        assert (ref - x0).abs().max() < 1e-8  # dopri5's error at rtol = atol = 1e-10


def _solve(model: DiffusionModel, x1: torch.Tensor, method: str, steps: int) -> torch.Tensor:
    ts = logsnr_times(model.schedule, steps, t_min=model.t_min, t_max=model.t_max)
    if method == "2m":
        return dpm_solver_pp(model.x0, x1, ts, schedule=model.schedule)[0]
    return dpm_solver(model.eps, x1, ts, schedule=model.schedule, order=int(method))[0]


@pytest.mark.parametrize("name", SCHEDULES)
def test_global_error_has_the_stated_order(name: str) -> None:
    """Observed order log2(e_40 / e_80) within 0.3 of the nominal one. At 40 -> 80 steps
    the solvers are in their asymptotic regime on every path (from 5 steps on, the ratios
    approach the order from above for the singlestep solvers, from below for 2M)."""
    model, x1, x0 = _oracle(name)
    for method, order in (("1", 1), ("2", 2), ("3", 3), ("2m", 2)):
        e40, e80 = ((_solve(model, x1, method, n) - x0).abs().max().item() for n in (40, 80))
        observed = math.log2(e40 / e80)
        assert abs(observed - order) < 0.3, (method, e40, e80, observed)


@pytest.mark.parametrize("name", ["vp", "ve", "ddpm-linear"])
def test_dpm_solver_1_is_ddim(name: str) -> None:
    model, x1, _ = _oracle(name)
    ts = logsnr_times(model.schedule, 7, t_min=model.t_min, t_max=model.t_max)
    ours, nfe = dpm_solver(model.eps, x1, ts, schedule=model.schedule, order=1)
    ref, ref_nfe = ddim(model.eps, x1, ts, schedule=model.schedule)
    assert nfe == ref_nfe == 7
    # the same update, written -sigma_t (e^h - 1) vs sigma_t - alpha_t sigma_s / alpha_s:
    # equal up to float64 rounding of O(1) numbers
    torch.testing.assert_close(ours, ref, rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", SCHEDULES)
def test_logsnr_times_are_uniform_in_lambda(name: str) -> None:
    sch = make_schedule(name)
    t_max = 1.0 if float(sch(torch.tensor(1.0)).alpha) > 0 else 1.0 - 1e-4
    ts = logsnr_times(sch, 9, t_min=1e-4, t_max=t_max)
    s = sch(ts)
    lam = torch.log(s.alpha / s.sigma)
    assert ts[0] == t_max and ts[-1] == 1e-4 and bool((ts[1:] < ts[:-1]).all())
    # bisection to 2^-60 of [t_min, t_max]: lambda exact to float64 rounding x dlambda/dt
    torch.testing.assert_close(lam.diff(), lam.diff().mean().expand(9), rtol=1e-9, atol=0)


def test_model_sampler_nfe_callbacks_and_float32() -> None:
    model, _, _ = _oracle("vp")
    for method, per_step in (("2m", 1), ("1", 1), ("2", 2), ("3", 3)):
        assert model.steps_for_nfe("dpm", 12, method=method) == 12 // per_step
        x, nfe = model.sample_with_nfe(4, sampler="dpm", steps=4, method=method)
        assert nfe == 4 * per_step and x.shape == (4, 2)
    sch = VPSchedule()
    seen: list[int] = []
    x = torch.randn(3, 2)  # float32 state, float64 coefficients
    ts = logsnr_times(sch, 5).float()
    eps = lambda x, t: sch(t).sigma[:, None] * x  # noqa: E731
    y, nfe = dpm_solver(eps, x, ts, schedule=sch, order=3, callback=lambda k, y: seen.append(k))
    assert y.dtype == torch.float32 and nfe == 15 and seen == [0, 1, 2, 3, 4]
    seen.clear()
    y, nfe = dpm_solver_pp(eps, x, ts, schedule=sch, callback=lambda k, y: seen.append(k))
    assert y.dtype == torch.float32 and nfe == 5 and seen == [0, 1, 2, 3, 4]


def test_errors_teach() -> None:
    sch = make_schedule("ot")
    x = torch.zeros(2, 2)
    eps = lambda x, t: x  # noqa: E731
    with pytest.raises(ValueError, match="order must be 1, 2 or 3"):
        dpm_solver(eps, x, logsnr_times(VPSchedule(), 3), schedule=VPSchedule(), order=4)
    with pytest.raises(ValueError, match="strictly decreasing"):
        dpm_solver_pp(eps, x, torch.linspace(0.1, 0.9, 3), schedule=sch)
    with pytest.raises(ValueError, match=r"sigma\(t\) must be > 0"):  # alpha(1) = 0, CondOT
        dpm_solver(eps, x, torch.linspace(1.0, 0.1, 3), schedule=sch)
    with pytest.raises(ValueError, match="steps"):
        logsnr_times(sch, 0)
    with pytest.raises(ValueError, match="finite"):
        logsnr_times(sch, 3)  # t_max = 1: alpha = 0
    model, _, _ = _oracle("vp")
    with pytest.raises(ValueError, match="dpm method"):
        model.sample(2, sampler="dpm", method="4")


def _tiny(model: str, *sets: str) -> list[str]:
    args = ["--threads", "1", "--model", model, "--data", "8gaussians", "--n-train", "64"]
    args += ["--n-eval", "32", "--batch", "32", "--hidden", "8", "--quiet", "--steps", "2"]
    return args + [a for s in sets for a in ("--set", s)]


@pytest.mark.parametrize(
    ("family", "sets"),
    [("ddpm", ['schedule_kwargs={"T": 20}']), ("ncsn", ["n_levels=4"]), ("sde", []), ("fm", [])],
)
def test_cli_samples_with_dpm(tmp_path, capsys, family: str, sets: list[str]) -> None:
    run, out = tmp_path / family, tmp_path / "x.npy"
    assert main(["train", "--out", str(run), *_tiny(family, *sets)]) == 0
    argv = ["sample", str(run), "--n", "6", "--out", str(out), "--json", "--sampler", "dpm"]
    assert main([*argv, "--nfe", "6", "--solver", "3"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rows["sampler"] == "dpm" and rows["nfe"] == 6
    x = np.load(out)
    assert x.shape == (6, 2) and np.isfinite(x).all()
