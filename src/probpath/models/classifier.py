r"""A time-conditioned classifier :math:`p_\phi(y \mid x_t)` on a Gaussian path, for
classifier guidance (Dhariwal & Nichol 2021; the seeds' "Classifier guidance": "train the
classifier :math:`p(y \mid x_t)` on the noisy samples :math:`x_t`").

It is trained by cross-entropy on ``x_t = alpha(t) x_0 + sigma(t) eps`` with
``t ~ U(t_min, t_max)``, drawn from the *same* path as the diffusion model it will guide:
built with the model's schedule name and arguments (e.g. ``"ddpm-linear"`` for a DDPM,
whose chain, called at ``t = i / T``, gives the chain's own ``(sqrt(abar_i),
sqrt(1 - abar_i))``; between grid points it interpolates, so the classifier also answers the
continuous-time samplers). :func:`probpath.guidance.guide` checks that the two paths agree.

The logits are ``b + alpha(t) h_phi(x_t, t)`` (a learned log-prior ``b`` and a network
``h``: an MLP, or on images the U-Net's encoder :class:`probpath.nets.UNetEncoder`).
For any data, ``∇ log p(y | x_t) = (alpha / sigma^2) (E[x_0 | x_t, y] - E[x_0 | x_t])``
(Tweedie's formula for p_t(x | y) and p_t(x)), so the x-dependence vanishes with alpha and
p(y | x_t) tends to the prior p(y). Building the factor in matters for guidance in velocity
form: on the CondOT path the correction's coefficient ``sigma (sigma alpha' / alpha -
sigma')`` grows like 1 / alpha near t = 1, where an unstructured network's leftover
gradient would be amplified 1 / alpha(t_max) = 1e5 times.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probpath._schedules import evaluate
from probpath._time import pad_like, shared_time
from probpath.models._shape import NetSpec, check_batch, data_shape, family_net
from probpath.models.base import LossOutput
from probpath.models.diffusion import default_time_range
from probpath.nets import broadcast_time, check_labels
from probpath.paths import GaussianPath, Schedule, make_schedule

__all__ = ["NoisyClassifier", "checked_labels", "classification_loss", "hit_rate"]


def checked_labels(x: Tensor, y: Tensor | None, shape: tuple[int, ...], n_classes: int) -> Tensor:
    """The labels ``y`` of the batch ``x`` (batch, *shape), checked to lie in
    ``[0, n_classes)``, on x's device."""
    if y is None:
        raise ValueError("a classifier trains on labelled data: pass y (data with labels)")
    check_batch(x, shape)
    return check_labels(y, x.shape[0], n_classes - 1).to(x.device)


def hit_rate(logits: Tensor, y: Tensor) -> Tensor:
    """The fraction of rows whose largest logit is at the label ``y`` (0-dim, on the device)."""
    return (logits.argmax(-1) == y).to(logits.dtype).mean()


def classification_loss(logits: Tensor, y: Tensor) -> LossOutput:
    """The mean cross-entropy of ``y``, logging it (``ce``) and the accuracy (``acc``) as 0-dim
    tensors (read back to the host only when the trainer logs)."""
    loss = F.cross_entropy(logits, y)
    return loss, {"ce": loss.detach(), "acc": hit_rate(logits.detach(), y)}


class _AlphaScaledLogits(nn.Module):
    """``(x, t) -> b + alpha(t) h(x, t)`` (see the module doc)."""

    def __init__(self, net: nn.Module, schedule: Schedule, n_classes: int) -> None:
        super().__init__()
        self.net, self.schedule = net, schedule
        self.log_prior = nn.Parameter(torch.zeros(n_classes))

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        logits = self.net(x, t)
        alpha = evaluate(self.schedule, shared_time(broadcast_time(t, x))).alpha  # no host read
        return self.log_prior + pad_like(alpha, logits) * logits


class NoisyClassifier(nn.Module):
    """``p(y | x_t)``: logits ``b + alpha(t) h(x_t, t)`` over ``n_classes`` labels.

    Args:
        dim: data dimension (vectors; default 2); ``shape``: one example's shape instead,
            ``[C, H, W]`` for images (``dim`` is its product).
        n_classes: number of labels (at least 2).
        schedule, schedule_kwargs: the path, as the diffusion model's
            (:func:`probpath.paths.make_schedule`): "vp", "ve", "ot", "ddpm-linear", ...;
            ``NoisyClassifier(**model.schedule_config, n_classes=K)`` matches ``model``.
        net: h: ``"auto"`` (:class:`~probpath.nets.UNetEncoder` for images, else the MLP),
            ``"mlp"`` or ``"unet"`` (:func:`probpath.nets.build_net`, role ``"classifier"``),
            ``net_config`` overriding its sizes (give the diffusion model's U-Net sizes to see
            the same features); ``config`` keeps the resolved kind. Or any callable
            ``net(x, t) -> logits`` instead of ``b + alpha h`` (e.g. an exact posterior in
            tests), not part of ``config``.
        hidden, activation, time_embedding: the :class:`~probpath.nets.MLP`'s.
        t_min, t_max: the training times (defaults as :class:`DiffusionModel`'s).
        noisy: ``False`` trains a clean classifier (always at ``t = t_min``), e.g. to score
            the labels of generated samples.

    Example:
        >>> clf = NoisyClassifier(dim=2, n_classes=3, hidden=[16])
        >>> x, y = torch.randn(8, 2), torch.randint(0, 3, (8,))
        >>> loss, logs = clf.loss(x, y=y)
        >>> sorted(logs), clf(x, torch.full((8,), 0.5)).shape
        (['acc', 'ce'], torch.Size([8, 3]))
    """

    def __init__(
        self,
        dim: int | None = None,
        n_classes: int = 2,
        schedule: str = "vp",
        schedule_kwargs: dict[str, Any] | None = None,
        hidden: Sequence[int] = (128, 128, 128),
        activation: str = "silu",
        time_embedding: str = "sinusoidal",
        t_min: float | None = None,
        t_max: float | None = None,
        noisy: bool = True,
        *,
        shape: Sequence[int] | None = None,
        net: NetSpec = "auto",
        net_config: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.shape = data_shape(dim, shape)
        if n_classes < 2:
            raise ValueError(f"a classifier needs n_classes >= 2, got {n_classes}")
        kwargs = dict(schedule_kwargs or {})
        self.schedule = make_schedule(schedule, **kwargs)
        self.path = GaussianPath(self.schedule)
        self.t_min, self.t_max = default_time_range(schedule, self.schedule, t_min, t_max)
        self.dim, self.n_classes, self.noisy = math.prod(self.shape), int(n_classes), bool(noisy)
        self.schedule_config: dict[str, Any] = dict(schedule=schedule, schedule_kwargs=kwargs)
        h, kind, net_config = family_net(
            net, self.shape, role="classifier", n_classes=self.n_classes, net_config=net_config,
            mlp=dict(hidden=tuple(hidden), activation=activation, time_embedding=time_embedding),
        )  # fmt: skip
        # a network built here gets the alpha-scaled logits; a callable is the logits itself
        self.net: Callable[..., Tensor] = h
        if isinstance(net, str) and isinstance(h, nn.Module):
            self.net = _AlphaScaledLogits(h, self.schedule, self.n_classes)
        self.config: dict[str, Any] = dict(
            dim=self.dim,
            shape=list(self.shape),
            net=kind,
            net_config=net_config,
            n_classes=self.n_classes,
            schedule=schedule,
            schedule_kwargs=kwargs,
            hidden=list(hidden),
            activation=activation,
            time_embedding=time_embedding,
            t_min=self.t_min,
            t_max=self.t_max,
            noisy=self.noisy,
        )

    def forward(self, x: Tensor, t: Tensor | float) -> Tensor:
        """Logits of ``p(y | x_t = x)``, shape (batch, n_classes)."""
        return self.net(x, t)

    def log_prob_y(self, x: Tensor, t: Tensor | float, y: Tensor) -> Tensor:
        """``log p(y | x_t = x)`` per row, shape (batch,)."""
        return -F.cross_entropy(self(x, t), y, reduction="none")

    def loss(
        self, x: Tensor, *, y: Tensor | None = None, generator: torch.Generator | None = None
    ) -> LossOutput:
        """Cross-entropy of ``y`` at ``x_t = alpha x + sigma eps``, t ~ U(t_min, t_max)
        (``noisy=False``: t = t_min); logs ``ce`` and the batch accuracy ``acc``."""
        y = checked_labels(x, y, self.shape, self.n_classes)
        t = torch.full((x.shape[0],), self.t_min, dtype=x.dtype, device=x.device)
        if self.noisy:
            u = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
            t = t + (self.t_max - self.t_min) * u
        x_t, _ = self.path.sample(x, t, generator=generator)
        return classification_loss(self(x_t, t), y)

    @torch.no_grad()
    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Fraction of rows of ``x`` (read at ``t = t_min``, no noise added) labelled ``y``."""
        y = checked_labels(x, y, self.shape, self.n_classes)
        t = torch.full((x.shape[0],), self.t_min, dtype=x.dtype, device=x.device)
        return float(hit_rate(self(x, t), y))
