"""A run's data: the rows it trains and is evaluated on, and the map to the model's space.

A run (:class:`~probpath.train.config.RunConfig`) trains on ``n_train`` rows of its data and
holds out ``n_eval`` more (sizes by :meth:`RunConfig.sizes`): a toy set draws
``n_train + n_eval`` fresh samples with the run's seed, a finite set (a file, ``digits``)
takes them from its seeded shuffle. The model lives in *model space*: z = (x - mean) / std
per dimension when the run standardises (the default), x itself otherwise, and densities
move between the spaces by the change of variables
log p_x(x) = log p_z(z) + log|det dz/dx| (:func:`to_model_space`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from ..data import (
    DIGITS,
    TOY_NAMES,
    Standardizer,
    is_finite,
    load_dataset,
    load_labelled,
    sample_toy,
)
from .config import RunConfig

__all__ = [
    "RunRows",
    "load_features",
    "load_rows",
    "split_data",
    "to_data_space",
    "to_model_space",
    "true_sampler",
]


@dataclass(frozen=True)
class RunRows:
    """A run's training and held-out rows (data space); their labels and the class names
    (label k is ``classes[k]``) when loaded with labels."""

    train: Tensor
    eval: Tensor
    train_y: Tensor | None = None
    eval_y: Tensor | None = None
    classes: tuple[str, ...] = ()


def split_data(data: Tensor, n_train: int) -> tuple[Tensor, Tensor]:
    """First ``n_train`` rows for training, the rest held out."""
    if not 0 < n_train < len(data):
        raise ValueError(f"cannot hold out data: {len(data)} rows, {n_train} for training")
    return data[:n_train], data[n_train:]


def load_rows(config: RunConfig, *, labels: bool = False) -> RunRows:
    """The rows of ``config`` in data space, in the default dtype.

    Example:
        >>> rows = load_rows(RunConfig(data="8gaussians", n_train=6, n_eval=2), labels=True)
        >>> rows.train.shape, rows.eval.shape, rows.eval_y.shape, len(rows.classes)
        (torch.Size([6, 2]), torch.Size([2, 2]), torch.Size([2]), 8)
    """
    finite = is_finite(config.data)
    n = None if finite else sum(config.sizes(None))
    seed, dtype, column = config.train.seed, torch.get_default_dtype(), config.label_column
    if labels:
        d = load_labelled(config.data, n, seed=seed, dtype=dtype, label_column=column)
        x, y, classes = d.x, d.y, d.classes
    else:
        x = load_dataset(config.data, n, seed=seed, dtype=dtype, label_column=column)
        y, classes = None, ()
    n_train, n_eval = config.sizes(len(x) if finite else None)
    train_x, eval_x = split_data(x[: n_train + n_eval], n_train)
    if y is None:
        return RunRows(train_x, eval_x)
    return RunRows(train_x, eval_x, y[:n_train], y[n_train : n_train + n_eval], classes)


def load_features(
    spec: str, n: int | None, label_column: int | str | None, *, seed: int, dtype: torch.dtype
) -> Tensor:
    """``load_dataset`` of ``spec`` (data other than a run's own rows, e.g. to evaluate on):
    a file drops the run's ``label_column``, which other data do not have."""
    column = label_column if is_finite(spec) and spec != DIGITS else None
    return load_dataset(spec, n, seed=seed, dtype=dtype, label_column=column)


def true_sampler(
    spec: str, label_column: int | str | None
) -> Callable[[int, torch.Generator], Tensor]:
    """``sampler(n, generator)`` of the data law, for a noise floor: fresh draws for a
    toy set; for a finite set, rows drawn from all of its rows (two draws may share rows,
    so the floor is then slightly optimistic)."""
    if spec in TOY_NAMES:
        return lambda n, g: sample_toy(spec, n, generator=g)
    rows = load_features(spec, None, label_column, seed=0, dtype=torch.get_default_dtype())
    return lambda n, g: rows[torch.randperm(len(rows), generator=g)[:n]]


def to_model_space(standardizer: Standardizer | None, x: Tensor) -> tuple[Tensor, Tensor]:
    """Rows ``x`` (data space) in model space, and log|det dz/dx| per row (0 without a
    standardisation), so that log p_x(x) = log p_z(z) + log|det dz/dx|.

    Example:
        >>> std = Standardizer(mean=(1.0, 0.0), std=(2.0, 4.0))
        >>> z, log_det = to_model_space(std, torch.tensor([[3.0, 2.0]]))
        >>> z, log_det  # -log 2 - log 4 = -log 8
        (tensor([[1.0000, 0.5000]]), tensor([-2.0794]))
    """
    if standardizer is None:
        return x, torch.zeros(len(x), dtype=x.dtype, device=x.device)
    log_det = standardizer.log_abs_det_jacobian()
    return standardizer.forward(x), torch.full((len(x),), log_det, dtype=x.dtype, device=x.device)


def to_data_space(standardizer: Standardizer | None, z: Tensor) -> Tensor:
    """Model-space points ``z`` (e.g. samples) back in data space."""
    return z if standardizer is None else standardizer.inverse(z)
