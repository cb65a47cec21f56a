"""IDX files, the format MNIST and Fashion-MNIST ship in (LeCun et al., "THE MNIST
DATABASE", http://yann.lecun.com/exdb/mnist/), plain or gzipped.

An IDX file is a 4-byte magic number ``0x00 0x00 T D`` (T the element type, D the
number of dimensions), D big-endian uint32 sizes, then the elements, big-endian, in C
order. MNIST's images are ``0x00000803`` (unsigned bytes, N x H x W) and its labels
``0x00000801`` (unsigned bytes, N). Gzip is recognised by its magic bytes ``1f 8b``,
whatever the file is called.
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np
import torch

from probpath.data.image_set import ImageSet, encode_labels

__all__ = ["read_idx", "read_idx_images", "write_idx"]

_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
_CODES = {np.dtype(t).newbyteorder("="): code for code, t in _TYPES.items()}
_IMAGES, _LABELS = 0x00000803, 0x00000801
_GZIP = b"\x1f\x8b"


def _raw(path: Path) -> bytes:
    """The file's bytes, gunzipped if it starts with the gzip magic."""
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    data = path.read_bytes()
    if not data.startswith(_GZIP):
        return data
    try:
        return gzip.decompress(data)
    except EOFError:
        raise ValueError(f"{path}: the gzip stream is truncated (the file is cut short)") from None
    except (OSError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt gzip data ({e})") from None


def _magic(data: bytes, path: Path) -> int:
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _TYPES:
        shown = data[:4].hex() or "empty"
        raise ValueError(
            f"{path}: not an IDX file (first bytes {shown}; IDX starts 00 00, a type code"
            f" among {', '.join(f'{t:02x}' for t in _TYPES)}, and the number of dimensions)"
        )
    return int.from_bytes(data[:4], "big")


def _parse(data: bytes, path: Path) -> np.ndarray:
    """The array in the IDX bytes ``data`` (read from ``path``), native byte order."""
    magic = _magic(data, path)
    ndim, dtype = magic & 0xFF, np.dtype(_TYPES[(magic >> 8) & 0xFF])
    head = 4 + 4 * ndim
    if len(data) < head:
        raise ValueError(
            f"{path}: truncated IDX header: {ndim} dimensions need {head} bytes, the file"
            f" has {len(data)}"
        )
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    actual = len(data) - head
    if actual != expected:
        what = "truncated" if actual < expected else "longer than its header says"
        raise ValueError(
            f"{path}: IDX data {what}: shape {shape} of {dtype.name} needs {expected} bytes"
            f" after the header, the file has {actual}"
        )
    arr = np.frombuffer(data, dtype=dtype, offset=head).reshape(shape)
    return arr.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """The array in an IDX file (gzipped or not), in native byte order.

    Errors (``ValueError`` naming the file): a bad magic number, a header cut short, and
    a body whose byte count differs from the header's sizes (expected vs actual bytes).

    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "a-idx2-ubyte.gz"
    >>> write_idx(p, np.arange(6, dtype=np.uint8).reshape(2, 3))
    >>> read_idx(p)
    array([[0, 1, 2],
           [3, 4, 5]], dtype=uint8)
    """
    path = Path(path)
    return _parse(_raw(path), path)


def write_idx(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Write ``array`` as an IDX file; gzipped when ``path`` ends in ``.gz``.

    Element types: uint8, int8, int16, int32, float32, float64 (the IDX type codes
    08, 09, 0B, 0C, 0D, 0E); see :func:`read_idx` for an example.
    """
    array = np.asarray(array)
    code = _CODES.get(array.dtype.newbyteorder("="))
    if code is None or not 1 <= array.ndim <= 255:
        types = ", ".join(np.dtype(t).name for t in _TYPES.values())
        raise ValueError(
            f"{path}: IDX holds 1 to 255 dimensions of {types}; got {array.ndim}"
            f" dimensions of {array.dtype}"
        )
    head = bytes([0, 0, code, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    data = head + np.ascontiguousarray(array, dtype=np.dtype(_TYPES[code])).tobytes()
    Path(path).write_bytes(gzip.compress(data) if str(path).endswith(".gz") else data)


def _labels_file(images: Path) -> Path | None:
    """MNIST's naming: ``train-images-idx3-ubyte[.gz]`` has its labels in
    ``train-labels-idx1-ubyte[.gz]`` (also ``train-images.idx3-ubyte``), gzipped or not."""
    name = images.name.removesuffix(".gz")
    if "images" not in name or "idx3" not in name:
        return None
    stem = name.replace("images", "labels").replace("idx3", "idx1")
    for candidate in (stem, stem + ".gz"):
        if (images.parent / candidate).is_file():
            return images.parent / candidate
    return None


def read_idx_images(
    path: str | os.PathLike[str], labels: str | os.PathLike[str] | None = None
) -> ImageSet:
    """MNIST-format images (IDX ``0x00000803``: N x H x W unsigned bytes) as a 256-level
    :class:`ImageSet` (N, 1, H, W), with the labels (IDX ``0x00000801``) of ``labels``
    or, by default, of the matching file next to it (``train-images-idx3-ubyte`` ↔
    ``train-labels-idx1-ubyte``, ``.gz`` or not); no such file: unlabelled.

    Labels become 0..K-1 by their sorted distinct values (MNIST's 0-9 stay as they are).
    """
    path = Path(path)
    images = _read_kind(path, _IMAGES, "images", "N x H x W")
    lpath = _labels_file(path) if labels is None else Path(labels)
    if lpath is None:
        return ImageSet(torch.from_numpy(images).unsqueeze(1), None, (), 256, str(path))
    y = _read_kind(lpath, _LABELS, "labels", "N")
    if len(y) != len(images):
        raise ValueError(f"{lpath}: {len(y)} labels for the {len(images)} images of {path}")
    y_t, classes = encode_labels(str(lpath), y)
    return ImageSet(torch.from_numpy(images).unsqueeze(1), y_t, classes, 256, str(path))


def _read_kind(path: Path, expected: int, what: str, shape: str) -> np.ndarray:
    """The array of an IDX file that must have the magic number ``expected``."""
    data = _raw(path)
    magic = _magic(data, path)
    if magic != expected:
        hint = " (a labels file: give the images file next to it)" if magic == _LABELS else ""
        raise ValueError(
            f"{path}: IDX magic 0x{magic:08x}{hint}; MNIST-format {what} are"
            f" 0x{expected:08x} (unsigned bytes, {shape})"
        )
    return _parse(data, path)
