"""A run's model space: the map between its data and what its model sees, both ways.

- Continuous rows x (floats): z = (x - mean) / std when the run standardises (else z = x),
  and log p_x(x) = log p_z(z) + log|det dz/dx| (:func:`.rows.to_model_space`).
- Discrete data x (integer levels 0..K-1: images, or integer vectors): z = T(x + u - 1/2)
  with u ~ U[0, 1)^D, a :class:`~probpath.dequantization.Dequantizer`: images by the
  ``"centered"`` map to [-1, 1] (or ``"logit"``), integer vectors by the run's
  standardisation of the integer scale (``"standardized"``). Training batches take fresh
  u every step (:meth:`ModelSpace.dequantize`); the scores are the dequantized bound on
  -log P(x) (:meth:`ModelSpace.nll`, :func:`~probpath.dequantization.discrete_nll`), and
  samples become levels again by :meth:`ModelSpace.to_data`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import Standardizer
from ..data.kinds import integer_dtype
from ..dequantization import Dequantizer, discrete_nll
from .rows import to_data_space, to_model_space

__all__ = ["ModelSpace"]


@dataclass(frozen=True)
class ModelSpace:
    """The map between a run's data and its model's space (see the module docstring).

    Attributes:
        standardizer: the affine map of continuous rows (``None``: the raw rows).
        dequantizer: the map of discrete data (``None``: the data are continuous).

    Example:
        >>> space = ModelSpace(dequantizer=Dequantizer(levels=4))
        >>> x = torch.tensor([[0, 3]], dtype=torch.uint8)
        >>> z, log_det = space.forward(x)  # the cube centres, with 2 log(2 / (K - 1))
        >>> z, round(float(log_det), 4)
        (tensor([[-1.,  1.]]), -0.8109)
        >>> space.to_data(z)
        tensor([[0, 3]], dtype=torch.uint8)
    """

    standardizer: Standardizer | None = None
    dequantizer: Dequantizer | None = None

    @property
    def levels(self) -> int | None:
        """K of discrete data, ``None`` for continuous data."""
        return None if self.dequantizer is None else self.dequantizer.levels

    def forward(self, x: Tensor, *, dtype: torch.dtype | None = None) -> tuple[Tensor, Tensor]:
        """``(z, log|det dz/dx|)`` per row, deterministic: continuous rows standardised;
        discrete data at the centres of their cubes (where the DDPM's discretized decoder
        reads them, and how a classifier sees them)."""
        dq = self.dequantizer
        if dq is None:
            return to_model_space(self.standardizer, x)
        z = dq.center(x, dtype=dtype)
        return z, dq.log_det(z)

    def dequantize(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """A training batch in model space: discrete data spread over their cubes with
        fresh noise from ``generator`` (the trainer's per-step generator, so a resumed run
        draws the same noise); continuous rows as :meth:`forward` maps them."""
        if self.dequantizer is None:
            return self.forward(x)[0]
        return self.dequantizer.dequantize(x, generator=generator, dtype=dtype)

    def to_data(self, z: Tensor) -> Tensor:
        """Model-space points (e.g. samples) in data space: continuous rows un-standardised;
        discrete ones as the levels whose cubes hold them (integers, clamped to 0..K-1)."""
        dq = self.dequantizer
        if dq is None:
            return to_data_space(self.standardizer, z)
        return dq.to_pixels(z).to(integer_dtype(dq.levels))

    def nll(
        self,
        log_prob: Callable[[Tensor], Tensor],
        x: Tensor,
        *,
        k: int = 1,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """The NLL of data ``x`` in nats per example, shape (n,), from the model-space
        log-density ``log_prob``: -log p_x(x) of continuous rows; of discrete data, the
        dequantized bound on -log P(x) with ``k`` draws (``k = 1``: the uniform bound,
        more: the importance-weighted one)."""
        if self.dequantizer is None:
            z, log_det = self.forward(x)
            return -(log_prob(z) + log_det)
        return discrete_nll(log_prob, x, self.dequantizer, k=k, generator=generator, dtype=dtype)
