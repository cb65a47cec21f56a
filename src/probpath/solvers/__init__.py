"""Numerical integration of ODEs (and, next to them, adjoint ODEs and SDEs).

Model-agnostic: the solvers take ``func(t, y)`` with torchdiffeq's and torchsde's
calling conventions and know nothing of networks or probability paths.
"""

from ._norms import rms_norm
from .adjoint import odeint_adjoint
from .ode import SolverError, SolverStats, odeint
from .sde import SDELike, sdeint

__all__ = [
    "SDELike",
    "SolverError",
    "SolverStats",
    "odeint",
    "odeint_adjoint",
    "rms_norm",
    "sdeint",
]
