r"""Denoising diffusion probabilistic model (Ho et al. 2020; the seeds' lecture on DDPM).

A :class:`~probpath.models.diffusion.DiffusionModel` on the discrete DDPM chain
(:class:`probpath.paths.DiscreteSchedule`, step i at time t = i / T) with an
eps-predicting network, trained with :math:`L_\text{simple}`
(:func:`probpath.losses.ddpm_simple_loss`). It adds DDPM's own samplers to the inherited
ones (reverse SDE, predictor-corrector, PF-ODE, EDM Heun): ``"ancestral"`` (Algorithm 2,
:func:`probpath.samplers.ancestral`) and ``"ddim"`` (:func:`probpath.samplers.ddim`), and
two likelihoods: the exact one along the PF-ODE (:meth:`log_prob`, inherited) and the
ELBO's bound :meth:`nll_bound` (:func:`probpath.losses.ddpm_nll_bound`). On discrete data
(images with K grey levels, ``levels=K``) the ELBO's decoder is discretized, and the bound
is one on the NLL of the discrete pixels themselves.
"""

from __future__ import annotations

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
from probpath.paths import DiscreteSchedule
from probpath.samplers import ancestral, ddim, ddpm_timesteps
from probpath.samplers._common import Callback
from probpath.samplers.ddpm import Spacing, Variance

__all__ = ["DDPM", "ChainSampling"]


@dataclass(frozen=True)
class ChainSampling(PathSampling):
    """What DDPM's samplers read: :class:`PathSampling` and the discrete ``chain`` with the
    model's reverse-step ``variance``."""

    chain: DiscreteSchedule
    variance: Variance


def _ancestral(
    m: ChainSampling,
    x: Tensor,
    *,
    steps: int | None = None,
    variance: Variance | None = None,
    spacing: Spacing = "trailing",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    """Ancestral sampling (:func:`probpath.samplers.ancestral`); ``steps=None``: the whole
    chain; ``variance=None``: the model's; ``spacing`` of the sub-chain
    (:func:`probpath.samplers.ddpm_timesteps`)."""
    return ancestral(
        m.eps, x, ddpm_timesteps(m.chain.T, steps, spacing=spacing).to(x), schedule=m.chain,
        variance=m.variance if variance is None else variance, generator=generator,
        callback=callback,
    )  # fmt: skip


def _ddim(
    m: ChainSampling,
    x: Tensor,
    *,
    steps: int = 50,
    eta: float = 0.0,
    spacing: Spacing = "trailing",
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    """DDIM (:func:`probpath.samplers.ddim`) on ``steps`` indices of the chain, spaced by
    ``spacing`` ("trailing": a few-step run starts at t = 1; Lin et al. 2024)."""
    ts = ddpm_timesteps(m.chain.T, steps, spacing=spacing).to(x)
    return ddim(m.eps, x, ts, schedule=m.chain, eta=eta, generator=generator, callback=callback)


class DDPM(DiffusionModel):
    """DDPM: an eps-network on the discrete chain, L_simple, ancestral and DDIM sampling.

    Args:
        dim, shape: the data's dimension or one example's shape (see :class:`DiffusionModel`).
        schedule: ``"ddpm-linear"`` (beta_1 = 1e-4 .. beta_T = 0.02, Ho et al.) or
            ``"ddpm-cosine"`` (Nichol & Dhariwal); ``schedule_kwargs`` e.g. ``{"T": 1000}``.
        prediction: the network's kind (``"eps"``, DDPM's choice; others are converted).
        hidden, activation, time_embedding, net, net_config: the network (see
            :class:`DiffusionModel`); it sees ``t = i / T`` (the MLP concatenates it by
            default: a smoother PF-ODE field than sinusoidal features, and a lower NLL).
        variance: reverse-step variance, ``"beta_tilde"`` or ``"beta"`` (ancestral sampling
            and the ELBO's KL terms).
        levels: K, the grey levels of discrete data in model space (pixel k at
            ``2 k / (K - 1) - 1``, :func:`probpath.data.to_centered`), or ``None``.
        decoder: the ELBO's decoder: ``"gaussian"`` (continuous data) or ``"discretized"``
            (the probability of the pixel's bin of width ``2 / (K - 1)``, K = ``levels`` or
            256, Ho et al. 2020 eq. 13); default ``"discretized"`` when ``levels`` is given,
            else ``"gaussian"``.
        t_min, t_max: the ends of the inherited continuous-time samplers and likelihood.
        n_classes, p_uncond: a conditional model (see :class:`DiffusionModel`).

    Example:
        >>> model = DDPM(dim=2, hidden=[16], schedule_kwargs={"T": 20})
        >>> loss, logs = model.loss(torch.randn(8, 2))
        >>> sorted(logs), model.default_sampler
        (['l_simple'], 'ancestral')
        >>> x, nfe = model.sample_with_nfe(4, sampler="ddim", steps=5)
        >>> x.shape, nfe
        (torch.Size([4, 2]), 5)
        >>> model.nll_bound(torch.zeros(3, 2)).shape
        torch.Size([3])
    """

    SAMPLERS: ClassVar[Mapping[str, SamplerEntry[ChainSampling]]] = {
        **DiffusionModel.SAMPLERS,
        "ancestral": SamplerEntry(_ancestral, lambda o: 1),
        "ddim": SamplerEntry(_ddim, lambda o: 1),
    }
    default_sampler = "ancestral"

    def __init__(
        self,
        dim: int | None = None,
        schedule: str = "ddpm-linear",
        schedule_kwargs: dict[str, Any] | None = None,
        prediction: str = "eps",
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "silu",
        time_embedding: str = "concat",
        t_min: float | None = None,
        t_max: float | None = None,
        variance: str = "beta_tilde",
        decoder: str | None = None,
        *,
        levels: int | None = None,
        shape: Sequence[int] | None = None,
        net: NetSpec = "auto",
        net_config: dict[str, Any] | None = None,
        n_classes: int = 0,
        p_uncond: float = 0.1,
    ) -> None:
        if schedule not in ("ddpm-linear", "ddpm-cosine"):
            raise ValueError(
                f"DDPM runs on the discrete chain: schedule 'ddpm-linear' or 'ddpm-cosine', "
                f"got {schedule!r} (for continuous paths use the score SDE family)"
            )
        if variance not in ("beta", "beta_tilde"):
            raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
        if levels is not None and (isinstance(levels, bool) or not isinstance(levels, int)
                                   or levels < 2):  # fmt: skip
            raise ValueError(f"levels (grey levels K) must be an int >= 2 or None, got {levels!r}")
        if decoder is None:
            decoder = "gaussian" if levels is None else "discretized"
        if decoder not in ("gaussian", "discretized"):
            raise ValueError(f"decoder must be 'gaussian' or 'discretized', got {decoder!r}")
        super().__init__(
            dim, schedule, schedule_kwargs, prediction, hidden, activation, time_embedding,
            t_min, t_max, shape=shape, net=net, net_config=net_config, n_classes=n_classes,
            p_uncond=p_uncond,
        )  # fmt: skip
        assert isinstance(self.schedule, DiscreteSchedule)
        self.chain: DiscreteSchedule = self.schedule
        self.config.update(variance=variance, decoder=decoder, levels=levels)

    def sampling_view(self, predictions: PathPredictions | None = None) -> ChainSampling:
        """:class:`PathSampling` of ``predictions`` (default: this model) with the chain."""
        return ChainSampling.of(
            self if predictions is None else predictions,
            chain=self.chain, variance=self.config["variance"],
        )  # fmt: skip

    def loss(
        self, x: Tensor, *, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> LossOutput:
        """L_simple: ``||eps - eps_theta(x_i, i / T)||^2`` with i ~ U{1..T} (Algorithm 1);
        with labels ``y``, classifier-free training (:meth:`with_labels`)."""
        check_batch(x, self.shape)
        eps_model = self.with_labels(self.as_kind("eps"), x, y, generator)
        loss = losses.ddpm_simple_loss(eps_model, x, self.chain, generator=generator)
        return loss, {"l_simple": loss.detach()}

    def nll_bound(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The ELBO's bound ``L_0 + sum_i L_i + L_T >= -log p(x)`` in nats, shape (batch,),
        with the model's reverse ``variance`` (the one ancestral sampling uses).

        T network calls on the batch (:func:`probpath.losses.ddpm_nll_bound`); bits/dim is
        this over ``dim * ln 2``. With ``decoder="discretized"`` ``x`` holds grid points
        (``to_centered`` pixels) and the bound is on ``-log P(pixels)``, a discrete NLL: no
        dequantization term enters.
        """
        return self.nll_bounds(x, variances=(self.config["variance"],), generator=generator)[
            self.config["variance"]
        ]

    def nll_bounds(
        self,
        x: Tensor,
        *,
        variances: Sequence[Variance] = ("beta", "beta_tilde"),
        generator: torch.Generator | None = None,
    ) -> dict[str, Tensor]:
        """The ELBO's bound for each fixed reverse variance, from one pass over the chain
        (:func:`probpath.losses.ddpm_nll_bounds`): every one is a valid upper bound on
        ``-log p(x)``, so the smallest mean is the one to report (``probpath eval`` does)."""
        check_batch(x, self.shape)
        levels = self.config["levels"]
        return losses.ddpm_nll_bounds(
            self.as_kind("eps"), x, self.chain, decoder=self.config["decoder"],
            levels=256 if levels is None else levels, variances=tuple(variances),
            generator=generator,
        )  # fmt: skip
