r"""Score-based generative modelling through SDEs (Song et al. 2021): the "sde" family.

A network on the path of a VE, VP or sub-VP SDE (:mod:`probpath.sdes`) is trained by
continuous-time denoising score matching (:func:`probpath.losses.score_sde_loss`),

.. math:: \mathbb{E}_{t\sim U(\epsilon, 1)}\,\lambda(t)\,\mathbb{E}\,
          \tfrac12\|s_\theta(x_t, t) + \varepsilon/\sigma(t)\|^2 ,

with :math:`\lambda = \sigma^2` or the likelihood weight :math:`\lambda = g^2` (then t is
importance-sampled uniformly in log-SNR, Song et al. 2021b, Sec. 5), and sampled
by every sampler of :class:`~probpath.models.diffusion.DiffusionModel`: the reverse SDE
(Euler–Maruyama, the default), predictor–corrector, the probability-flow ODE, EDM Heun;
``log_prob`` is the exact likelihood along the PF-ODE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from probpath.losses import WEIGHTINGS, score_sde_loss
from probpath.models._shape import NetSpec, check_batch
from probpath.models.base import LossOutput
from probpath.models.diffusion import DiffusionModel

__all__ = ["ScoreSDE"]

SDES: dict[str, str] = {"vp": "vp", "ve": "ve", "subvp": "subvp"}
"""``sde`` name -> :func:`probpath.paths.make_schedule` name."""


class ScoreSDE(DiffusionModel):
    """Score SDE: a VE/VP/sub-VP path, continuous-time DSM, every sampler.

    Args:
        dim, shape: the data's dimension or one example's shape (see :class:`DiffusionModel`).
        sde: ``"vp"`` (beta_min, beta_max), ``"ve"`` (sigma_min, sigma_max) or ``"subvp"``;
            their parameters in ``schedule_kwargs``.
        weighting: ``"likelihood"`` (λ = g², default: maximum-likelihood training, the
            PF-ODE likelihood the benchmark measures) or ``"sigma2"`` (λ = σ²).
        importance_sampling: draw t uniform in log-SNR, weighted back to the same loss
            (Song et al. 2021b, Sec. 5; see :func:`probpath.losses.score_sde_loss`); default:
            on with the likelihood weight (its uniform-t estimate is far noisier), off else.
        prediction: the network's kind (default ``"eps"``, i.e. the score times -σ, which
            keeps the output O(1)); any kind works: the loss reads the score.
        hidden, activation, time_embedding, net, net_config, t_min, t_max, n_classes,
            p_uncond: as :class:`DiffusionModel` (but the MLP concatenates t by default, as in
            flow matching).
        For VE the default ``sigma_max`` is 10 (enough for standardised 2-D data; Song
        et al.'s rule: the largest pairwise distance of the data).

    Example:
        >>> model = ScoreSDE(dim=2, sde="ve", hidden=[16])
        >>> loss, logs = model.loss(torch.randn(8, 2))
        >>> sorted(logs), model.sample(3, steps=10).shape
        (['dsm'], torch.Size([3, 2]))
    """

    default_sampler = "euler-maruyama"

    def __init__(
        self,
        dim: int | None = None,
        sde: str = "vp",
        schedule_kwargs: dict[str, Any] | None = None,
        weighting: str = "likelihood",
        prediction: str = "eps",
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "silu",
        time_embedding: str = "concat",
        t_min: float | None = None,
        t_max: float | None = None,
        *,
        importance_sampling: bool | None = None,
        shape: Sequence[int] | None = None,
        net: NetSpec = "auto",
        net_config: dict[str, Any] | None = None,
        n_classes: int = 0,
        p_uncond: float = 0.1,
    ) -> None:
        if sde not in SDES:
            raise ValueError(f"unknown sde {sde!r}; choose one of {', '.join(SDES)}")
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {weighting!r}")
        kwargs = dict(schedule_kwargs or {})
        if sde == "ve":
            kwargs.setdefault("sigma_max", 10.0)
        if t_min is None:
            t_min = 1e-5 if sde == "ve" else 1e-3
        super().__init__(
            dim=dim,
            schedule=SDES[sde],
            schedule_kwargs=kwargs,
            prediction=prediction,
            hidden=hidden,
            activation=activation,
            time_embedding=time_embedding,
            t_min=t_min,
            t_max=t_max,
            shape=shape,
            net=net,
            net_config=net_config,
            n_classes=n_classes,
            p_uncond=p_uncond,
        )
        if importance_sampling is None:
            importance_sampling = weighting == "likelihood"
        self.weighting, self.importance_sampling = weighting, importance_sampling
        del self.config["schedule"]
        self.config = dict(
            sde=sde, weighting=weighting, importance_sampling=importance_sampling, **self.config
        )

    def loss(
        self, x: Tensor, *, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> LossOutput:
        """Continuous-time DSM (:func:`probpath.losses.score_sde_loss`), logging ``dsm``; with
        labels ``y``, classifier-free training (:meth:`with_labels`)."""
        check_batch(x, self.shape)
        score = self.with_labels(self.score, x, y, generator)
        loss = score_sde_loss(
            score, x, self.path, t_min=self.t_min, weighting=self.weighting,
            importance_sampling=self.importance_sampling, generator=generator,
        )  # fmt: skip
        return loss, {"dsm": loss.detach()}
