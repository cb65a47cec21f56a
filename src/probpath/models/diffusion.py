r"""The shared base of every model on a Gaussian path (design.md, "One idea holds it together").

A :class:`DiffusionModel` is a network on the path ``x_t = alpha(t) x_0 + sigma(t) eps``
that predicts one *kind* (``eps``, ``x0``, ``score``, ``v`` or ``velocity``); through
:mod:`probpath.parametrize` it answers in every kind, so one model gets every sampler
(reverse SDE, predictor–corrector, the probability-flow ODE with any solver, EDM Heun) and
an exact log-likelihood by the instantaneous change of variables along the PF-ODE
(:func:`probpath.likelihood.ode_log_prob`). DDPM, NCSN, the score SDE and flow matching
are subclasses that only add their training loss (and, where they have one, samplers).

How a family plugs in (DDPM, NCSN, flow matching, the score SDE):

1. subclass, call ``super().__init__(dim=..., schedule=..., prediction=..., ...)`` and add
   your own keys to ``self.config`` (it must rebuild the model through
   ``probpath.models.build``);
2. implement ``loss(x, *, y=None, generator=None) -> (loss, logs)`` (use
   ``self.path.sample`` to noise the data and ``self.as_kind(kind)`` to read the network in
   your target's kind; ``self.with_labels(fn, x, y, generator)`` binds the training labels,
   dropped to the null label with probability ``p_uncond``, for conditional models);
3. optionally add samplers: a typed entry ``run(view, x_T, *, steps=..., <options>=...,
   generator=None, callback=None) -> (samples, nfe)`` over :class:`PathSampling` (what a
   sampler may read from the model), registered with its NFE per step:
   ``SAMPLERS = {**DiffusionModel.SAMPLERS, "name": SamplerEntry(run, lambda options: 1)}``,
   and set ``default_sampler``. A sampler that reads more than :class:`PathSampling` holds
   reads a subclass of it, which the family builds in :meth:`sampling_view` (DDPM's chain,
   NCSN's levels). ``sample(n, sampler="name", steps=N, **options)`` checks the options
   against ``run``'s signature; the CLI reads ``model.samplers`` and
   ``model.sampler_options(name)``;
4. optionally define ``nll_bound(x) -> Tensor`` (e.g. DDPM's ELBO); ``probpath eval``
   reports it next to the exact NLL.

Everything that only reads the network through ``predict`` (every kind, the samplers'
time grid and prior, the PF-ODE likelihood) lives in :class:`PathPredictions`, which
:class:`probpath.guidance.GuidedModel` shares; a guided view samples with its model's
entries on the view ``model.sampling_view(guided)``, so it sees whatever the model's
samplers see.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from probpath.models._path_samplers import (
    DPMMethod,
    dpm_entry,
    dpm_nfe,
    euler_maruyama_entry,
    heun_entry,
    pc_entry,
    pf_ode_entry,
)
from probpath.models._predictions import PathPredictions, PathSampling
from probpath.models._sampling import SamplerDispatch, SamplerEntry
from probpath.models._shape import NetSpec, data_shape, family_net
from probpath.models.base import LossOutput
from probpath.nets import check_labels
from probpath.parametrize import KINDS
from probpath.paths import GaussianPath, Schedule, make_schedule
from probpath.sdes import SDE
from probpath.solvers import FIXED_STEP_NFE

__all__ = [
    "DPMMethod",
    "DiffusionModel",
    "PathPredictions",
    "PathSampling",
    "SamplerEntry",
    "default_time_range",
]


def default_time_range(
    name: str, schedule: Schedule, t_min: float | None, t_max: float | None
) -> tuple[float, float]:
    """``(t_min, t_max)`` of a path: t_min 1e-5 for "ot" else 1e-3; t_max 1, or
    ``1 - t_min`` where alpha(1) = 0; checked to satisfy ``0 < t_min < t_max <= 1``."""
    t_min = (1e-5 if name == "ot" else 1e-3) if t_min is None else float(t_min)
    if t_max is None:
        t_max = 1.0 if float(schedule(torch.tensor(1.0)).alpha) > 0 else 1.0 - t_min
    if not 0.0 < t_min < t_max <= 1.0:
        raise ValueError(f"need 0 < t_min < t_max <= 1, got t_min={t_min}, t_max={t_max}")
    return t_min, float(t_max)


class DiffusionModel(PathPredictions, SamplerDispatch, nn.Module):
    """A network on a Gaussian path, in any parametrisation, with every sampler.

    Args:
        dim: data dimension (vectors; default 2); ``shape``: one example's shape instead,
            ``[C, H, W]`` for images (``dim`` is then its product). Every method takes
            batches ``(batch, *shape)``.
        schedule: a :func:`probpath.paths.make_schedule` name ("vp", "subvp", "vp-cosine",
            "ve", "ot", "ddpm-linear", "ddpm-cosine"); ``schedule_kwargs`` its arguments.
        prediction: the network's output kind: "eps", "x0", "score", "v" or "velocity".
        net: the network, ``"auto"`` (the U-Net for images, else the MLP), ``"mlp"`` or
            ``"unet"`` (:func:`probpath.nets.build_net`, role ``"field"``; ``config`` keeps
            the resolved kind), with ``net_config`` overriding its sizes (e.g.
            ``{"base_channels": 16}``); or any callable ``net(x, t)`` (``net(x, t, y=...)``
            for a conditional model, ``y=None`` meaning the null label), e.g. an analytic
            oracle in tests, which is not part of ``config``.
        hidden, activation, time_embedding: the :class:`~probpath.nets.MLP`'s; the network
            sees ``t`` in [0, 1] (a DDPM index i is ``t = i / T``).
        t_min: the data end of sampling and likelihood (default 1e-5 for "ot", else 1e-3).
        t_max: the noise end; default 1, or ``1 - t_min`` where alpha(1) = 0.
        n_classes: labels of a conditional model (0: unconditional). The network then takes
            ``y`` (batch,) in ``[0, n_classes]``, ``n_classes`` being the null label
            (:class:`~probpath.nets.MLP`), and is trained with labels dropped to null with
            probability ``p_uncond`` (:meth:`with_labels`), ready for classifier-free
            guidance (:func:`probpath.guidance.guide`).

    Sampling: ``samplers`` lists the accepted names (and ``"em"``, ``"ode"`` for
    ``"euler-maruyama"``, ``"pf-ode"``); ``sample(n, sampler=..., steps=..., **options)``
    returns samples and ``sample_with_nfe`` also the NFE used; ``sampler_options(name)``
    lists a sampler's options and their defaults; ``trajectories(n, n_times, sampler=...)``
    the denoising path x_t of any sampler, shape (n_times, n, *shape).

    Example:
        >>> model = DiffusionModel(dim=2, schedule="vp", hidden=[16])
        >>> model.samplers
        ('dpm', 'euler-maruyama', 'heun', 'pc', 'pf-ode')
        >>> x, nfe = model.sample_with_nfe(4, sampler="heun", steps=5)
        >>> x.shape, nfe
        (torch.Size([4, 2]), 10)
        >>> model.log_prob(torch.zeros(3, 2)).shape
        torch.Size([3])
        >>> images = DiffusionModel(shape=[1, 8, 8], net_config={"base_channels": 8})
        >>> images.config["net"], images.sample(2, sampler="heun", steps=2).shape
        ('unet', torch.Size([2, 1, 8, 8]))
        >>> images.trajectories(2, n_times=3, sampler="heun", steps=4).shape
        torch.Size([3, 2, 1, 8, 8])
    """

    # entries over PathSampling; a family's own entries may read a subclass of it
    SAMPLERS: ClassVar[Mapping[str, SamplerEntry[Any]]] = {
        "euler-maruyama": SamplerEntry(euler_maruyama_entry, lambda o: 1),
        "pc": SamplerEntry(pc_entry, lambda o: 1 + o["n_corrector"]),
        "pf-ode": SamplerEntry(pf_ode_entry, lambda o: FIXED_STEP_NFE.get(o["method"] or "heun")),
        "heun": SamplerEntry(heun_entry, lambda o: 2),
        "dpm": SamplerEntry(dpm_entry, lambda o: dpm_nfe(o["method"])),
    }
    SAMPLER_ALIASES: ClassVar[Mapping[str, str]] = {"em": "euler-maruyama", "ode": "pf-ode"}
    default_sampler = "pf-ode"
    _anchor: Tensor

    train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 20000,
        "batch_size": 1024,
        "lr": 2e-3,
        "warmup_steps": 200,
        "schedule": "cosine",
    }
    """``probpath train`` defaults of every family on a Gaussian path (ddpm, ncsn, sde, fm;
    flags and config files override them): with each family's constructor defaults, measured
    by ``benchmarks/bench_defaults.py`` to bring the PF-ODE test NLL within 0.10 nats of the
    entropy on held-out 2-D Gaussian mixtures and within 0.20 on 5-D ones, in well under 10
    minutes on 2 cores (docs/benchmarks.md, "Family defaults")."""

    image_train_defaults: ClassVar[dict[str, Any]] = {
        "steps": 2000,
        "batch_size": 128,
        "lr": 1e-3,
        "warmup_steps": 100,
        "schedule": "cosine",
    }
    """The same on images (the U-Net of :func:`probpath.nets.unet_config_for`): about 10
    minutes of training on 2 cores at 8x8 (digits), 35 at 28x28 (docs/benchmarks.md,
    "Images")."""

    def __init__(
        self,
        dim: int | None = None,
        schedule: str = "vp",
        schedule_kwargs: dict[str, Any] | None = None,
        prediction: str = "eps",
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "silu",
        time_embedding: str = "sinusoidal",
        t_min: float | None = None,
        t_max: float | None = None,
        *,
        shape: Sequence[int] | None = None,
        net: NetSpec = "auto",
        net_config: dict[str, Any] | None = None,
        n_classes: int = 0,
        p_uncond: float = 0.1,
    ) -> None:
        super().__init__()
        self.shape = data_shape(dim, shape)
        if prediction not in KINDS:
            raise ValueError(f"unknown prediction {prediction!r}; choose one of {KINDS}")
        if n_classes < 0 or not 0.0 <= p_uncond <= 1.0:
            raise ValueError(
                f"need n_classes >= 0 and 0 <= p_uncond <= 1, got {n_classes}, {p_uncond}"
            )
        kwargs = dict(schedule_kwargs or {})
        self.schedule = make_schedule(schedule, **kwargs)
        self.path = GaussianPath(self.schedule)
        t_min, t_max = default_time_range(schedule, self.schedule, t_min, t_max)
        self.dim, self.prediction = math.prod(self.shape), prediction
        self.t_min, self.t_max = t_min, t_max
        self.n_classes, self.p_uncond = int(n_classes), float(p_uncond)
        # the path's name and arguments: NoisyClassifier(**model.schedule_config, ...) is a
        # classifier on the same path, for classifier guidance
        self.schedule_config: dict[str, Any] = dict(schedule=schedule, schedule_kwargs=kwargs)
        self.net, kind, net_config = family_net(
            net, self.shape, role="field", n_classes=self.n_classes, net_config=net_config,
            mlp=dict(hidden=tuple(hidden), activation=activation, time_embedding=time_embedding),
        )  # fmt: skip
        self.config: dict[str, Any] = dict(
            dim=self.dim,
            shape=list(self.shape),
            net=kind,
            net_config=net_config,
            schedule=schedule,
            schedule_kwargs=kwargs,
            prediction=prediction,
            hidden=list(hidden),
            activation=activation,
            time_embedding=time_embedding,
            t_min=t_min,
            t_max=self.t_max,
            n_classes=self.n_classes,
            p_uncond=self.p_uncond,
        )
        self.sde = SDE(self.schedule)
        # follows .to(dtype/device) even when the network has no parameters
        self.register_buffer("_anchor", torch.zeros(()), persistent=False)

    def sampling_view(self, predictions: PathPredictions | None = None) -> PathSampling:
        """What the samplers read: the predictions of ``predictions`` (default: this model;
        a guided view passes itself) on this model's path."""
        return PathSampling.of(self if predictions is None else predictions)

    def predict(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The raw network output (of kind ``self.prediction``), ``t`` of shape (batch,).

        ``y``: labels of a conditional model, a long tensor (batch,) in ``[0, n_classes]``
        (``n_classes``: the null label) or None (the null label for every row).
        """
        if not self.conditional:
            if y is not None:
                raise ValueError("this model is unconditional (n_classes=0): call it without y")
            return self.net(x, t)
        return self.net(x, t, y=y)

    @property
    def conditional(self) -> bool:
        """Whether the network takes labels (``n_classes > 0``)."""
        return self.n_classes > 0

    def with_labels(
        self,
        fn: Callable[..., Tensor],
        x: Tensor,
        y: Tensor | None,
        generator: torch.Generator | None = None,
    ) -> Callable[[Tensor, Tensor], Tensor]:
        """``fn`` with a training batch's labels bound: ``(x_t, t) -> fn(x_t, t, y=y')``.

        Classifier-free training (Ho & Salimans 2022, Algorithm 1): each row's label is
        replaced by the null label with probability ``p_uncond`` (one Bernoulli per row,
        drawn with ``generator``), so one network learns p(x | y) and p(x). ``y=None``
        trains the null branch only. An unconditional model returns ``fn`` (y must be None).
        """
        if not self.conditional:
            if y is not None:
                raise ValueError(
                    "labels were given to an unconditional model: build it with n_classes > 0 "
                    "(e.g. --conditional) to train on them"
                )
            return fn
        if y is not None:
            check_labels(y, x.shape[0], self.n_classes)
            drop = torch.rand(y.shape, generator=generator, device=x.device) < self.p_uncond
            y = torch.where(drop, self.n_classes, y.to(x.device))
        return functools.partial(fn, y=y)

    def loss(
        self, x: Tensor, *, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> LossOutput:
        """The training objective: each family defines its own (DSM, L_simple, CFM, ...)."""
        raise NotImplementedError(
            f"{type(self).__name__} has no training loss: DiffusionModel is a base class; "
            "use a family such as 'sde', 'ddpm' or 'flow_matching'"
        )
