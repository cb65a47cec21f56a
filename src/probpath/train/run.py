"""A run folder: what was trained on what, and how to get the trained model back.

Layout of ``RUN/``: ``config.json`` (a :class:`RunConfig`), ``metrics.jsonl`` (the
training log), ``checkpoints/step_*/`` (see :mod:`.checkpoint`) and the PNGs of
``probpath plot``. The data standardisation and, for a run on labelled data, the class
names (label k is ``classes[k]``) are stored in every checkpoint.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from .checkpoint import load_checkpoint
from .config import TrainConfig

__all__ = ["HELD_OUT", "LoadedRun", "RunConfig", "load_run", "split_data"]

HELD_OUT = 0.2
"""Fraction of a finite data set held out for evaluation when no sizes are given."""


@dataclass(frozen=True)
class RunConfig:
    """Everything ``probpath train`` needs, saved as ``RUN/config.json``.

    Attributes:
        model: registry name of the family (``probpath.models.MODELS``).
        model_config: keyword arguments of ``probpath.models.build(model, ...)``.
        data: a toy-set name, ``digits`` or a data file path (``probpath.data.load_dataset``).
        n_train, n_eval: rows drawn for training and for held-out evaluation; ``None``
            takes the default (:meth:`sizes`).
        label_column: the label column of a data file (index or CSV header name); never a
            feature, and the labels of a conditional model or classifier.
        standardize: fit a per-dimension standardisation on the training rows.
        train: the :class:`TrainConfig`.

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

    def __post_init__(self) -> None:
        for name in ("n_train", "n_eval"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
                raise ValueError(f"{name} must be a positive integer, got {v!r}")

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


def split_data(data: Tensor, n_train: int) -> tuple[Tensor, Tensor]:
    """First ``n_train`` rows for training, the rest held out."""
    if not 0 < n_train < len(data):
        raise ValueError(f"cannot hold out data: {len(data)} rows, {n_train} for training")
    return data[:n_train], data[n_train:]


@dataclass(frozen=True)
class LoadedRun:
    """A trained model, its run config, its data standardisation (a dict or ``None``),
    the checkpoint step it came from and the class names of labelled data (or ``()``)."""

    model: nn.Module
    config: RunConfig
    standardizer: dict[str, Any] | None
    step: int
    path: Path
    classes: tuple[str, ...] = ()


def load_run(
    run_dir: str | os.PathLike[str],
    *,
    ema: bool = True,
    overrides: dict[str, Any] | None = None,
) -> LoadedRun:
    """Rebuild a run's model from ``config.json`` and load its newest checkpoint.

    ``ema`` picks the averaged weights when the run kept them; ``overrides`` replaces
    model config keys that do not change the parameters (e.g. the solver or tolerances).
    """
    from ..models import build

    cfg = RunConfig.load(run_dir)
    if overrides:
        cfg = replace(cfg, model_config={**cfg.model_config, **overrides})
    model = build(cfg.model, **cfg.model_config)
    ck = load_checkpoint(Path(run_dir) / "checkpoints")
    weights = ck.ema if ema and ck.ema is not None else ck.model
    model.load_state_dict(weights)
    model.eval()
    extra = ck.meta.get("extra", {})
    return LoadedRun(
        model=model,
        config=cfg,
        standardizer=extra.get("standardizer"),
        step=ck.step,
        path=ck.path,
        classes=tuple(extra.get("classes") or ()),
    )
