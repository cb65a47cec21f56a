r"""Classifier guidance and classifier-free guidance (the seeds' "Guidance" lecture).

Both sample from the *tilted* law :math:`p_\gamma(x_t \mid y) \propto p(y \mid x_t)^\gamma
p_t(x_t)`, whose score is

.. math:: \nabla\log p_\gamma(x_t \mid y) = \nabla\log p_t(x_t)
          + \gamma\,\nabla\log p(y \mid x_t)
          = (1 - \gamma)\,\nabla\log p_t(x_t) + \gamma\,\nabla\log p_t(x_t \mid y),

(Bayes: :math:`\nabla\log p(y \mid x_t) = \nabla\log p_t(x_t \mid y) - \nabla\log p_t(x_t)`);
γ = 1 is the conditional law, γ = 0 the unconditional one, γ > 1 sharpens
:math:`p(y \mid x_t)`.

*Classifier-free* (Ho & Salimans 2022): one network trained with labels dropped to a null
label predicts both branches; the seeds'
:math:`\hat\varepsilon(x_t, y) = \gamma\,\varepsilon_\theta(x_t, y) + (1-\gamma)\,
\varepsilon_\theta(x_t)` (:func:`classifier_free`). The same mix is right in every kind:
at fixed :math:`(x_t, t)` each kind is affine in :math:`\hat\varepsilon = E[\varepsilon
\mid x_t]`, :math:`K = a_K(x_t, t) + b_K(t)\,\hat\varepsilon` (score: :math:`a = 0,
b = -1/\sigma`; x0: :math:`a = x_t/\alpha, b = -\sigma/\alpha`; v and velocity likewise,
:mod:`probpath.parametrize`), and since the weights :math:`1-\gamma` and :math:`\gamma`
sum to 1, :math:`(1-\gamma) K(\hat\varepsilon_\varnothing) + \gamma K(\hat\varepsilon_y)
= K((1-\gamma)\hat\varepsilon_\varnothing + \gamma\hat\varepsilon_y)`.

*Classifier* guidance (Dhariwal & Nichol 2021): a classifier trained on noisy samples of
the same path (:class:`probpath.models.NoisyClassifier`) corrects the score,
:math:`s + \gamma\nabla\log p(y \mid x_t)`, i.e. the seeds'
:math:`\varepsilon_\theta(x_t) - \gamma\,\sigma(t)\,\nabla\log p(y \mid x_t)`
(:math:`\sigma = \sqrt{1-\bar\alpha_t}` on the DDPM chain); any other kind changes by the
linear part :math:`b_K` of that correction (:func:`classifier_guided`).

:func:`guide` wraps a :class:`~probpath.models.DiffusionModel` into a
:class:`GuidedModel` with the same sampling API, so every sampler of the family (ancestral,
DDIM, reverse SDE, PC, PF-ODE, EDM Heun, annealed Langevin, the flow-matching ODE solvers)
and the PF-ODE likelihood run on the guided predictions unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from probpath._schedules import evaluate
from probpath._time import shared_time
from probpath.models import DiffusionModel, NoisyClassifier
from probpath.models._sampling import SamplerDispatch, SamplerEntry
from probpath.models.diffusion import PathPredictions, PathSampling
from probpath.nets import broadcast_time, check_labels
from probpath.parametrize import convert
from probpath.paths import Schedule

__all__ = [
    "GuidedModel",
    "classifier_free",
    "classifier_guided",
    "classifier_log_prob_grad",
    "guide",
]

Labels = int | Tensor
"""One label for every row (an int or a 0-dim tensor) or one per row (a (batch,) tensor)."""


def _row_labels(y: Labels, x: Tensor) -> Tensor:
    """``y`` as a long tensor of shape (batch,) on x's device."""
    if isinstance(y, int):
        return torch.full((x.shape[0],), y, dtype=torch.long, device=x.device)
    if y.dim() == 0:
        return y.to(x.device).expand(x.shape[0])
    if y.shape != (x.shape[0],):
        raise ValueError(
            f"per-row labels of shape {tuple(y.shape)} cannot guide a batch of {x.shape[0]}; "
            "give one label per row or a single int"
        )
    return y.to(x.device)


def classifier_free(
    predict: Callable[..., Tensor], y: Labels, scale: float, *, null: int
) -> Callable[[Tensor, Tensor], Tensor]:
    r"""``(x, t) -> (1 - γ) f(x, t, null) + γ f(x, t, y)`` from one batched call of ``f``.

    ``predict(x, t, y=labels)`` is a conditional network of any kind (eps, x0, score, v,
    velocity: the mix is valid in each, see the module doc); ``null`` is its null label.
    Both branches run as one call on the batch stacked twice (2 × batch rows).

    Example:
        >>> f = lambda x, t, y: x * (y[:, None] == 1)  # "conditional" x, "unconditional" 0
        >>> classifier_free(f, 1, 3.0, null=0)(torch.ones(2, 1), torch.zeros(2))
        tensor([[3.],
                [3.]])
    """
    gamma = float(scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        b = x.shape[0]
        labels = _row_labels(y, x)
        tb = broadcast_time(t, x)
        both = predict(
            torch.cat([x, x]),
            torch.cat([tb, tb]),
            y=torch.cat([labels, labels.new_full((b,), null)]),
        )
        return torch.lerp(both[b:], both[:b], gamma)

    return guided


def classifier_log_prob_grad(
    classifier: Callable[[Tensor, Tensor], Tensor], y: Labels
) -> Callable[[Tensor, Tensor], Tensor]:
    r"""``(x, t) -> ∇_x log p(y | x_t = x)`` by autograd through ``classifier(x, t) -> logits``.

    Works for callers under ``torch.no_grad()`` (grad is enabled inside); when the caller
    records gradients the result keeps its graph (``create_graph``), so sampling and the
    PF-ODE likelihood stay differentiable. Rows must not interact in the classifier (the
    gradient of the summed log-probabilities is taken).

    Example:
        >>> logits = lambda x, t: torch.cat([x, -x], dim=1)  # p(0 | x) = sigmoid(2 x)
        >>> with torch.no_grad():
        ...     g = classifier_log_prob_grad(logits, 0)(torch.zeros(1, 1), torch.zeros(1))
        >>> g  # d/dx log sigmoid(2x) at 0 = 2 (1 - 1/2)
        tensor([[1.]])
    """

    def grad(x: Tensor, t: Tensor) -> Tensor:
        keep_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            xg = x if x.requires_grad else x.detach().requires_grad_(True)
            log_p = -F.cross_entropy(classifier(xg, t), _row_labels(y, x), reduction="sum")
            (g,) = torch.autograd.grad(log_p, xg, create_graph=keep_graph)
        return g

    return grad


def classifier_guided(
    predict: Callable[..., Tensor],
    kind: str,
    schedule: Schedule,
    grad_log_prob: Callable[[Tensor, Tensor], Tensor],
    scale: float,
) -> Callable[[Tensor, Tensor], Tensor]:
    r"""The classifier-corrected prediction of ``kind``: ``pred + b_K(Δε)``,
    ``Δε = -γ σ(t) ∇ log p(y | x_t)``.

    For ``kind="eps"`` it is the seeds' :math:`\varepsilon_\theta(x_t) - \gamma
    \sqrt{1-\bar\alpha_t}\nabla\log p(y \mid x_t)`, for ``"score"`` :math:`s + \gamma\nabla
    \log p(y \mid x_t)`, for ``"velocity"`` :math:`u + (\sigma' - \alpha'\sigma/\alpha)
    \Delta\varepsilon`; ``b_K`` is the linear part of the eps → kind map, which
    :func:`probpath.parametrize.convert` evaluates at ``x_t = 0``. ``predict(x, t)`` is the
    unconditional model, ``grad_log_prob`` e.g. :func:`classifier_log_prob_grad`.

    Example:
        >>> from probpath.paths import CondOTSchedule
        >>> zero, grad = (lambda x, t: torch.zeros_like(x)), (lambda x, t: x)
        >>> x, t = torch.ones(1, 2), torch.full((1,), 0.5)  # sigma(0.5) = 0.5
        >>> classifier_guided(zero, "eps", CondOTSchedule(), grad, 2.0)(x, t)  # -2 sigma grad
        tensor([[-1., -1.]])
        >>> classifier_guided(zero, "score", CondOTSchedule(), grad, 2.0)(x, t)  # 2 grad
        tensor([[2., 2.]])
    """
    gamma = float(scale)

    def guided(x: Tensor, t: Tensor) -> Tensor:
        s = evaluate(schedule, shared_time(broadcast_time(t, x)))  # samplers checked the grid
        d_eps = (-gamma * s.expand_like(x).sigma) * grad_log_prob(x, t)
        return predict(x, t) + convert(d_eps, "eps", kind, torch.zeros_like(x), s, check=False)

    return guided


class GuidedModel(PathPredictions, SamplerDispatch, nn.Module):
    """A view of a :class:`~probpath.models.DiffusionModel` predicting the guided field.

    Built by :func:`guide`. ``predict`` is the guided prediction in the model's own kind, on
    the model's path; ``score``, ``velocity``, ``eps``, ``x0``, ``log_prob`` (the exact
    likelihood of the guided PF-ODE), ``sample``, ``sample_with_nfe``, ``steps_for_nfe``,
    ``sampler_options`` and ``samplers`` work as on the model: the model's sampler entries run
    on ``model.sampling_view(self)``, the view the model builds for its own samplers with the
    guided predictions in place of its own. NFE counts network calls: a classifier-free call
    is one batched call on 2 × batch rows, a classifier-guided one also runs the classifier
    forward and backward.
    """

    labels: Tensor

    def __init__(
        self,
        model: DiffusionModel,
        labels: Tensor,
        scale: float,
        method: str,
        classifier: NoisyClassifier | None = None,
    ) -> None:
        super().__init__()
        self.model, self.classifier = model, classifier
        self.scale, self.method = float(scale), method
        self._predict_on_path_of(model)
        self.default_sampler = model.default_sampler
        self.register_buffer("labels", labels, persistent=False)
        if method == "cfg":
            self._guided = classifier_free(model.predict, labels, self.scale, null=model.n_classes)
        else:
            assert classifier is not None  # guide() checked it
            grad = classifier_log_prob_grad(classifier, labels)
            self._guided = classifier_guided(
                model.predict, model.prediction, model.schedule, grad, self.scale
            )

    def predict(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The guided prediction, of the model's kind; the label is the one given to guide."""
        if y is not None:
            raise ValueError("a guided model's label is fixed by guide(); guide again for another")
        return self._guided(x, t)

    def _like(self) -> Tensor:
        return self.model._like()

    def sampling_view(self) -> PathSampling:
        """The model's sampling view of the guided predictions."""
        return self.model.sampling_view(self)

    @property
    def samplers(self) -> tuple[str, ...]:
        """The model's samplers."""
        return self.model.samplers

    def _entry(self, sampler: str) -> SamplerEntry[Any]:
        return self.model._entry(sampler)


def _same_path(model: DiffusionModel, classifier: NoisyClassifier) -> bool:
    grid = torch.linspace(0.0, 1.0, 65, dtype=torch.float64)
    a, b = model.schedule(grid), classifier.schedule(grid)
    return torch.allclose(a.alpha, b.alpha) and torch.allclose(a.sigma, b.sigma)


def guide(
    model: DiffusionModel,
    y: Labels,
    scale: float,
    *,
    method: str = "cfg",
    classifier: NoisyClassifier | None = None,
) -> GuidedModel:
    """Guide ``model`` towards label ``y`` with scale γ: a :class:`GuidedModel`.

    ``method="cfg"``: classifier-free, for a conditional model (trained with ``n_classes``);
    ``"classifier"``: the model's unconditional prediction corrected by
    ``classifier`` (a :class:`~probpath.models.NoisyClassifier` on the same path). ``y`` is
    an int (every sample) or a long tensor (n,) (one label per sample of an n-sample run).

    Example:
        >>> from probpath.models import FlowMatching
        >>> model = FlowMatching(dim=2, hidden=[16], n_classes=3)
        >>> guided = guide(model, 2, 3.0)
        >>> x, nfe = guided.sample_with_nfe(5, sampler="euler", steps=4)
        >>> x.shape, nfe  # 4 batched calls, each on 2 x 5 rows
        (torch.Size([5, 2]), 4)
    """
    if not isinstance(model, DiffusionModel):
        raise TypeError(f"guide() takes a DiffusionModel family, got {type(model).__name__}")
    if not math.isfinite(float(scale)):
        raise ValueError(f"the guidance scale must be a finite number, got {scale!r}")
    if method == "cfg":
        if not model.conditional:
            raise ValueError(
                "classifier-free guidance needs a conditional model (n_classes > 0, trained "
                "with labels: probpath train --conditional); this model is unconditional; "
                "use method='classifier' with a noisy classifier instead"
            )
        if classifier is not None:
            raise ValueError("classifier-free guidance takes no classifier")
        n_classes = model.n_classes
    elif method == "classifier":
        if classifier is None:
            raise ValueError(
                "classifier guidance needs a classifier: train one on the model's path "
                "(probpath train --model noisy-classifier) and pass classifier=..."
            )
        if not isinstance(classifier, NoisyClassifier):
            raise TypeError(f"classifier must be a NoisyClassifier, got {type(classifier)}")
        if classifier.shape != model.shape or not _same_path(model, classifier):
            raise ValueError(
                "the classifier must be trained on the model's path and data: model "
                f"{model.schedule_config} (shape {list(model.shape)}), classifier "
                f"{classifier.schedule_config} (shape {list(classifier.shape)}); build it with "
                "NoisyClassifier(**model.schedule_config, shape=model.shape, ...)"
            )
        if getattr(model, "ot_coupling", False):
            raise ValueError(
                "classifier guidance corrects the score, which an OT-coupled flow-matching "
                "model does not define; use classifier-free guidance"
            )
        n_classes = classifier.n_classes
    else:
        raise ValueError(f"method must be 'cfg' or 'classifier', got {method!r}")
    labels = torch.as_tensor(y)
    if labels.dim() > 1:
        raise ValueError(f"labels must be an int or a (n,) tensor, got shape {labels.shape}")
    check_labels(labels.reshape(-1), labels.numel(), n_classes - 1)
    return GuidedModel(model, labels, scale, method, classifier)
