"""The sampler entries every model on a Gaussian path shares (private): the reverse SDE,
predictor-corrector, the probability-flow ODE with any solver, EDM's Heun and DPM-Solver,
each a typed function over :class:`~probpath.models._predictions.PathSampling`
(:class:`probpath.models.DiffusionModel` registers them)."""

from __future__ import annotations

from typing import Any, Literal

import torch
from torch import Tensor

from probpath.models._predictions import PathSampling
from probpath.samplers._common import Callback
from probpath.samplers.dpm_solver import dpm_solver, dpm_solver_pp, logsnr_times
from probpath.samplers.ode import edm_times, heun_edm, probability_flow
from probpath.samplers.sde import predictor_corrector, reverse_sde_euler
from probpath.solvers import FIXED_STEP_NFE

__all__ = [
    "DPM_NFE",
    "DPMMethod",
    "dpm_entry",
    "dpm_nfe",
    "euler_maruyama_entry",
    "heun_entry",
    "pc_entry",
    "pf_ode_entry",
]

DPM_NFE = {"2m": 1, "1": 1, "2": 2, "3": 3}  # NFE per step of each DPM-Solver variant
DPMMethod = Literal["2m", "1", "2", "3"]
"""``"2m"``: DPM-Solver++(2M); ``"1"`` .. ``"3"``: singlestep DPM-Solver of that order."""


def euler_maruyama_entry(
    m: PathSampling,
    x: Tensor,
    *,
    steps: int = 1000,
    final_noise: bool = False,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    """The reverse SDE by Euler–Maruyama (:func:`probpath.samplers.reverse_sde_euler`)."""
    return reverse_sde_euler(
        m.score, x, m.time_grid(steps, x), schedule=m.schedule, final_noise=final_noise,
        generator=generator, callback=callback,
    )  # fmt: skip


def pc_entry(
    m: PathSampling,
    x: Tensor,
    *,
    steps: int = 500,
    snr: float = 0.16,
    n_corrector: int = 1,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    """Predictor–corrector (:func:`probpath.samplers.predictor_corrector`)."""
    return predictor_corrector(
        m.score, x, m.time_grid(steps, x), schedule=m.schedule, snr=snr,
        n_corrector=n_corrector, generator=generator, callback=callback,
    )  # fmt: skip


def pf_ode_entry(
    m: PathSampling,
    x: Tensor,
    *,
    steps: int | None = None,
    method: str | None = None,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    options: dict[str, Any] | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    """The PF-ODE with any :func:`probpath.solvers.odeint` ``method``: dopri5 by default, heun
    when ``steps`` is given; a fixed-step method without ``steps`` takes 100."""
    if method is None:
        method = "dopri5" if steps is None else "heun"
    if steps is None:
        steps = 100 if method in FIXED_STEP_NFE else 1
    return probability_flow(
        m.velocity, x, m.time_grid(steps, x), method=method, rtol=rtol, atol=atol,
        options=options, generator=generator, callback=callback,
    )  # fmt: skip


def heun_entry(
    m: PathSampling,
    x: Tensor,
    *,
    steps: int = 20,
    rho: float = 7.0,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    """EDM's Heun (:func:`probpath.samplers.heun_edm`) on the ``rho`` grid of ``edm_times``."""
    ts = edm_times(m.schedule, steps, t_min=m.t_min, t_max=m.t_max, rho=rho).to(x)
    return heun_edm(m.eps, x, ts, schedule=m.schedule, generator=generator, callback=callback)


def dpm_nfe(method: str) -> int:
    """NFE per step of the DPM-Solver variant ``method``, checked."""
    if method not in DPM_NFE:
        raise ValueError(f"dpm method must be one of {', '.join(DPM_NFE)}, got {method!r}")
    return DPM_NFE[method]


def dpm_entry(
    m: PathSampling,
    x: Tensor,
    *,
    steps: int = 20,
    method: DPMMethod = "2m",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    """DPM-Solver on ``logsnr_times`` (:func:`probpath.samplers.dpm_solver`, ``dpm_solver_pp``)."""
    order = dpm_nfe(method)  # a singlestep solver of order k spends k NFE a step
    ts = logsnr_times(m.schedule, steps, t_min=m.t_min, t_max=m.t_max).to(x)
    if method == "2m":
        return dpm_solver_pp(
            m.x0, x, ts, schedule=m.schedule, generator=generator, callback=callback
        )
    return dpm_solver(
        m.eps, x, ts, schedule=m.schedule, order=order, generator=generator, callback=callback
    )
