"""Model families behind one contract (:class:`GenerativeModel`) and one registry.

Example:
    >>> model = build("cnf", dim=2, hidden=[16, 16])
    >>> isinstance(model, GenerativeModel)
    True
    >>> build("cnf", **model.config).config == model.config
    True
"""

from __future__ import annotations

from typing import Any

from torch import nn

from probpath.models.base import GenerativeModel, LossOutput
from probpath.models.classifier import NoisyClassifier
from probpath.models.cnf import CNF, EXACT_TRACE_MAX_DIM
from probpath.models.ddpm import DDPM
from probpath.models.diffusion import DiffusionModel
from probpath.models.ebm import EBM
from probpath.models.flow_matching import FlowMatching
from probpath.models.judge import ImageClassifier
from probpath.models.ncsn import NCSN
from probpath.models.score_sde import ScoreSDE

__all__ = [
    "CNF",
    "DDPM",
    "EBM",
    "EXACT_TRACE_MAX_DIM",
    "MODELS",
    "NCSN",
    "DiffusionModel",
    "FlowMatching",
    "GenerativeModel",
    "ImageClassifier",
    "LossOutput",
    "NoisyClassifier",
    "ScoreSDE",
    "build",
]

MODELS: dict[str, type[nn.Module]] = {
    "cnf": CNF,
    "fm": FlowMatching,
    "ddpm": DDPM,
    "ncsn": NCSN,
    "ebm": EBM,
    "sde": ScoreSDE,
    "noisy-classifier": NoisyClassifier,
    "image-classifier": ImageClassifier,
}
"""Registry name -> model class; ``build(name, **config)`` constructs one."""


def build(name: str, **config: Any) -> nn.Module:
    """Construct the model family ``name`` from its JSON config (``model.config``)."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; registered: {', '.join(sorted(MODELS))}")
    try:
        return MODELS[name](**config)
    except TypeError as err:
        raise TypeError(f"bad config for model {name!r}: {err}") from err
