"""Numerical integration of ODEs (and, next to them, adjoint ODEs and SDEs).

Model-agnostic: the solvers take ``func(t, y)`` with torchdiffeq's and torchsde's
calling conventions and know nothing of networks or probability paths.
"""

from types import MappingProxyType

from ._norms import rms_norm
from ._tableaus import FIXED
from .adjoint import odeint_adjoint
from .ode import SolverError, SolverStats, odeint
from .sde import SDELike, sdeint

__all__ = [
    "FIXED_STEP_NFE",
    "SDELike",
    "SolverError",
    "SolverStats",
    "odeint",
    "odeint_adjoint",
    "rms_norm",
    "sdeint",
]

FIXED_STEP_NFE = MappingProxyType({name: tab.stages for name, tab in FIXED.items()})
"""The fixed-grid methods of :func:`odeint` and the function evaluations one step costs
(its tableau's stages): ``{"euler": 1, "midpoint": 2, "heun": 2, "rk4": 4}``."""
