r"""Denoising diffusion probabilistic model (Ho et al. 2020; the seeds' lecture on DDPM).

A :class:`~probpath.models.diffusion.DiffusionModel` on the discrete DDPM chain
(:class:`probpath.paths.DiscreteSchedule`, step i at time t = i / T) with an
eps-predicting network, trained with :math:`L_\text{simple}`
(:func:`probpath.losses.ddpm_simple_loss`). It adds DDPM's own samplers to the inherited
ones (reverse SDE, predictor-corrector, PF-ODE, EDM Heun): ``"ancestral"`` (Algorithm 2,
:func:`probpath.samplers.ancestral`) and ``"ddim"`` (:func:`probpath.samplers.ddim`), and
two likelihoods: the exact one along the PF-ODE (:meth:`log_prob`, inherited) and the
ELBO's bound :meth:`nll_bound` (:func:`probpath.losses.ddpm_nll_bound`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from probpath import losses
from probpath.models._predictions import PathPredictions
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
        dim: data dimension.
        schedule: ``"ddpm-linear"`` (beta_1 = 1e-4 .. beta_T = 0.02, Ho et al.) or
            ``"ddpm-cosine"`` (Nichol & Dhariwal); ``schedule_kwargs`` e.g. ``{"T": 1000}``.
        prediction: the network's kind (``"eps"``, DDPM's choice; others are converted).
        hidden, activation, time_embedding: the MLP; it sees ``t = i / T``.
        variance: reverse-step variance, ``"beta_tilde"`` or ``"beta"`` (ancestral sampling
            and the ELBO's KL terms).
        decoder: ELBO decoder, ``"gaussian"`` (continuous data) or ``"discretized"`` (8-bit
            data in [-1, 1]).
        t_min, t_max: the ends of the inherited continuous-time samplers and likelihood.
        n_classes, p_uncond: a conditional model (see :class:`DiffusionModel`).
        net: any ``net(x, t)`` in place of the MLP (e.g. an analytic oracle).

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
        dim: int = 2,
        schedule: str = "ddpm-linear",
        schedule_kwargs: dict[str, Any] | None = None,
        prediction: str = "eps",
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "silu",
        time_embedding: str = "sinusoidal",
        t_min: float | None = None,
        t_max: float | None = None,
        variance: str = "beta_tilde",
        decoder: str = "gaussian",
        *,
        n_classes: int = 0,
        p_uncond: float = 0.1,
        net: Callable[..., Tensor] | None = None,
    ) -> None:
        if schedule not in ("ddpm-linear", "ddpm-cosine"):
            raise ValueError(
                f"DDPM runs on the discrete chain: schedule 'ddpm-linear' or 'ddpm-cosine', "
                f"got {schedule!r} (for continuous paths use the score SDE family)"
            )
        if variance not in ("beta", "beta_tilde"):
            raise ValueError(f"variance must be 'beta' or 'beta_tilde', got {variance!r}")
        if decoder not in ("gaussian", "discretized"):
            raise ValueError(f"decoder must be 'gaussian' or 'discretized', got {decoder!r}")
        super().__init__(
            dim, schedule, schedule_kwargs, prediction, hidden, activation, time_embedding,
            t_min, t_max, n_classes=n_classes, p_uncond=p_uncond, net=net,
        )  # fmt: skip
        assert isinstance(self.schedule, DiscreteSchedule)
        self.chain: DiscreteSchedule = self.schedule
        self.config.update(variance=variance, decoder=decoder)

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
        self._check(x)
        eps_model = self.with_labels(self.as_kind("eps"), x, y, generator)
        loss = losses.ddpm_simple_loss(eps_model, x, self.chain, generator=generator)
        return loss, {"l_simple": loss.detach()}

    def nll_bound(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """The ELBO's bound ``L_0 + sum_i L_i + L_T >= -log p(x)`` in nats, shape (batch,),
        with the model's reverse ``variance`` (the one ancestral sampling uses).

        T network calls on the batch (:func:`probpath.losses.ddpm_nll_bound`); bits/dim is
        this over ``dim * ln 2``.
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
        self._check(x)
        return losses.ddpm_nll_bounds(
            self.as_kind("eps"), x, self.chain, decoder=self.config["decoder"],
            variances=tuple(variances), generator=generator,
        )  # fmt: skip

    def trajectories(
        self,
        z_or_n: Tensor | int,
        n_times: int = 50,
        *,
        generator: torch.Generator | None = None,
        sampler: str = "ancestral",
        steps: int | None = None,
    ) -> Tensor:
        """The denoising trajectory: states of ``sampler`` ("ancestral" or "ddim") at
        ``n_times`` roughly equally spaced steps from noise to data, shape
        (n_times, n, dim); ``z_or_n`` is a starting noise or a number of points."""
        if n_times < 2:
            raise ValueError(f"n_times must be at least 2 (both ends), got {n_times}")
        if sampler not in ("ancestral", "ddim"):
            raise ValueError(f"trajectories support 'ancestral' or 'ddim', got {sampler!r}")
        z = self.prior_sample(z_or_n, generator=generator) if isinstance(z_or_n, int) else z_or_n
        self._check(z)
        states = [z]
        if steps is None:
            steps = self.sampler_options(sampler)["steps"]
        n_steps = len(ddpm_timesteps(self.chain.T, steps)) - 1
        if n_times > n_steps + 1:
            raise ValueError(f"n_times can be at most steps + 1 = {n_steps + 1}, got {n_times}")
        keep = set(torch.linspace(0, n_steps - 1, n_times - 1).round().long().tolist())

        def record(k: int, x: Tensor) -> None:
            if k in keep:
                states.append(x)

        self._entry(sampler).run(
            self.sampling_view(), z, steps=steps, generator=generator, callback=record
        )
        return torch.stack(states)

    def _check(self, x: Tensor) -> None:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"x must have shape (batch, {self.dim}), got {tuple(x.shape)}")
