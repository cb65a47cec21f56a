"""probpath: continuous-time deep generative models in PyTorch.

Neural ODEs and the adjoint method, continuous normalizing flows, score matching
and Langevin dynamics, diffusion models, score SDEs and flow matching, built on one
idea: a probability path p_t(x) and the vector field or SDE that moves mass along it.

The most used entry points are re-exported here; everything else lives in the
subpackages (``probpath.solvers``, ``probpath.paths``, ``probpath.samplers``,
``probpath.losses``, ``probpath.models``, ``probpath.train``, ...).

Example:
    >>> import torch, probpath
    >>> y = probpath.odeint(lambda t, y: -y, torch.ones(1), torch.tensor([0.0, 1.0]))
    >>> round(y[-1].item(), 6)  # exp(-1)
    0.367879
"""

from probpath import guidance
from probpath.likelihood import ode_log_prob, sample_with_log_prob
from probpath.models import MODELS, build
from probpath.paths import GaussianPath, make_schedule
from probpath.solvers import SolverStats, odeint, odeint_adjoint, sdeint

__version__ = "0.1.0"

__all__ = [
    "MODELS",
    "GaussianPath",
    "SolverStats",
    "__version__",
    "build",
    "guidance",
    "make_schedule",
    "ode_log_prob",
    "odeint",
    "odeint_adjoint",
    "sample_with_log_prob",
    "sdeint",
]
