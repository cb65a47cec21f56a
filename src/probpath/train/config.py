"""The training configuration, the learning-rate schedule and a run's configuration."""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from probpath.data.image_set import TEST_FRACTION
from probpath.device import check_compile_mode, check_precision

__all__ = ["HELD_OUT", "IMAGE_SPACES", "RunConfig", "TrainConfig", "lr_factor"]

IMAGE_SPACES = ("centered", "logit")
_OPTIMIZERS = ("adam", "adamw")
_SCHEDULES = ("constant", "cosine")
# Fields that may change when a run is resumed without changing its mathematics.
RESUMABLE_CHANGES = frozenset(
    {
        "steps",
        "log_every",
        "eval_every",
        "eval_rows",
        "eval_budget",
        "checkpoint_every",
        "keep_checkpoints",
        "compile",
    }
)


@dataclass(frozen=True)
class TrainConfig:
    """How to train: one optimiser, one schedule, one set of seeds, for every family.

    Attributes:
        steps: total number of optimiser steps (a resumed run continues up to it).
        batch_size: the global mini-batch (split evenly across processes under torchrun).
        lr: peak learning rate.
        optimizer: ``"adam"`` (L2 weight decay) or ``"adamw"`` (decoupled decay).
        weight_decay: weight-decay coefficient.
        warmup_steps: linear warm-up from ``lr / warmup_steps`` to ``lr``.
        schedule: ``"constant"`` or ``"cosine"`` (decay to 0 at ``steps``).
        grad_clip: clip the global gradient 2-norm to this value; ``0`` disables clipping.
        ema_decay: decay of the weight EMA; ``0`` disables it.
        eval_every: evaluate on held-out data every so many steps (``0``: only at the end).
        eval_rows: the periodic evaluation's fixed, seeded subsample of the held-out rows
            (the final evaluation takes all of them).
        eval_budget: the largest fraction of the training time periodic evaluations may
            take: one that would exceed it is skipped (``0``: no limit).
        log_every: write a line to ``metrics.jsonl`` every so many steps.
        checkpoint_every: write a checkpoint every so many steps (and always at the end).
        keep_checkpoints: how many of the newest checkpoints to keep.
        seed: seeds the global torch RNG, the data order and the loss's generator.
        precision: ``"fp32"``, or ``"bf16"``/``"fp16"``: the loss's forward pass under
            autocast (the networks' matrix products and convolutions in that precision;
            solver state, divergences and log-densities stay float32), with loss scaling
            for ``fp16`` (:mod:`probpath.device`; docs/gpu.md).
        compile: ``None`` (eager), or a :func:`torch.compile` mode (``"default"``,
            ``"reduce-overhead"``, ...) in which the model's networks are compiled
            (:func:`probpath.device.compile_networks`); may change on resume.

    Example:
        >>> TrainConfig(steps=100, schedule="cosine").lr
        0.001
        >>> TrainConfig(schedule="linear")
        Traceback (most recent call last):
        ...
        ValueError: schedule must be one of ('constant', 'cosine'), got 'linear'
    """

    steps: int = 1000
    batch_size: int = 256
    lr: float = 1e-3
    optimizer: str = "adam"
    weight_decay: float = 0.0
    warmup_steps: int = 0
    schedule: str = "constant"
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    eval_every: int = 0
    eval_rows: int = 1000
    eval_budget: float = 0.1
    log_every: int = 10
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    seed: int = 0
    precision: str = "fp32"
    compile: str | None = None

    def __post_init__(self) -> None:
        positive = ("steps", "batch_size", "eval_rows", "log_every", "checkpoint_every")
        for name in (*positive, "keep_checkpoints"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        for name in ("warmup_steps", "eval_every", "seed"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"{name} must be a non-negative integer, got {v!r}")
        if not (isinstance(self.lr, (int, float)) and math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"lr must be a positive finite number, got {self.lr!r}")
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay must be >= 0, got {self.weight_decay!r}")
        if not (math.isfinite(self.eval_budget) and self.eval_budget >= 0):
            raise ValueError(
                f"eval_budget must be a fraction >= 0 (0: no limit), got {self.eval_budget!r}"
            )
        if not self.grad_clip >= 0:
            raise ValueError(f"grad_clip must be >= 0 (0 disables it), got {self.grad_clip!r}")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(
                f"ema_decay must lie in [0, 1) (0 disables it), got {self.ema_decay!r}"
            )
        check_precision(self.precision)
        if self.compile is not None:
            check_compile_mode(self.compile)

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict."""
        return asdict(self)

    def check_resumes(self, saved: dict[str, Any], run_dir: str | os.PathLike[str]) -> None:
        """Raise unless this config may continue the run in ``run_dir`` saved with ``saved``:
        only :data:`RESUMABLE_CHANGES` may differ (keys an older run lacks: their defaults).
        """
        saved = {**TrainConfig().to_dict(), **saved}
        diff = sorted({k for k, v in self.to_dict().items() if saved[k] != v} - RESUMABLE_CHANGES)
        if diff:
            raise ValueError(
                f"cannot resume {run_dir} with a different {diff}: saved {[saved[k] for k in diff]}"
            )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Build from a dict, refusing unknown keys with the list of known ones."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(
                f"unknown training option(s) {sorted(unknown)}; known: {sorted(known)}"
            )
        return cls(**d)


def lr_factor(step: int, config: TrainConfig) -> float:
    r"""Multiplier of ``config.lr`` at optimiser step ``step`` (1-based).

    Linear warm-up :math:`\min(1, k / k_w)`, then either constant or the cosine decay
    :math:`\tfrac12\,(1 + \cos(\pi\,(k - k_w) / (K - k_w)))` of Loshchilov & Hutter
    (2017, "SGDR"), reaching 0 at the last step :math:`K`.

    Example:
        >>> c = TrainConfig(steps=10, warmup_steps=2, schedule="cosine")
        >>> [round(lr_factor(k, c), 3) for k in (1, 2, 6, 10)]
        [0.5, 1.0, 0.5, 0.0]
    """
    if config.warmup_steps and step < config.warmup_steps:
        return step / config.warmup_steps
    if config.schedule == "constant":
        return 1.0
    span = max(config.steps - config.warmup_steps, 1)
    progress = min(max(step - config.warmup_steps, 0) / span, 1.0)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


HELD_OUT = TEST_FRACTION
"""Fraction of a finite data set held out for evaluation when no sizes are given (the same
fraction as the fixed image split, :func:`probpath.data.split_images`)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything ``probpath train`` needs, saved as ``RUN/config.json``.

    Attributes:
        model: registry name of the family (``probpath.models.MODELS``).
        model_config: keyword arguments of ``probpath.models.build(model, ...)``.
        data: a toy-set name, an image set's name (``digits``, ``mnist5k``), a data file, an
            image folder or file; its kind (continuous, discrete or images) follows from it
            (:func:`probpath.data.data_kind`).
        n_train, n_eval: rows drawn for training and for held-out evaluation; ``None``
            takes the default (:meth:`sizes`).
        label_column: the label column of a data file (index or CSV header name); never a
            feature, and the labels of a conditional model or classifier.
        standardize: fit a per-dimension standardisation on the training rows (vectors;
            images always take the ``image_space`` map).
        train: the :class:`TrainConfig`.
        levels: K, the number of levels of discrete data (values 0..K-1); ``None`` takes
            the data's own (17 for ``digits``, 256 for 8-bit images and uint8 files, the
            largest value + 1 for other integers) and :func:`~probpath.train.fit` saves
            it; given for a file of floats or a CSV, it makes the data discrete.
        image_space: the model space of images: ``"centered"`` (pixel k at
            2 k / (K - 1) - 1, the diffusion models' [-1, 1]) or ``"logit"`` (FFJORD's
            logit of the unit cube); see :class:`probpath.dequantization.Dequantizer`.

    Example:
        >>> c = RunConfig(model="cnf", data="8gaussians", train=TrainConfig(steps=5))
        >>> RunConfig.from_dict(c.to_dict()) == c
        True
    """

    model: str = "cnf"
    model_config: dict[str, Any] = field(default_factory=dict)
    data: str = "8gaussians"
    n_train: int | None = None
    n_eval: int | None = None
    standardize: bool = True
    train: TrainConfig = field(default_factory=TrainConfig)
    label_column: int | str | None = None
    levels: int | None = None
    image_space: str = "centered"

    def __post_init__(self) -> None:
        for name in ("n_train", "n_eval"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        k = self.levels
        if k is not None and (not isinstance(k, int) or isinstance(k, bool) or k < 2):
            raise ValueError(f"levels (K, values 0..K-1) must be an integer >= 2, got {k!r}")
        if self.image_space not in IMAGE_SPACES:
            raise ValueError(f"image_space must be one of {IMAGE_SPACES}, got {self.image_space!r}")

    def sizes(self, n_rows: int | None) -> tuple[int, int]:
        """``(n_train, n_eval)``, the unset ones filled in.

        A toy set (``n_rows=None``) draws fresh samples: 20000 and 5000 by default. A
        finite set of ``n_rows`` rows (a file, ``digits``) is used whole: an unset
        ``n_eval`` is ``HELD_OUT`` (20%) of the rows, an unset ``n_train`` the rest.

        >>> RunConfig().sizes(None), RunConfig().sizes(1797), RunConfig(n_eval=100).sizes(1797)
        ((20000, 5000), (1438, 359), (1697, 100))
        """
        if n_rows is None:
            return self.n_train or 20_000, self.n_eval or 5_000
        n_eval = self.n_eval
        if n_eval is None:
            n_eval = n_rows - self.n_train if self.n_train else round(HELD_OUT * n_rows)
        n_train = self.n_train or n_rows - n_eval
        if n_train < 1 or n_eval < 1 or n_train + n_eval > n_rows:
            raise ValueError(
                f"{self.data} has {n_rows} rows: cannot take n_train={n_train} and "
                f"n_eval={n_eval}; lower --n-train/--n-eval, or leave them unset to use all "
                f"rows with {HELD_OUT:.0%} held out"
            )
        return n_train, n_eval

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (the format of ``config.json`` and of ``--config`` files)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["train"] = self.train.to_dict()
        d["model_config"] = dict(self.model_config)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        """Build from a (possibly partial) dict; unknown keys are refused by name."""
        if not isinstance(d, dict):
            raise TypeError(f"a run config must be a mapping, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown config key(s) {sorted(unknown)}; known: {sorted(known)}")
        d = dict(d)
        if "train" in d:
            d["train"] = TrainConfig.from_dict(dict(d["train"] or {}))
        if "model_config" in d:
            d["model_config"] = dict(d["model_config"] or {})
        return cls(**d)

    def save(self, run_dir: str | os.PathLike[str]) -> Path:
        """Write ``run_dir/config.json``."""
        path = Path(run_dir) / "config.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, run_dir: str | os.PathLike[str]) -> RunConfig:
        """Read ``run_dir/config.json``."""
        path = Path(run_dir) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"{run_dir} is not a run folder: {path} is missing")
        try:
            return cls.from_dict(json.loads(path.read_text()))
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON: {e}") from e
