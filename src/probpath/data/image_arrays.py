"""Images in NumPy files: ``.npy`` (one array) and ``.npz`` (images and optional labels).

Images are integers 0..255 (any integer or bool dtype; stored as uint8) in one of
three layouts, told apart by shape:

- (N, H, W): grey images, C = 1;
- (N, H, W, C) when the last axis is 1, 3 or 4 (channels last: NumPy, Pillow, Keras);
- (N, C, H, W) when axis 1 is 1, 3 or 4 (channels first: PyTorch).

A 4-D shape that fits both or neither rule is an error unless ``layout`` ("nhwc" or
"nchw") says which. Four channels are RGBA: the alpha channel is dropped when every
pixel is opaque (255), and a transparent pixel is an error (composite the images onto
a background first). Arrays are loaded without pickles.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import torch

from probpath.data.image_set import ImageSet, encode_labels

__all__ = ["IMAGE_KEYS", "LABEL_KEYS", "Layout", "drop_alpha", "read_image_array"]

Layout = Literal["nhwc", "nchw"]
IMAGE_KEYS = ("images", "x", "arr_0")
"""Names of the images array in a ``.npz`` (``np.savez(path, x, y)`` gives ``arr_0``)."""
LABEL_KEYS = ("labels", "y", "arr_1")
"""Names of the labels array in a ``.npz``."""
_CHANNELS = (1, 3, 4)
T = TypeVar("T")
_PAIRS = {"x": "y", "X": "Y", "images": "labels", "image": "label"}


def _layout(path: Path, shape: tuple[int, ...], layout: Layout | None) -> Layout | None:
    """The layout of a 4-D image array (``None`` for a 3-D one)."""
    if len(shape) == 3:
        if layout is not None:
            raise ValueError(f"{path}: layout={layout!r} given for (N, H, W) grey images")
        return None
    if len(shape) != 4:
        hint = " (flattened images: reshape them to (N, H, W))" if len(shape) == 2 else ""
        raise ValueError(
            f"{path}: images must be (N, H, W), (N, H, W, C) or (N, C, H, W), got shape"
            f" {shape}{hint}"
        )
    if layout is not None:
        if layout not in ("nhwc", "nchw"):
            raise ValueError(f"{path}: layout must be 'nhwc' or 'nchw', got {layout!r}")
        return layout
    last, first = shape[3] in _CHANNELS, shape[1] in _CHANNELS
    if last != first:
        return "nhwc" if last else "nchw"
    why = "could be either" if last else "has no axis of 1, 3 or 4 channels"
    raise ValueError(
        f"{path}: image shape {shape} {why} (N, H, W, C) or (N, C, H, W); give"
        " layout='nhwc' or 'nchw'"
    )


def drop_alpha(source: str, images: np.ndarray) -> np.ndarray:
    """RGBA or grey+alpha images (..., C, H, W) without the alpha channel, which must be
    opaque (255) everywhere."""
    alpha = images[..., -1, :, :]
    if (alpha != 255).any():
        raise ValueError(
            f"{source}: transparent pixels (alpha below 255); composite the images"
            " onto a background, or drop the alpha channel yourself"
        )
    return images[..., :-1, :, :]


def _as_pixels(source: str, arr: np.ndarray, what: str = "images") -> np.ndarray:
    """``arr`` as uint8, if it holds integers 0..255."""
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise ValueError(
            f"{source}: {what} must be integers 0..255 (uint8), got {arr.dtype}; scale"
            " float images in [0, 1] with np.round(255 * x).astype(np.uint8)"
        )
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > 255):
        raise ValueError(
            f"{source}: {what} must lie in 0..255, found {int(arr.min())}..{int(arr.max())}"
        )
    return arr.astype(np.uint8, copy=False)


def _pick(path: Path, keys: list[str], names: tuple[str, ...], what: str) -> str | None:
    found = [k for k in names if k in keys]
    if len(found) > 1:
        raise ValueError(f"{path}: several {what} arrays {found}; name one with key=")
    return found[0] if found else None


def _npz(path: Path, key: str | None) -> tuple[np.ndarray, np.ndarray | None]:
    """The images and labels (or ``None``) arrays of a ``.npz``."""
    with _unpack(path, lambda: np.load(path, allow_pickle=False)) as z:
        keys = sorted(z.files)
        image_key = key if key is not None else _pick(path, keys, IMAGE_KEYS, "image")
        if image_key is None or image_key not in keys:
            named = f"no array {key!r}" if key is not None else "no images array"
            raise ValueError(
                f"{path}: {named}; it holds {', '.join(keys) or 'nothing'}. Images go under"
                f" {', '.join(IMAGE_KEYS)} (or name them with key=; 'x_train' takes labels"
                " from 'y_train')"
            )
        if key is None:
            label_key = _pick(path, keys, LABEL_KEYS, "label")
        else:
            prefix = next((p for p in _PAIRS if key.startswith(p)), None)
            paired = None if prefix is None else _PAIRS[prefix] + key[len(prefix) :]
            label_key = paired if paired in keys else None
        x = _unpack(path, lambda: z[image_key])
        return x, None if label_key is None else _unpack(path, lambda: z[label_key])


def _unpack(path: Path, read: Callable[[], T]) -> T:
    """``read()``, its errors on a corrupt, truncated or pickled file named by ``path``."""
    try:
        return read()
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as e:
        raise ValueError(f"{path}: unreadable {path.suffix} file ({e})") from None


def read_image_array(
    path: str | os.PathLike[str], *, key: str | None = None, layout: Layout | None = None
) -> ImageSet:
    """Images from a ``.npy`` or ``.npz`` file as a 256-level :class:`ImageSet`.

    A ``.npz`` holds the images under one of ``IMAGE_KEYS`` and, optionally, labels (1-D
    integers or strings, one per image) under one of ``LABEL_KEYS``; ``key`` names the
    images array instead, and its labels are the array named like it with ``x`` → ``y``
    or ``images`` → ``labels`` (Keras' ``mnist.npz``: ``key="x_train"`` takes
    ``y_train``), if there is one. Labels become 0..K-1 by their sorted distinct values.
    The layout rule is in the module docstring.

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "rgb.npz"
    >>> np.savez(p, x=np.zeros((5, 8, 8, 3), np.uint8), y=np.arange(5) % 2)
    >>> d = read_image_array(p)
    >>> tuple(d.images.shape), d.classes
    ((5, 3, 8, 8), ('0', '1'))
    """
    path = Path(path)
    if path.suffix not in (".npy", ".npz"):
        raise ValueError(f"{path}: not a .npy or .npz file")
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    if key is not None and path.suffix == ".npy":
        raise ValueError(f"{path}: key={key!r} applies to .npz files; a .npy holds one array")
    if path.suffix == ".npy":
        x, y = _unpack(path, lambda: np.load(path, allow_pickle=False)), None
    else:
        x, y = _npz(path, key)
    x = _as_pixels(str(path), x)
    found = _layout(path, x.shape, layout)
    x = x[:, None] if found is None else x.transpose(0, 3, 1, 2) if found == "nhwc" else x
    if x.shape[1] == 4:
        x = drop_alpha(str(path), x)
    images = torch.from_numpy(np.ascontiguousarray(x))
    if y is None:
        return ImageSet(images, None, (), 256, str(path))
    if y.shape != (len(x),):
        raise ValueError(f"{path}: labels of shape {y.shape} for {len(x)} images; need ({len(x)},)")
    labels, classes = encode_labels(str(path), y)
    return ImageSet(images, labels, classes, 256, str(path))
