"""Samplers: plain functions ``sampler(model, x, ts, *, generator=None, callback=None, ...)``
that return ``(samples, nfe)``.

``model(x, t)`` is called with ``t`` of shape ``(batch,)``; randomness comes from the
optional ``torch.Generator``; ``callback(step, x)`` sees every intermediate state. No
sampler switches gradients off: wrap the call in ``torch.no_grad()`` when none are needed,
or differentiate through the samples when they are.
"""

from probpath.samplers.ddpm import ancestral, ddim, ddpm_timesteps
from probpath.samplers.dpm_solver import dpm_solver, dpm_solver_pp, logsnr_times
from probpath.samplers.langevin import annealed_langevin, langevin, mala
from probpath.samplers.ode import edm_times, heun_edm, probability_flow
from probpath.samplers.sde import predictor_corrector, reverse_sde_euler

__all__ = [
    "ancestral",
    "annealed_langevin",
    "ddim",
    "ddpm_timesteps",
    "dpm_solver",
    "dpm_solver_pp",
    "edm_times",
    "heun_edm",
    "langevin",
    "logsnr_times",
    "mala",
    "predictor_corrector",
    "probability_flow",
    "reverse_sde_euler",
]
