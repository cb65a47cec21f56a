r"""Noise-conditional score network (NCSN; Song & Ermon 2019; the seeds' "NCSN objective").

A score network :math:`s_\theta(x, \sigma)` trained at geometric noise levels
:math:`\sigma_1 > \dots > \sigma_L` (:func:`probpath.paths.ve_sigmas`) with the weighted
denoising objective :math:`\lambda(\sigma) = \sigma^2`
(:func:`probpath.losses.noise_conditional_score_matching`), sampled by annealed Langevin
dynamics (:func:`probpath.samplers.annealed_langevin`).

The levels are the variance-exploding path ``VESchedule(sigma_min, sigma_max)`` at the
times ``t_l = (L - l) / (L - 1)`` (``sigma(t) = sigma_min (sigma_max / sigma_min)^t``), so
conditioning on sigma is conditioning on t: the network sees
``t = log(sigma / sigma_min) / log(sigma_max / sigma_min)``. NCSN is therefore a
:class:`~probpath.models.diffusion.DiffusionModel` on the VE path, and every inherited
sampler (reverse SDE, predictor-corrector, the PF-ODE) and the exact PF-ODE likelihood
work on it too (Song et al. 2021 train on a continuum of levels; here the network
interpolates between the L trained ones).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from probpath import losses
from probpath.models._predictions import PathPredictions
from probpath.models._shape import NetSpec, check_batch
from probpath.models.base import LossOutput
from probpath.models.diffusion import DiffusionModel, PathSampling, SamplerEntry
from probpath.paths import ve_sigmas
from probpath.samplers import annealed_langevin
from probpath.samplers._common import Callback

__all__ = ["NCSN", "LevelSampling"]


@dataclass(frozen=True)
class LevelSampling(PathSampling):
    """What NCSN's annealed Langevin reads: :class:`PathSampling`, the noise levels ``sigmas``
    (L,), their path times ``level_times`` and the model's Langevin ``step_size`` and
    ``n_steps_per_level``."""

    sigmas: Tensor
    level_times: Tensor
    step_size: float
    n_steps_per_level: int


def _annealed(
    m: LevelSampling,
    x: Tensor,
    *,
    steps: int | None = None,
    step_size: float | None = None,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    """Annealed Langevin (:func:`probpath.samplers.annealed_langevin`). ``steps`` counts
    Langevin steps over all levels (NFE - 1), ``steps // L`` per level (``None``: the model's
    ``n_steps_per_level``); ``step_size=None``: the model's."""
    per_level = m.n_steps_per_level if steps is None else max(1, steps // len(m.sigmas))
    return annealed_langevin(
        m.score, x, m.level_times.to(x), sigmas=m.sigmas.to(x), n_steps_per_level=per_level,
        step_size=m.step_size if step_size is None else step_size, denoise=denoise,
        generator=generator, callback=callback,
    )  # fmt: skip


class NCSN(DiffusionModel):
    """NCSN: s_θ(x, σ) on geometric levels, weighted DSM, annealed Langevin sampling.

    Args:
        dim, shape: the data's dimension or one example's shape (see :class:`DiffusionModel`).
        sigma_min, sigma_max, n_levels: the levels σ_1 = sigma_max > ... > σ_L = sigma_min
            (sigma_max about the largest distance between data points, Song & Ermon 2020).
            100 levels by default (ratio 0.94 between neighbours, NCSNv2's rule of close
            levels): the PF-ODE likelihood reads the network between the trained levels,
            and with 10 it stayed 0.34 nats above the entropy of a 2-D mixture where 100
            reach 0.06 (docs/benchmarks.md, "Family defaults").
        prediction: the network's kind. ``"eps"`` (default) means
            s_θ(x, σ) = -net(x, t(σ)) / σ, NCSNv2's 1/σ output scaling (Song & Ermon 2020,
            technique 3), so the weighted loss is ``||net - eps||^2 / 2``; ``"score"`` is the
            raw score network of the 2019 paper.
        hidden, activation, time_embedding, net, net_config: the network (see
            :class:`DiffusionModel`); the MLP concatenates t by default (smoother between
            the levels than sinusoidal features).
        step_size: Langevin ε, the step at σ_L (the step at level σ_i is ε σ_i² / σ_L²;
            2e-5 with σ_L = 0.01 in the paper).
        n_steps_per_level: Langevin steps per level by default; ``sample(steps=N)`` runs
            ``N // n_levels`` per level, so that ``steps`` counts network evaluations.
        t_min, t_max, schedule, schedule_kwargs: set from the levels (accepted so that
            ``config`` rebuilds the model).
        n_classes, p_uncond: a conditional model (see :class:`DiffusionModel`).

    Example:
        >>> model = NCSN(dim=2, hidden=[16], n_levels=4, sigma_max=2.0)
        >>> loss, logs = model.loss(torch.randn(8, 2))
        >>> x, nfe = model.sample_with_nfe(3, steps=20)  # annealed Langevin: 4 levels x 5 + 1
        >>> x.shape, nfe
        (torch.Size([3, 2]), 21)
    """

    SAMPLERS: ClassVar[Mapping[str, SamplerEntry[LevelSampling]]] = {
        **DiffusionModel.SAMPLERS,
        "annealed-langevin": SamplerEntry(_annealed, lambda o: 1, lambda o: int(o["denoise"])),
    }
    default_sampler = "annealed-langevin"

    def __init__(
        self,
        dim: int | None = None,
        sigma_min: float = 0.01,
        sigma_max: float = 5.0,
        n_levels: int = 100,
        prediction: str = "eps",
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "silu",
        time_embedding: str = "concat",
        step_size: float = 2e-5,
        n_steps_per_level: int = 10,
        t_min: float | None = None,
        t_max: float | None = None,
        schedule: str = "ve",
        schedule_kwargs: dict[str, Any] | None = None,
        *,
        shape: Sequence[int] | None = None,
        net: NetSpec = "auto",
        net_config: dict[str, Any] | None = None,
        n_classes: int = 0,
        p_uncond: float = 0.1,
    ) -> None:
        if schedule != "ve":
            raise ValueError(f"NCSN lives on the variance-exploding path 've', got {schedule!r}")
        sigmas = ve_sigmas(sigma_min, sigma_max, n_levels)  # validates the levels
        if not step_size > 0 or n_steps_per_level < 1:
            raise ValueError(
                f"need step_size > 0 and n_steps_per_level >= 1, got {step_size}, "
                f"{n_steps_per_level}"
            )
        kwargs = {"sigma_min": sigma_min, "sigma_max": sigma_max}
        super().__init__(
            dim, "ve", kwargs, prediction, hidden, activation, time_embedding,
            1e-3 if t_min is None else t_min, 1.0 if t_max is None else t_max, shape=shape,
            net=net, net_config=net_config, n_classes=n_classes, p_uncond=p_uncond,
        )  # fmt: skip
        self.config.update(
            sigma_min=sigma_min,
            sigma_max=sigma_max,
            n_levels=n_levels,
            step_size=step_size,
            n_steps_per_level=n_steps_per_level,
        )
        self.sigmas: Tensor
        self.register_buffer("sigmas", sigmas.to(torch.get_default_dtype()), persistent=False)
        self._log_ratio = math.log(sigma_max / sigma_min)

    def sampling_view(self, predictions: PathPredictions | None = None) -> LevelSampling:
        """:class:`PathSampling` of ``predictions`` (default: this model) with the levels."""
        return LevelSampling.of(
            self if predictions is None else predictions, sigmas=self.sigmas,
            level_times=self.sigma_to_t(self.sigmas), step_size=self.config["step_size"],
            n_steps_per_level=self.config["n_steps_per_level"],
        )  # fmt: skip

    def sigma_to_t(self, sigma: Tensor) -> Tensor:
        """Path time of a level: ``log(sigma / sigma_min) / log(sigma_max / sigma_min)``."""
        t = torch.log(sigma / self.config["sigma_min"]) / self._log_ratio
        return t.clamp(0.0, 1.0)

    def noise_conditional_score(self, x: Tensor, sigma: Tensor, y: Tensor | None = None) -> Tensor:
        """s_θ(x, σ) with σ of shape (batch,): the score of the data blurred by N(0, σ² I)."""
        return self.score(x, self.sigma_to_t(sigma), y=y)

    def loss(
        self, x: Tensor, *, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> LossOutput:
        """Weighted DSM over the levels, λ(σ) = σ² (Song & Ermon 2019, eq. 6); with labels
        ``y``, classifier-free training (:meth:`with_labels`)."""
        check_batch(x, self.shape)
        score = self.with_labels(self.noise_conditional_score, x, y, generator)
        loss = losses.noise_conditional_score_matching(
            score, x, self.sigmas.to(x), generator=generator
        )
        return loss, {"dsm": loss.detach()}
