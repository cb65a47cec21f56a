"""One entry point for image data: a built-in set's name, a folder, an IDX file or a
NumPy file, read into an :class:`~probpath.data.image_set.ImageSet`."""

from __future__ import annotations

import os
import re
from dataclasses import replace
from pathlib import Path

from probpath.data.idx import read_idx_images
from probpath.data.image_arrays import Layout, read_image_array
from probpath.data.image_builtin import IMAGE_SETS, load_builtin_images
from probpath.data.image_folder import read_image_folder
from probpath.data.image_set import ImageSet

__all__ = ["load_images"]

_NPZ_KEY = re.compile(r"(.+\.npz):(\w+)")


def _only(spec: str, what: str, **options: object) -> None:
    """Refuse the options (given as not ``None``) that do not apply to ``what``."""
    given = [name for name, value in options.items() if value is not None]
    if given:
        raise ValueError(f"{spec}: {', '.join(given)} does not apply to {what}")


def load_images(
    spec: str | os.PathLike[str],
    *,
    levels: int | None = None,
    layout: Layout | None = None,
    channels: int | None = None,
) -> ImageSet:
    """Images named by ``spec``, every one, in a fixed order (split them with
    :func:`~probpath.data.image_set.split_images`).

    ``spec`` is, in this order of precedence:

    - a built-in set's name (``IMAGE_SETS``: ``digits``, ``mnist5k``);
    - a folder: :func:`~probpath.data.image_folder.read_image_folder` (``channels``
      converts every image to 1 or 3 channels);
    - a ``.npy`` or ``.npz`` file, or ``file.npz:KEY`` for the array ``KEY`` of a
      ``.npz``: :func:`~probpath.data.image_arrays.read_image_array` (``layout``:
      ``"nhwc"`` or ``"nchw"`` for shapes that fit both);
    - any other file is read as MNIST-format IDX images, with the labels file next to
      it: :func:`~probpath.data.idx.read_idx_images`.

    ``levels`` is the number of grey levels K, by default the set's own (17 for
    ``digits``) and 256 for files; every pixel must be below it (e.g. ``levels=2`` for
    binary images stored as 0/1).

    >>> d = load_images("digits")
    >>> d.shape, d.levels, d.classes[:3]
    ((1, 8, 8), 17, ('0', '1', '2'))
    """
    name = os.fspath(spec)
    if name in IMAGE_SETS:
        _only(name, "a built-in set", layout=layout, channels=channels)
        data = load_builtin_images(name)
    else:
        path, key = Path(name), None
        match = _NPZ_KEY.fullmatch(name)
        if match and not path.exists():
            path, key = Path(match[1]), match[2]
        if path.is_dir():
            _only(name, "a folder", layout=layout)
            data = read_image_folder(path, channels=channels)
        elif path.suffix in (".npy", ".npz"):
            _only(name, "arrays", channels=channels)
            data = read_image_array(path, key=key, layout=layout)
        elif path.is_file():
            _only(name, "IDX files", layout=layout, channels=channels)
            data = read_idx_images(path)
        else:
            raise ValueError(
                f"{name}: neither a built-in image set ({', '.join(IMAGE_SETS)}) nor an"
                " existing folder of images, IDX file, or .npy/.npz file"
            )
    return data if levels is None else replace(data, levels=levels)
