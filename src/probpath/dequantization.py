r"""Discrete data under a continuous density: uniform dequantization and the bits/dim bound.

Images hold integers :math:`x \in \{0, \dots, K-1\}^D` (K grey levels: 256 for 8-bit
images, 17 for sklearn's digits). A continuous model p(v) of :math:`v = x + u - \tfrac12`,
:math:`u \sim U[0, 1)^D` (each pixel spread over the unit cube centred on it), gives the
discrete model :math:`P(x) = \int_{[0,1)^D} p(x + u - \tfrac12)\,du`, and by Jensen
(Theis et al. 2016; Ho et al. 2019, eq. 1)

.. math:: -\log P(x) \le \mathbb E_u[-\log p(x + u - \tfrac12)] .

On the unit scale :math:`y = (x + u)/K \in [0, 1)^D` this reads
:math:`\mathbb E_u[-\log p(y)] + D \log K` (so a uniform model scores exactly
:math:`\log_2 K` bits/dim). The importance-weighted bound with k draws (Burda et al. 2016;
used for bits/dim by Lipman et al. 2023) is tighter and tends to :math:`-\log P(x)`:

.. math:: -\log P(x) \le \mathbb E\Big[-\log \tfrac1k \textstyle\sum_{j=1}^k
          p(x + u_j - \tfrac12)\Big] .

Models work in a *model space* z = T(v) (:class:`Dequantizer`): ``"centered"``, the affine
map of :func:`probpath.data.to_centered` that diffusion models use (pixel k at
z = 2k/(K - 1) - 1, one level spanning 2/(K - 1)), ``"logit"``, FFJORD's and RealNVP's
:math:`z = \operatorname{logit}(\lambda + (1 - 2\lambda)(v + \tfrac12)/K)` (Dinh et al.
2017, Sec. 4.1), or ``"standardized"``, a per-dimension affine map
z = (v - mean) / std (:class:`~probpath.data.Standardizer`; integer vectors whose columns
have different ranges). A density in model space becomes one of v by :math:`\log p(v) = \log p(z)
+ \log|\det \partial z/\partial v|` (:meth:`Dequantizer.log_det`), so every family reports
the same number, bits/dim :math:`= -\log P(x) / (D \ln 2)`, through :func:`discrete_nll`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from probpath.data.image_set import level_width, to_centered
from probpath.data.standardize import Standardizer

__all__ = ["TRANSFORMS", "Dequantizer", "discrete_nll"]

TRANSFORMS = ("centered", "logit", "standardized")


@dataclass(frozen=True)
class Dequantizer:
    r"""The map between integer pixels and a model's continuous space, with its log-determinant.

    Args:
        levels: the number of grey levels K (pixels take values 0..K-1).
        transform: ``"centered"`` (z = 2 v / (K - 1) - 1), ``"logit"``
            (z = logit(lam + (1 - 2 lam) (v + 1/2) / K)) or ``"standardized"``
            (z = (v - mean) / std per dimension, from ``standardizer``), with
            v = x + u - 1/2 the dequantized pixel on the integer scale.
        lam: the logit transform's margin λ (keeps z finite at the cube's edges; FFJORD
            uses 1e-6 on MNIST, RealNVP 0.05 on CIFAR-10).
        standardizer: the affine map of ``"standardized"`` (on rows (batch, D); the
            integer scale itself is ``Standardizer((0.0,) * D, (1.0,) * D)``).

    Example:
        >>> dq = Dequantizer(levels=4)
        >>> x = torch.tensor([[0, 3]])
        >>> dq.center(x)  # the pixels themselves, 2 x / (K - 1) - 1
        tensor([[-1.,  1.]])
        >>> dq.to_pixels(dq.center(x)).tolist()
        [[0, 3]]
        >>> round(dq.log_det(dq.center(x)).item(), 4)  # 2 log(2 / (K - 1))
        -0.8109
    """

    levels: int
    transform: str = "centered"
    lam: float = 1e-6
    standardizer: Standardizer | None = None

    def __post_init__(self) -> None:
        if isinstance(self.levels, bool) or not isinstance(self.levels, int) or self.levels < 2:
            raise ValueError(
                f"levels (the number of grey levels K) must be an int >= 2, got {self.levels!r}"
            )
        if self.transform not in TRANSFORMS:
            raise ValueError(f"transform must be one of {TRANSFORMS}, got {self.transform!r}")
        if not 0.0 <= self.lam < 0.5:
            raise ValueError(f"lam must lie in [0, 0.5), got {self.lam}")
        if (self.standardizer is None) == (self.transform == "standardized"):
            raise ValueError(
                "the 'standardized' transform needs a standardizer, and only it takes one; "
                f"got transform={self.transform!r}, standardizer={self.standardizer!r}"
            )

    def _check_pixels(self, x: Tensor) -> None:
        if x.is_floating_point() or x.is_complex():
            raise TypeError(f"pixels must be an integer tensor of values 0..K-1, got {x.dtype}")
        if x.numel() and (int(x.min()) < 0 or int(x.max()) >= self.levels):
            raise ValueError(
                f"pixel values must lie in 0..{self.levels - 1} (K = {self.levels} levels), got "
                f"{int(x.min())}..{int(x.max())}"
            )

    def _rows(self, v: Tensor) -> Tensor:
        """``v`` itself, once checked to be rows (batch, D) of the standardizer's D."""
        assert self.standardizer is not None
        if v.ndim != 2 or v.shape[1] != self.standardizer.dim:
            raise ValueError(
                f"the 'standardized' transform maps rows (batch, {self.standardizer.dim}), "
                f"got shape {tuple(v.shape)}"
            )
        return v

    def forward(self, v: Tensor) -> Tensor:
        """Model-space point z = T(v) of a (dequantized) pixel value v on the integer scale."""
        if self.standardizer is not None:
            return self.standardizer.forward(self._rows(v))
        if self.transform == "centered":
            return to_centered(v, self.levels, v.dtype)
        return torch.logit(self.lam + (1.0 - 2.0 * self.lam) * (v + 0.5) / self.levels)

    def inverse(self, z: Tensor) -> Tensor:
        """v = T^{-1}(z) on the integer scale."""
        if self.standardizer is not None:
            return self.standardizer.inverse(self._rows(z))
        if self.transform == "centered":
            return (z + 1.0) / level_width(self.levels)
        return (torch.sigmoid(z) - self.lam) / (1.0 - 2.0 * self.lam) * self.levels - 0.5

    def log_det(self, z: Tensor) -> Tensor:
        r""":math:`\log|\det \partial z/\partial v|` at model-space points z, shape (batch,).

        ``"centered"``: :math:`D \log(2/(K - 1))`; ``"logit"``: :math:`\sum_d [\log(1 - 2\lambda)
        - \log K - \log s_d - \log(1 - s_d)]` with :math:`s = \sigma(z)`; ``"standardized"``:
        :math:`-\sum_d \log \mathrm{std}_d`.
        """
        flat = z.flatten(1)
        d = flat.shape[1]
        if self.standardizer is not None:
            self._rows(flat)
            return flat.new_full((flat.shape[0],), self.standardizer.log_abs_det_jacobian())
        if self.transform == "centered":
            return flat.new_full((flat.shape[0],), d * math.log(level_width(self.levels)))
        # log s + log(1 - s) = -softplus(-z) - softplus(z), stable for large |z|
        log_s_1ms = -torch.nn.functional.softplus(-flat) - torch.nn.functional.softplus(flat)
        const = math.log(1.0 - 2.0 * self.lam) - math.log(self.levels)
        return d * const - log_s_1ms.sum(1)

    def dequantize(
        self,
        x: Tensor,
        *,
        generator: torch.Generator | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """z = T(x + u - 1/2), u ~ U[0, 1)^D drawn with ``generator``: a training or scoring
        point spread uniformly over the pixel's cube."""
        self._check_pixels(x)
        dtype = dtype or torch.get_default_dtype()
        u = torch.rand(x.shape, generator=generator, dtype=dtype, device=x.device)
        return self.forward(x.to(dtype) + (u - 0.5))

    def center(self, x: Tensor, *, dtype: torch.dtype | None = None) -> Tensor:
        """z = T(x): the pixels' cube centres (deterministic model-space data)."""
        self._check_pixels(x)
        return self.forward(x.to(dtype or torch.get_default_dtype()))

    def to_pixels(self, z: Tensor) -> Tensor:
        """The pixel whose cube holds z (clamped into 0..K-1), as ``torch.long``."""
        v = torch.nan_to_num(self.inverse(z), nan=0.0)
        return torch.floor(v + 0.5).clamp(0, self.levels - 1).long()


def discrete_nll(
    log_prob: Callable[[Tensor], Tensor],
    x: Tensor,
    dequantizer: Dequantizer,
    *,
    k: int = 1,
    generator: torch.Generator | None = None,
    dtype: torch.dtype | None = None,
) -> Tensor:
    r"""Upper bound on :math:`-\log P(x)` in nats, per example, shape (batch,).

    ``log_prob(z)`` is the model's log-density in model space (shape (batch,)); with
    :math:`v_j = x + u_j - \tfrac12` and :math:`z_j = T(v_j)`, :math:`\log p(v_j) = \log p(z_j)
    + \log|\det\partial z/\partial v|(z_j)`, and the bound is
    :math:`-\log \frac1k \sum_j p(v_j)` (``k = 1``: the uniform
    dequantization bound; larger k: the importance-weighted one, never looser in expectation).
    Bits/dim: divide by ``D ln 2`` (:func:`probpath.metrics.bits_per_dim`).

    Example:
        >>> dq = Dequantizer(levels=256)
        >>> width = 2 * 256 / 255  # the 256 cubes of width 2/255 cover 2 K / (K - 1) per axis
        >>> uniform = lambda z: z.new_full((z.shape[0],), -z[0].numel() * math.log(width))
        >>> x = torch.randint(0, 256, (3, 1, 2, 2))
        >>> nll = discrete_nll(uniform, x, dq)  # a uniform model: exactly D log K
        >>> torch.allclose(nll, torch.full((3,), 4 * math.log(256)))
        True
    """
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"k (dequantization draws per example) must be a positive int, got {k!r}")
    if x.dim() < 2:
        raise ValueError(f"x must have shape (batch, ...), got {tuple(x.shape)}")
    batch = x.shape[0]
    xs = x.repeat(k, *([1] * (x.dim() - 1)))
    z = dequantizer.dequantize(xs, generator=generator, dtype=dtype)
    lp = log_prob(z)
    if not isinstance(lp, Tensor) or lp.shape != (xs.shape[0],):
        got = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__
        raise ValueError(f"log_prob(z) must return shape ({xs.shape[0]},), got {got}")
    log_p_v = (lp + dequantizer.log_det(z)).reshape(k, batch)
    return math.log(k) - torch.logsumexp(log_p_v, dim=0)
