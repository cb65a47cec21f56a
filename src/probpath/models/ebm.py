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

On images ``(C, H, W)`` the energy is convolutional (:class:`probpath.nets.ConvEnergy`),
fitted by sliced or denoising score matching (implicit score matching would need one
backward pass per pixel), and Langevin dynamics runs with a smaller step and more steps
(:data:`IMAGE_LANGEVIN`).
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
from probpath.models._shape import check_batch, data_shape, family_net
from probpath.models.base import LossOutput
from probpath.samplers import langevin
from probpath.samplers._common import Callback

__all__ = ["EBM", "IMAGE_LANGEVIN", "LangevinSampling"]

OBJECTIVES = ("ism", "ssm", "dsm")
VECTOR_LANGEVIN = {"step_size": 0.005, "n_steps": 1000}
"""Langevin's defaults on standardised vectors (benchmarks/bench_defaults.py)."""
IMAGE_LANGEVIN = {"step_size": 1e-3, "n_steps": 1000}
"""Langevin's defaults on images in [-1, 1] (:func:`probpath.data.to_centered`). Chosen on
the Gaussian fit N(m, S + 0.1² I) of the data (0.1 the default DSM noise, so the smallest
variance is 0.01), where unadjusted Langevin from N(0, I) is Gaussian in closed form at every
step. KL to the target per dimension, digits (8x8) / mnist5k (28x28): 0.0028 / 0.013 after
these 1000 steps of 1e-3, 0.00056 / 0.0067 after 2000; 500 steps of 0.01 (the smallest
variance itself) stay at 0.031 / 0.059, a biased stationary law. Steps of
3e-3 do better at 1000 steps (0.0016 / 0.0068) but stop there (floor 0.0015 / 0.0031) and are
unstable for an energy whose narrowest direction has a standard deviation below 0.039 (1e-3:
0.022), so 1e-3 is the safer default (benchmarks/bench_ebm_langevin.py, docs/ebm.md)."""


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
    """A scalar energy E_θ(x) fitted by score matching, sampled by Langevin dynamics.

    Args:
        dim: data dimension (vectors; default 2); ``shape``: one example's shape instead,
            ``[C, H, W]`` for images (``dim`` is its product).
        net: ``"auto"`` (:class:`~probpath.nets.ConvEnergy` for images, else the MLP),
            ``"mlp"`` or ``"unet"`` (the convolutional energy; :func:`probpath.nets.build_net`,
            role ``"energy"``), ``net_config`` overriding its arguments; ``config`` keeps the
            resolved kind.
        hidden, activation: the energy MLP's (its time input is fixed at 0).
        objective: ``"ism"`` (implicit, exact trace: ``dim`` backward passes; refused on
            images), ``"ssm"`` (sliced, one projection with variance reduction) or ``"dsm"``
            (denoising at ``noise_sigma``: fits the data blurred by N(0, noise_sigma² I)).
        noise_sigma: DSM's noise level.
        step_size, n_steps, init_std: Langevin sampling from N(0, init_std² I); ``None``:
            1000 steps of 0.005 on vectors (the Langevin time of 500 steps of 0.01 with half
            the discretisation bias; measured to sample standardised 2-D mixtures within a
            few noise floors of the energy distance, docs/benchmarks.md "Family defaults"),
            :data:`IMAGE_LANGEVIN` (1e-3, 1000) on images; ``config`` keeps the values used.
        grid_size, grid_extent: the quadrature of :meth:`log_prob` (2-D only): a
            ``grid_size`` x ``grid_size`` grid on [-grid_extent, grid_extent]².

    Example:
        >>> model = EBM(dim=2, hidden=[16], n_steps=10)
        >>> loss, logs = model.loss(torch.randn(8, 2))
        >>> model.sample(4).shape, model.log_prob(torch.zeros(3, 2)).shape
        (torch.Size([4, 2]), torch.Size([3]))
    """

    train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 4000,
        "batch_size": 512,
        "lr": 2e-3,
        "warmup_steps": 100,
        "schedule": "cosine",
    }
    """``probpath train --model ebm`` defaults (flags and config files override them): with
    sliced score matching, measured by ``benchmarks/bench_defaults.py`` to bring the
    quadrature NLL within 0.03 nats of the entropy of held-out 2-D Gaussian mixtures; longer
    runs overfit the 16 000 training rows (the gap rose from 0.02 at 4000 steps to 0.07 at
    10 000), so the cosine decay ends early."""

    def __init__(
        self,
        dim: int | None = None,
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "silu",
        objective: str = "ssm",
        noise_sigma: float = 0.1,
        step_size: float | None = None,
        n_steps: int | None = None,
        init_std: float = 1.0,
        grid_size: int = 256,
        grid_extent: float = 4.0,
        *,
        shape: Sequence[int] | None = None,
        net: str = "auto",
        net_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.shape = data_shape(dim, shape)
        self.dim = math.prod(self.shape)
        if objective not in OBJECTIVES:
            raise ValueError(f"objective must be one of {OBJECTIVES}, got {objective!r}")
        if objective == "ism" and len(self.shape) == 3:
            raise ValueError(
                f"implicit score matching takes one backward pass per dimension, "
                f"{self.dim} a step on {list(self.shape)} images: use objective='ssm' "
                "(sliced) or 'dsm' (denoising), which take one"
            )
        langevin_defaults = IMAGE_LANGEVIN if len(self.shape) == 3 else VECTOR_LANGEVIN
        step_size = langevin_defaults["step_size"] if step_size is None else step_size
        n_steps = int(langevin_defaults["n_steps"]) if n_steps is None else n_steps
        if not (noise_sigma > 0 and step_size > 0 and init_std > 0 and grid_extent > 0):
            raise ValueError("noise_sigma, step_size, init_std and grid_extent must be > 0")
        if n_steps < 1 or grid_size < 2:
            raise ValueError(f"need n_steps >= 1 and grid_size >= 2, got {n_steps}, {grid_size}")
        self.net, kind, net_config = family_net(
            net, self.shape, role="energy", net_config=net_config,
            mlp=dict(hidden=tuple(hidden), activation=activation, time_embedding="concat"),
        )  # fmt: skip
        self.config: dict[str, Any] = dict(
            dim=self.dim,
            shape=list(self.shape),
            net=kind,
            net_config=net_config,
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

    SAMPLERS: ClassVar[Mapping[str, SamplerEntry[LangevinSampling]]] = {
        "langevin": SamplerEntry(_langevin, lambda o: 1),
    }
    default_sampler = "langevin"

    def sampling_view(self) -> LangevinSampling:
        """What the Langevin sampler reads."""
        c = self.config
        return LangevinSampling(self.score, c["step_size"], c["n_steps"])

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
        check_batch(x, self.shape)
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
            n, *self.shape, generator=generator, dtype=p.dtype, device=p.device
        )

    def grid(self) -> tuple[Tensor, float]:
        """The quadrature points of :meth:`log_prob`, shape (grid_size², 2), and the cell area."""
        if self.shape != (2,):
            raise ValueError(
                f"EBM.log_prob normalises exp(-E) on a grid, which is only practical in 2-D; "
                f"this model's data have shape {list(self.shape)} (use the unnormalised "
                "-energy(x) instead: log p = -E - log Z up to the unknown constant log Z)"
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
        check_batch(x, self.shape)
        return -self.energy(x) - self.log_normalizer()
