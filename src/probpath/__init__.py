"""probpath: continuous-time deep generative models in PyTorch.

Neural ODEs and the adjoint method, continuous normalizing flows, score matching
and Langevin dynamics, diffusion models, score SDEs and flow matching, built on one
idea: a probability path p_t(x) and the vector field or SDE that moves mass along it.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
