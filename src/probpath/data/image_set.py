"""Images as integer tensors with their number of grey levels, the map to model space,
and the fixed held-out split.

An :class:`ImageSet` holds ``images``, a uint8 tensor (N, C, H, W) of grey levels
0..K-1, with K = ``levels`` (17 for sklearn's digits, 256 for 8-bit files). Models see
the images through one affine map (the convention of Ho et al. 2020, DDPM, and of
:func:`probpath.data.load_digits`)::

    x = 2 k / (K - 1) - 1   in [-1, 1],   one grey level spans 2 / (K - 1)

:func:`to_centered` is that map, :func:`to_pixels` its inverse on the grid (rounding to
the nearest level), :func:`level_width` the width 2 / (K - 1) a dequantiser spreads each
level over.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from probpath.data.toy import make_generator

__all__ = [
    "TEST_FRACTION",
    "ImageSet",
    "encode_labels",
    "level_width",
    "split_images",
    "to_centered",
    "to_pixels",
]

TEST_FRACTION = 0.2
"""Fraction of an image set held out by :func:`split_images` (the CLI's ``HELD_OUT``)."""


@dataclass(frozen=True, eq=False)
class ImageSet:
    """Images with their labels, class names, number of grey levels and source.

    Attributes:
        images: uint8 tensor (N, C, H, W) of grey levels 0..levels-1.
        labels: long tensor (N,) of classes 0..len(classes)-1, or ``None`` (unlabelled).
        classes: the class names (label k is ``classes[k]``); ``()`` when unlabelled.
        levels: K, the number of grey levels (2..256); every pixel is below it.
        source: where the images came from (a built-in set's name or a path), named in
            error messages.

    The constructor checks all of this; ``dataclasses.replace(d, levels=17)`` re-checks.

    >>> d = ImageSet(torch.zeros(2, 1, 3, 3, dtype=torch.uint8), torch.tensor([0, 1]),
    ...              ("cat", "dog"), levels=256, source="demo")
    >>> len(d), d.shape, d.n_classes
    (2, (1, 3, 3), 2)
    """

    images: Tensor
    labels: Tensor | None
    classes: tuple[str, ...]
    levels: int
    source: str

    def __post_init__(self) -> None:
        x, src = self.images, self.source
        if not isinstance(x, Tensor) or x.dtype != torch.uint8 or x.ndim != 4:
            what = f"{x.dtype} tensor of shape {tuple(x.shape)}" if isinstance(x, Tensor) else x
            raise ValueError(f"{src}: images must be a uint8 tensor (N, C, H, W), got {what}")
        if min(x.shape) == 0:
            raise ValueError(f"{src}: no images (shape {tuple(x.shape)})")
        k = self.levels
        if not isinstance(k, int) or isinstance(k, bool) or not 2 <= k <= 256:
            raise ValueError(f"{src}: levels must be an integer in 2..256, got {k!r}")
        top = int(x.max())
        if top >= k:
            raise ValueError(
                f"{src}: a pixel has grey level {top}, not below levels={k}; give the"
                f" data's true number of levels (at least {top + 1})"
            )
        self._check_labels()

    def _check_labels(self) -> None:
        y, src, n = self.labels, self.source, len(self.images)
        if y is None:
            if self.classes:
                raise ValueError(f"{src}: class names {self.classes} given without labels")
            return
        if not isinstance(y, Tensor) or y.dtype != torch.long or y.shape != (n,):
            what = f"{y.dtype} {tuple(y.shape)}" if isinstance(y, Tensor) else type(y).__name__
            raise ValueError(f"{src}: labels must be a long tensor of shape ({n},), got {what}")
        if not self.classes:
            raise ValueError(f"{src}: labels given without class names")
        if int(y.min()) < 0 or int(y.max()) >= len(self.classes):
            raise ValueError(
                f"{src}: labels must lie in 0..{len(self.classes) - 1} (one per class name),"
                f" found {int(y.min())}..{int(y.max())}"
            )

    def __len__(self) -> int:
        return len(self.images)

    @property
    def shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one image."""
        c, h, w = self.images.shape[1:]
        return c, h, w

    @property
    def n_classes(self) -> int:
        """K, the number of classes (0 when unlabelled)."""
        return len(self.classes)

    def subset(self, rows: Tensor) -> ImageSet:
        """The images (and labels) at ``rows``, in that order."""
        y = None if self.labels is None else self.labels[rows]
        return ImageSet(self.images[rows], y, self.classes, self.levels, self.source)

    def centered(self, dtype: torch.dtype = torch.float32) -> Tensor:
        """The images in model space, :func:`to_centered` ``(images, levels)``."""
        return to_centered(self.images, self.levels, dtype)


def to_centered(images: Tensor, levels: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Grey levels k in 0..K-1 to ``x = 2 k / (K - 1) - 1`` in [-1, 1] (Ho et al. 2020).

    >>> to_centered(torch.tensor([0, 8, 16], dtype=torch.uint8), 17)
    tensor([-1.,  0.,  1.])
    """
    return images.to(dtype) * (2.0 / (levels - 1)) - 1.0


def to_pixels(x: Tensor, levels: int) -> Tensor:
    """The nearest grey level (uint8) of each value of ``x``, clamped to 0..K-1: the
    inverse of :func:`to_centered` on its grid, and how samples become images.

    >>> to_pixels(torch.tensor([-1.2, -0.01, 0.97, 3.0]), 256)
    tensor([  0, 126, 251, 255], dtype=torch.uint8)
    """
    k = (x + 1.0) * ((levels - 1) / 2.0)
    return k.round().clamp(0, levels - 1).to(torch.uint8)


def level_width(levels: int) -> float:
    """The width 2 / (K - 1) of one grey level in model space (:func:`to_centered`).

    >>> level_width(256) == 2 / 255
    True
    """
    return 2.0 / (levels - 1)


def encode_labels(source: str, values: np.ndarray) -> tuple[Tensor, tuple[str, ...]]:
    """1-D integer or string labels as 0..K-1 and the K class names: the sorted distinct
    values (integers in numeric order), as text, so labels need not start at 0.

    >>> encode_labels("demo", np.array([7, 3, 7]))
    (tensor([1, 0, 1]), ('3', '7'))
    """
    if values.ndim != 1:
        raise ValueError(f"{source}: labels must be 1-D, got shape {values.shape}")
    if not (np.issubdtype(values.dtype, np.integer) or values.dtype.kind == "U"):
        raise ValueError(f"{source}: labels must be integers or strings, got {values.dtype}")
    classes, y = np.unique(values, return_inverse=True)
    return torch.as_tensor(y.reshape(-1), dtype=torch.long), tuple(str(c) for c in classes)


def _test_counts(counts: Tensor, fraction: float) -> Tensor:
    """Test rows per class: ``round(fraction * N)`` in all, shared out in proportion to
    the class sizes by largest remainders (ties to the lower class index)."""
    quota = counts.double() * fraction
    base = quota.floor().long()
    extra = round(fraction * int(counts.sum())) - int(base.sum())
    order = torch.argsort(base.double() - quota, stable=True)  # largest remainder first
    base[order[:extra]] += 1
    return base


def split_images(
    data: ImageSet, fraction: float = TEST_FRACTION, *, seed: int = 0
) -> tuple[ImageSet, ImageSet]:
    """The fixed train/test split: ``(train, test)`` with ``round(fraction * N)`` test
    images, stratified by class when labelled.

    A seeded permutation of the rows (``seed`` alone decides it, not a training seed, so
    every run of a data set is tested on the same images); each class gives its first
    rows in that order to the test set, as many as its share of the test size (largest
    remainders). Both parts keep the permuted order. ``split_images(d)`` of ``digits``
    gives 1438 + 359 images, the sizes :meth:`probpath.train.RunConfig.sizes` uses.

    >>> d = ImageSet(torch.zeros(10, 1, 2, 2, dtype=torch.uint8), torch.arange(10) % 2,
    ...              ("even", "odd"), 256, "demo")
    >>> train, test = split_images(d)
    >>> len(train), len(test), test.labels.bincount().tolist()
    (8, 2, [1, 1])
    """
    n = len(data)
    if not 0.0 < fraction < 1.0 or not 1 <= round(fraction * n) < n:
        raise ValueError(
            f"{data.source}: cannot hold out a fraction {fraction} of {n} images; give a"
            " fraction in (0, 1) that leaves at least one image on each side"
        )
    perm = torch.randperm(n, generator=make_generator(seed))
    if data.labels is None:
        n_test = round(fraction * n)
        return data.subset(perm[n_test:]), data.subset(perm[:n_test])
    y = data.labels[perm]
    rank = torch.empty(n, dtype=torch.long)  # position of each row among its class
    for c in range(data.n_classes):
        mine = (y == c).nonzero().flatten()
        rank[mine] = torch.arange(len(mine))
    is_test = rank < _test_counts(torch.bincount(y, minlength=data.n_classes), fraction)[y]
    return data.subset(perm[~is_test]), data.subset(perm[is_test])
