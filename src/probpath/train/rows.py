"""A run's data: the rows it trains and is evaluated on, and the map to the model's space.

A run (:class:`~probpath.train.config.RunConfig`) trains on ``n_train`` rows of its data and
holds out ``n_eval`` more (sizes by :meth:`RunConfig.sizes`): a toy set draws
``n_train + n_eval`` fresh samples with the run's seed, a data file takes them from its
seeded shuffle, and an image set from its fixed split (:func:`probpath.data.split_images`:
seeded by 0 and stratified by class, the same test images for every run). Discrete data
(images, integer files; :func:`probpath.data.data_kind`) stay integer levels 0..K-1 in
memory. The model lives in *model space*: for continuous rows z = (x - mean) / std per
dimension when the run standardises (the default), x itself otherwise, and densities
move between the spaces by the change of variables
log p_x(x) = log p_z(z) + log|det dz/dx| (:func:`to_model_space`); discrete data are
dequantized (:mod:`.space`).
"""

from __future__ import annotations

import math
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
    load_images,
    load_labelled,
    make_generator,
    sample_toy,
    split_images,
)
from ..data.kinds import data_kind, integer_dtype
from .config import RunConfig

__all__ = [
    "RunRows",
    "as_levels",
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
    (label k is ``classes[k]``) when loaded with labels; ``levels``, K of discrete data
    (then the rows are integers 0..K-1), ``None`` for continuous rows."""

    train: Tensor
    eval: Tensor
    train_y: Tensor | None = None
    eval_y: Tensor | None = None
    classes: tuple[str, ...] = ()
    levels: int | None = None

    @property
    def shape(self) -> tuple[int, ...]:
        """One example's shape: ``(D,)``, or ``(C, H, W)`` for images."""
        return tuple(self.train.shape[1:])

    @property
    def kind(self) -> str:
        """``"continuous"``, ``"discrete"`` (integer vectors) or ``"images"``."""
        if self.levels is None:
            return "continuous"
        return "images" if len(self.shape) == 3 else "discrete"


def split_data(data: Tensor, n_train: int) -> tuple[Tensor, Tensor]:
    """First ``n_train`` rows for training, the rest held out."""
    if not 0 < n_train < len(data):
        raise ValueError(f"cannot hold out data: {len(data)} rows, {n_train} for training")
    return data[:n_train], data[n_train:]


def load_rows(config: RunConfig, *, labels: bool = False) -> RunRows:
    """The rows of ``config`` in data space: floats of the default dtype, or the integer
    levels of discrete data (:func:`probpath.data.data_kind`).

    Example:
        >>> rows = load_rows(RunConfig(data="8gaussians", n_train=6, n_eval=2), labels=True)
        >>> rows.train.shape, rows.eval.shape, rows.eval_y.shape, len(rows.classes)
        (torch.Size([6, 2]), torch.Size([2, 2]), torch.Size([2]), 8)
        >>> digits = load_rows(RunConfig(data="digits"))
        >>> digits.kind, digits.levels, tuple(digits.train.shape), digits.train.dtype
        ('images', 17, (1438, 1, 8, 8), torch.uint8)
    """
    found = data_kind(config.data, levels=config.levels)
    if found.kind == "images":
        return _image_rows(config, labels)
    finite = is_finite(config.data)
    n = None if finite else sum(config.sizes(None))
    seed, column = config.train.seed, config.label_column
    discrete = found.kind == "discrete"
    dtype = torch.float64 if discrete else torch.get_default_dtype()
    if labels:
        d = load_labelled(config.data, n, seed=seed, dtype=dtype, label_column=column)
        x, y, classes = d.x, d.y, d.classes
    else:
        x = load_dataset(config.data, n, seed=seed, dtype=dtype, label_column=column)
        y, classes = None, ()
    levels = None
    if discrete:
        x, levels = as_levels(x, config.data, config.levels or found.dtype_levels)
    n_train, n_eval = config.sizes(len(x) if finite else None)
    train_x, eval_x = split_data(x[: n_train + n_eval], n_train)
    if y is None:
        return RunRows(train_x, eval_x, levels=levels)
    ys = y[:n_train], y[n_train : n_train + n_eval]
    return RunRows(train_x, eval_x, *ys, classes, levels=levels)


def _image_rows(config: RunConfig, labels: bool) -> RunRows:
    """The first ``n_train`` and ``n_eval`` images of the fixed split of ``config.data``
    (by default all of them)."""
    spec = config.data
    if config.label_column is not None:
        raise ValueError(f"label_column applies to vector files; the images of {spec} bring "
                         "their own labels")  # fmt: skip
    data = load_images(spec, levels=config.levels)
    if labels and data.labels is None:
        raise ValueError(
            f"{spec}: the images have no labels; a conditional model or a classifier needs "
            "labelled images (class subfolders, a labels array, an IDX labels file)"
        )
    train, test = split_images(data)
    n_train, n_eval = config.n_train or len(train), config.n_eval or len(test)
    if n_train > len(train) or n_eval > len(test):
        raise ValueError(
            f"{spec} splits into {len(train)} training and {len(test)} test images (a "
            f"fixed split): cannot take n_train={n_train} and n_eval={n_eval}; lower "
            "--n-train/--n-eval, or leave them unset to use every image"
        )
    if not labels:
        return RunRows(train.images[:n_train], test.images[:n_eval], levels=data.levels)
    assert train.labels is not None and test.labels is not None
    y = train.labels[:n_train], test.labels[:n_eval]
    return RunRows(train.images[:n_train], test.images[:n_eval], *y, data.classes, data.levels)


def as_levels(x: Tensor, source: str, levels: int | None) -> tuple[Tensor, int]:
    """Integer-valued rows ``x`` as levels 0..K-1 of the smallest integer dtype, and K:
    ``levels``, or the largest value + 1 (at least 2) when ``None``.

    >>> as_levels(torch.tensor([[0.0, 3.0], [1.0, 2.0]]), "demo", None)
    (tensor([[0, 3],
            [1, 2]], dtype=torch.uint8), 4)
    """
    bad = (x != x.round()) | (x < 0) | (x >= (levels or math.inf))
    if bool(bad.any()):
        row = int(bad.any(1).nonzero()[0])
        value = float(x[row][bad[row]][0])
        top = f"0..{levels - 1}" if levels else "0, 1, 2, ..."
        raise ValueError(
            f"{source}: discrete data hold levels {top} (non-negative integers below "
            f"levels), found {value:g} in row {row}; give the right --levels, or save the "
            "data as floats to model them as continuous"
        )
    k = max(int(x.max()) + 1, 2) if levels is None else levels
    return x.to(integer_dtype(k)), k


def load_features(
    spec: str,
    n: int | None,
    label_column: int | str | None,
    *,
    seed: int,
    dtype: torch.dtype,
    levels: int | None = None,
) -> Tensor:
    """``n`` rows (``None``: all) of ``spec`` in a seeded order: data other than a run's
    own rows, e.g. to evaluate on. A file drops the run's ``label_column``, which other
    data do not have; discrete data (:func:`probpath.data.data_kind`) come as integer
    levels, checked against the run's ``levels`` K."""
    found = data_kind(spec, levels=levels)
    if found.kind == "images":
        images = load_images(spec, levels=levels).images
        if n is not None and n > len(images):
            raise ValueError(f"{spec}: asked for n={n} images, it holds {len(images)}")
        return images[torch.randperm(len(images), generator=make_generator(seed))[:n]]
    column = label_column if is_finite(spec) and spec != DIGITS else None
    if found.kind == "continuous":
        return load_dataset(spec, n, seed=seed, dtype=dtype, label_column=column)
    x = load_dataset(spec, n, seed=seed, dtype=torch.float64, label_column=column)
    return as_levels(x, spec, levels or found.dtype_levels)[0]


def true_sampler(
    spec: str, label_column: int | str | None, levels: int | None = None
) -> Callable[[int, torch.Generator], Tensor]:
    """``sampler(n, generator)`` of the data law, for a noise floor: fresh draws for a
    toy set; for a finite set, rows drawn from all of its rows (two draws may share rows,
    so the floor is then slightly optimistic)."""
    if spec in TOY_NAMES:
        return lambda n, g: sample_toy(spec, n, generator=g)
    dtype = torch.get_default_dtype()
    rows = load_features(spec, None, label_column, seed=0, dtype=dtype, levels=levels)
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
