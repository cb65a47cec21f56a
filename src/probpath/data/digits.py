"""scikit-learn's bundled handwritten digits: 1797 images of 8 x 8 pixels, labels 0-9.

The images ship with scikit-learn (``sklearn.datasets.load_digits``, no download). Each
pixel is an integer grey level 0..16; :func:`load_digits` maps it affinely to [-1, 1]
by ``x = pixel / 8 - 1`` (the usual image range of diffusion models, Ho et al. 2020),
row-major, so an image is ``x.reshape(8, 8)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["DIGITS", "DIGITS_SHAPE", "load_digits"]

DIGITS = "digits"
"""The data spec that names this set (``probpath train --data digits``)."""
DIGITS_SHAPE = (8, 8)


def load_digits(dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    """All 1797 digits in sklearn's order: pixels (1797, 64) in [-1, 1] and labels 0..9.

    >>> x, y = load_digits()
    >>> tuple(x.shape), float(x.min()), float(x.max()), sorted(set(y.tolist())) == list(range(10))
    ((1797, 64), -1.0, 1.0, True)
    """
    try:
        from sklearn.datasets import load_digits as sk_load_digits
    except ImportError:
        raise ImportError(
            "the digits data set ships with scikit-learn: pip install 'probpath[digits]'"
        ) from None
    bunch = sk_load_digits()
    x = torch.as_tensor(bunch.data, dtype=torch.float64) / 8.0 - 1.0
    return x.to(dtype), torch.as_tensor(bunch.target, dtype=torch.long)
