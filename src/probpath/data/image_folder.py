"""A folder of image files (PNG, JPEG, anything Pillow reads), as torchvision's
``ImageFolder`` lays it out: ``root/<class>/**/<image>``.

- Subfolders are the classes: their sorted names become labels 0..K-1, and each holds
  its images at any depth. A folder with image files and no subfolders is unlabelled.
- Files and folders whose names start with ``.`` are skipped (``.DS_Store``, ``.git``);
  every other file must be an image.
- Pillow modes: ``L`` and ``1`` give one channel, ``RGB`` (and ``CMYK``, ``YCbCr``,
  ``P`` palettes) three. Alpha (``LA``, ``RGBA``, ``PA``, palettes with transparency) is
  dropped when every pixel is opaque and is an error otherwise. 16- and 32-bit images
  (``I;16``, ``I``, ``F``) are refused: convert them to 8 bits.
- All images must share one size and channel count; ``channels=1`` or ``3`` converts
  every image to grey (``L``, ITU-R 601 luma) or RGB first (alpha is still checked).
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from probpath.data.image_arrays import drop_alpha
from probpath.data.image_set import ImageSet

__all__ = ["read_image_folder"]

_REFUSED = ("I", "F")  # 32-bit integer and float modes; I;16 and friends start with "I"


def _pil() -> Any:
    try:
        from PIL import Image
    except ImportError:
        raise ImportError(
            "reading image files needs Pillow: pip install 'probpath[images]'"
        ) from None
    return Image


def _files(folder: Path) -> list[Path]:
    """Every file under ``folder``, sorted by path; hidden files and folders skipped."""
    out = []
    for root, dirs, names in os.walk(folder):
        dirs[:] = [d for d in dirs if not d.startswith(".")]
        out += [Path(root) / n for n in names if not n.startswith(".")]
    return sorted(out)


def _target(mode: str, info: dict[str, Any], channels: int | None) -> str:
    """The Pillow mode an image of ``mode`` is read in: grey or RGB, with alpha if it
    has any (an alpha band, or a transparent colour or palette entry)."""
    grey = channels == 1 if channels is not None else mode in ("1", "L", "LA")
    alpha = mode in ("LA", "RGBA", "PA") or "transparency" in info
    return ("L" if grey else "RGB") + ("A" if alpha else "")


def _read(image_module: Any, file: Path, channels: int | None) -> np.ndarray:
    """One image as uint8 (C, H, W), opaque alpha dropped."""
    try:
        with image_module.open(file) as im:
            if im.mode.startswith(_REFUSED):
                raise ValueError(
                    f"{file}: {im.mode} image (more than 8 bits per channel); convert it to"
                    " 8-bit grey or RGB"
                )
            arr = np.asarray(im.convert(_target(im.mode, im.info, channels)))
    except image_module.UnidentifiedImageError:
        raise ValueError(f"{file}: not an image file Pillow can read") from None
    except (OSError, SyntaxError) as e:
        raise ValueError(f"{file}: unreadable image ({e})") from None
    arr = arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1)
    return drop_alpha(str(file), arr) if arr.shape[0] in (2, 4) else arr


def _classes(folder: Path) -> tuple[list[Path], tuple[str, ...]]:
    """The class folders (sorted) and their names; checks no image sits beside them."""
    subs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if subs:
        stray = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
        if stray:
            raise ValueError(
                f"{stray[0]}: a file beside the class folders of {folder}; move it into"
                " a class folder or out of the data"
            )
    return subs, tuple(p.name for p in subs)


def _stack(arrays: list[np.ndarray], files: list[Path]) -> np.ndarray:
    """The images as one (N, C, H, W) array; different shapes are an error."""
    shapes = Counter(a.shape for a in arrays)
    if len(shapes) > 1:
        common, count = shapes.most_common(1)[0]
        i = next(i for i, a in enumerate(arrays) if a.shape != common)
        fix = (
            "pass channels=1 or 3 to convert every image to grey or RGB"
            if arrays[i].shape[1:] == common[1:]
            else "resize them to one size"
        )
        raise ValueError(
            f"{files[i]}: image of {'x'.join(map(str, arrays[i].shape))} (channels x height"
            f" x width), while {count} of {len(arrays)} images are"
            f" {'x'.join(map(str, common))}; {fix}"
        )
    return np.stack(arrays)


def read_image_folder(path: str | os.PathLike[str], *, channels: int | None = None) -> ImageSet:
    """The images of a folder (layout in the module docstring) as a 256-level
    :class:`ImageSet`, in sorted order (by class, then by path).

    Errors (``ValueError`` naming the file or folder): an empty folder or class folder,
    a file that is not an image, a truncated or corrupt image, an image with
    transparency or more than 8 bits, images of different sizes or channel counts, a
    file beside the class folders.

    >>> import tempfile
    >>> from PIL import Image
    >>> root = Path(tempfile.mkdtemp())
    >>> for c in ("cat", "dog"):
    ...     (root / c).mkdir()
    ...     Image.new("RGB", (6, 4)).save(root / c / "a.png")
    >>> d = read_image_folder(root)
    >>> tuple(d.images.shape), d.classes, d.labels.tolist()
    ((2, 3, 4, 6), ('cat', 'dog'), [0, 1])
    """
    folder = Path(path)
    if not folder.is_dir():
        raise ValueError(f"{folder}: no such folder")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 (grey), 3 (RGB) or None (as stored), got {channels}")
    image_module = _pil()
    subs, classes = _classes(folder)
    groups = [_files(s) for s in subs] if subs else [_files(folder)]
    for where, group in zip(subs or [folder], groups, strict=True):
        if not group:
            raise ValueError(f"{where}: no image files in this folder")
    files = [f for group in groups for f in group]
    images = _stack([_read(image_module, f, channels) for f in files], files)
    labels = None
    if subs:
        sizes = torch.tensor([len(g) for g in groups])
        labels = torch.repeat_interleave(torch.arange(len(groups)), sizes)
    return ImageSet(torch.from_numpy(images), labels, classes, 256, str(folder))
