r"""Energy-based model :math:`p_\theta(x) = \exp(-E_\theta(x)) / Z_\theta`, fit by score matching.

Its score :math:`\nabla_x \log p_\theta = -\nabla_x E_\theta` does not involve the
normalising constant :math:`Z_\theta` (the seeds' lecture on score matching), so the
energy is fitted with an objective that needs only the score -- implicit (Hyvärinen
2005), sliced (Song et al. 2019) or denoising (Vincent 2011) score matching,
:mod:`probpath.losses` -- and sampled with Langevin dynamics
(:func:`probpath.samplers.langevin`). The score is taken by autograd with
``create_graph`` while training, so the loss reaches the energy's parameters.

The density itself needs :math:`Z_\theta`: :meth:`EBM.log_prob` computes it numerically,
by summing :math:`\exp(-E)` over a regular grid on a box, which is only practical in 2-D
(it raises otherwise); mass outside the box is ignored.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from probpath import losses
from probpath.models._sampling import SamplerDispatch, SamplerEntry
from probpath.models.base import LossOutput
from probpath.nets import MLP
from probpath.samplers import langevin
from probpath.samplers._common import Callback

__all__ = ["EBM", "LangevinSampling"]

OBJECTIVES = ("ism", "ssm", "dsm")


@dataclass(frozen=True)
class LangevinSampling:
    """What the EBM's Langevin sampler reads: the ``score`` and the model's ``step_size`` and
    ``n_steps``."""

    score: Callable[[Tensor, Tensor], Tensor]
    step_size: float
    n_steps: int


def _langevin(
    m: LangevinSampling,
    x: Tensor,
    *,
    steps: int | None = None,
    step_size: float | None = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    """Unadjusted Langevin (:func:`probpath.samplers.langevin`); ``None``: the model's."""
    ts = torch.zeros(m.n_steps if steps is None else steps, dtype=x.dtype, device=x.device)
    return langevin(
        m.score, x, ts, step_size=m.step_size if step_size is None else step_size,
        generator=generator, callback=callback,
    )  # fmt: skip


class EBM(SamplerDispatch, nn.Module):
    """A scalar energy MLP E_θ(x) fitted by score matching, sampled by Langevin dynamics.

    Args:
        dim: data dimension.
        hidden, activation: the energy MLP (its time input is fixed at 0).
        objective: ``"ism"`` (implicit, exact trace: ``dim`` backward passes), ``"ssm"``
            (sliced, one projection with variance reduction) or ``"dsm"`` (denoising at
            ``noise_sigma``: fits the data blurred by N(0, noise_sigma² I)).
        noise_sigma: DSM's noise level.
        step_size, n_steps, init_std: Langevin sampling from N(0, init_std² I).
        grid_size, grid_extent: the quadrature of :meth:`log_prob` (2-D only): a
            ``grid_size`` x ``grid_size`` grid on [-grid_extent, grid_extent]².

    Example:
        >>> model = EBM(dim=2, hidden=[16], n_steps=10)
        >>> loss, logs = model.loss(torch.randn(8, 2))
        >>> model.sample(4).shape, model.log_prob(torch.zeros(3, 2)).shape
        (torch.Size([4, 2]), torch.Size([3]))
    """

    def __init__(
        self,
        dim: int = 2,
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "silu",
        objective: str = "ssm",
        noise_sigma: float = 0.1,
        step_size: float = 0.01,
        n_steps: int = 500,
        init_std: float = 1.0,
        grid_size: int = 256,
        grid_extent: float = 4.0,
    ) -> None:
        super().__init__()
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if not (noise_sigma > 0 and step_size > 0 and init_std > 0 and grid_extent > 0):
            raise ValueError("noise_sigma, step_size, init_std and grid_extent must be > 0")
        if n_steps < 1 or grid_size < 2:
            raise ValueError(f"need n_steps >= 1 and grid_size >= 2, got {n_steps}, {grid_size}")
        self.config: dict[str, Any] = dict(
            dim=dim,
            hidden=list(hidden),
            activation=activation,
            objective=objective,
            noise_sigma=noise_sigma,
            step_size=step_size,
            n_steps=n_steps,
            init_std=init_std,
            grid_size=grid_size,
            grid_extent=grid_extent,
        )
        self.dim = dim
        self.net = MLP(dim, hidden, activation, "concat", out_dim=1)

    SAMPLERS: ClassVar[Mapping[str, SamplerEntry[LangevinSampling]]] = {
        "langevin": SamplerEntry(_langevin, lambda o: 1),
    }
    default_sampler = "langevin"

    def sampling_view(self) -> LangevinSampling:
        """What the Langevin sampler reads."""
        c = self.config
        return LangevinSampling(self.score, c["step_size"], c["n_steps"])

    def _check(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}")

    def energy(self, x: Tensor) -> Tensor:
        """E_θ(x), shape (batch,)."""
        return self.net(x, 0.0).squeeze(-1)

    def score(self, x: Tensor, t: Tensor | None = None) -> Tensor:
        """-∇_x E_θ(x) by autograd (``t`` is ignored: the law does not move). The graph is
        kept when gradients are enabled, so a loss on the score trains the energy."""
        keep = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if (keep and x.requires_grad) else x.detach().requires_grad_(True)
            (grad,) = torch.autograd.grad(self.energy(xg).sum(), xg, create_graph=keep)
        return -grad

    def loss(self, x: Tensor, *, generator: torch.Generator | None = None) -> LossOutput:
        """The configured score-matching objective on the batch."""
        self._check(x)
        c = self.config

        def score(y: Tensor) -> Tensor:
            return self.score(y)

        if c["objective"] == "ism":
            loss = losses.implicit_score_matching(score, x)
        elif c["objective"] == "ssm":
            loss = losses.sliced_score_matching(
                score, x, variance_reduction=True, generator=generator
            )
        else:
            loss = losses.denoising_score_matching(score, x, c["noise_sigma"], generator=generator)
        return loss, {c["objective"]: loss.detach()}

    def initial_state(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Langevin chains start from N(0, init_std² I)."""
        p = next(self.parameters())
        return self.config["init_std"] * torch.randn(
            n, self.dim, generator=generator, dtype=p.dtype, device=p.device
        )

    def grid(self) -> tuple[Tensor, float]:
        """The quadrature points of :meth:`log_prob`, shape (grid_size², 2), and the cell area."""
        if self.dim != 2:
            raise ValueError(
                f"EBM.log_prob normalises exp(-E) on a grid, which is only practical in 2-D; "
                f"this model has dim={self.dim} (use the unnormalised -energy(x) instead)"
            )
        c = self.config
        p = next(self.parameters())
        side = torch.linspace(-c["grid_extent"], c["grid_extent"], c["grid_size"])
        h = float(side[1] - side[0])
        xx, yy = torch.meshgrid(side, side, indexing="ij")
        pts = torch.stack([xx.flatten(), yy.flatten()], 1).to(dtype=p.dtype, device=p.device)
        return pts, h * h

    def log_normalizer(self) -> Tensor:
        """log Z ≈ log Σ_grid exp(-E) h² (midpoint rule on the box; 2-D only)."""
        pts, area = self.grid()
        with torch.no_grad():
            return torch.logsumexp(-self.energy(pts), 0) + math.log(area)

    def log_prob(self, x: Tensor) -> Tensor:
        """log p_θ(x) = -E_θ(x) - log Z, with Z by quadrature (2-D only), shape (batch,)."""
        self._check(x)
        return -self.energy(x) - self.log_normalizer()
