"""Per-dimension affine standardisation z = (x - mean) / std, stored with a run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["Standardizer"]


@dataclass(frozen=True)
class Standardizer:
    """The affine map x -> z = (x - mean) / std, per dimension, and its inverse.

    Models train on z; sampling returns ``inverse(z)``, and densities transform by the
    change of variables log p_x(x) = log p_z(z) + log|det dz/dx| with
    log|det dz/dx| = -sum_d log std_d (:meth:`log_abs_det_jacobian`).

    >>> x = torch.tensor([[0.0, 10.0], [2.0, 30.0]])
    >>> s = Standardizer.fit(x)
    >>> s.forward(x)
    tensor([[-1., -1.],
            [ 1.,  1.]])
    >>> torch.allclose(s.inverse(s.forward(x)), x), Standardizer.from_dict(s.to_dict()) == s
    (True, True)
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]

    def __post_init__(self) -> None:
        mean, std = tuple(float(m) for m in self.mean), tuple(float(s) for s in self.std)
        if len(mean) != len(std) or not mean:
            raise ValueError(f"mean and std need the same non-zero length: {len(mean)}, {len(std)}")
        bad = [d for d, s in enumerate(std) if not s > 0 or s == float("inf")]
        if bad:
            raise ValueError(f"std must be positive and finite; dimensions {bad} are not")
        if any(m != m or abs(m) == float("inf") for m in mean):
            raise ValueError("mean must be finite")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "std", std)

    @property
    def dim(self) -> int:
        """Number of data dimensions D."""
        return len(self.mean)

    @classmethod
    def fit(cls, x: Tensor, *, eps: float = 1e-8) -> Standardizer:
        """Mean and (population) std of ``x`` (N, D) per dimension; a constant dimension
        gets std 1 (it is only shifted), so the map stays invertible."""
        if x.ndim != 2 or x.shape[0] == 0:
            raise ValueError(f"fit needs data of shape (N, D) with N >= 1, got {tuple(x.shape)}")
        x64 = x.detach().to(torch.float64)
        std = x64.std(dim=0, unbiased=False)
        std = torch.where(std > eps, std, torch.ones_like(std))
        return cls(tuple(x64.mean(dim=0).tolist()), tuple(std.tolist()))

    def _params(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if x.shape[-1] != self.dim:
            raise ValueError(f"last dimension {x.shape[-1]} does not match the fitted D={self.dim}")
        kw: dict[str, Any] = {"dtype": x.dtype, "device": x.device}
        return torch.tensor(self.mean, **kw), torch.tensor(self.std, **kw)

    def forward(self, x: Tensor) -> Tensor:
        """z = (x - mean) / std."""
        mean, std = self._params(x)
        return (x - mean) / std

    def inverse(self, z: Tensor) -> Tensor:
        """x = z * std + mean."""
        mean, std = self._params(z)
        return z * std + mean

    def log_abs_det_jacobian(self) -> float:
        """log|det dz/dx| = -sum_d log std_d, so log p_x(x) = log p_z(z) + this."""
        return -float(torch.tensor(self.std, dtype=torch.float64).log().sum())

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-safe form: ``{"mean": [...], "std": [...]}``."""
        return {"mean": list(self.mean), "std": list(self.std)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Standardizer:
        """Inverse of :meth:`to_dict`."""
        if not isinstance(d, dict) or set(d) != {"mean", "std"}:
            raise ValueError(f"expected a dict with keys 'mean' and 'std', got {d!r}")
        return cls(tuple(d["mean"]), tuple(d["std"]))
