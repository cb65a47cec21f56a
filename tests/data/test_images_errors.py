"""Every bad-image error: a one-line ValueError that names the file and the problem."""

import re

import numpy as np
import pytest
import torch

from probpath.data import ImageSet, load_images, read_idx, read_idx_images, write_idx

Image = pytest.importorskip("PIL.Image")
GREY = np.zeros((5, 5), np.uint8)


def _fails(where, match, load=load_images, *args, **kwargs):
    """``load(*args, **kwargs)`` raises a one-line ValueError naming ``where``."""
    with pytest.raises(ValueError, match=match) as info:
        load(*args, **kwargs)
    message = str(info.value)
    assert "\n" not in message and message.startswith(str(where)), message


def _png(path, arr=GREY, **kw):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kw)
    return path


def _cut(path, keep):
    data = path.read_bytes()
    path.write_bytes(data[: keep if keep >= 0 else len(data) + keep])
    return path


# --- folders ------------------------------------------------------------------------


def test_empty_folders(tmp_path):
    _fails(tmp_path, "no image files in this folder", load_images, tmp_path)
    (tmp_path / ".hidden").write_text("skipped")  # only hidden files: still empty
    _fails(tmp_path, "no image files", load_images, tmp_path)
    _png(tmp_path / "a" / "x.png")
    (tmp_path / "b").mkdir()
    _fails(tmp_path / "b", "no image files", load_images, tmp_path)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda d: (d / "notes.txt").write_text("hello"), "not an image file Pillow can read"),
        (
            lambda d: _cut(_png(d / "x.png", np.arange(400, dtype=np.uint8).reshape(20, 20)), -40),
            "truncated",
        ),
        (lambda d: _cut(_png(d / "x.png"), 20), "unreadable image"),  # the header cut
        (
            lambda d: _cut(
                _png(d / "x.jpg", np.arange(1600, dtype=np.uint8).reshape(40, 40)), -200
            ),
            "truncated",
        ),
        (
            lambda d: _png(d / "x.png", np.full((5, 5), 300, np.uint16)),
            r"I;16 image .*convert it to 8-bit",
        ),
        (
            lambda d: _png(d / "x.png", np.dstack([GREY] * 3 + [np.full_like(GREY, 128)])),
            "transparent pixels",
        ),
        (
            lambda d: _png(d / "x.png", np.dstack([GREY] * 3), transparency=(0, 0, 0)),
            "transparent pixels",
        ),
    ],
)
def test_bad_files_in_a_folder(tmp_path, make, match):
    _png(tmp_path / "a.png")
    make(tmp_path)
    bad = next(p for p in sorted(tmp_path.iterdir()) if p.name != "a.png")
    _fails(bad, match, load_images, tmp_path)


def test_mixed_sizes_and_channels_name_the_odd_file(tmp_path):
    for i in range(3):
        _png(tmp_path / "size" / f"{i}.png")
    _png(tmp_path / "size" / "odd.png", np.zeros((6, 5), np.uint8))
    _fails(
        tmp_path / "size" / "odd.png",
        r"image of 1x6x5 .* while 3 of 4 images are 1x5x5; resize",
        load_images,
        tmp_path / "size",
    )
    for i in range(3):
        _png(tmp_path / "mode" / f"{i}.png", np.zeros((5, 5, 3), np.uint8))
    _png(tmp_path / "mode" / "0grey.png")
    _fails(
        tmp_path / "mode" / "0grey.png",
        r"1x5x5 .* 3x5x5; pass channels=1 or 3",
        load_images,
        tmp_path / "mode",
    )


def test_folder_layout_errors(tmp_path):
    _png(tmp_path / "cls" / "x.png")
    _png(tmp_path / "stray.png")
    _fails(tmp_path / "stray.png", "beside the class folders", load_images, tmp_path)
    _fails(tmp_path / "missing", "neither a built-in image set", load_images, tmp_path / "missing")
    with pytest.raises(ValueError, match="channels must be 1"):
        load_images(tmp_path / "cls", channels=2)


# --- IDX ------------------------------------------------------------------------------


def test_idx_body_and_header_errors(tmp_path):
    p = tmp_path / "x-images-idx3-ubyte"
    write_idx(p, np.zeros((4, 3, 2), np.uint8))
    _cut(p, -5)
    _fails(
        p,
        r"IDX data truncated: shape \(4, 3, 2\) of uint8 needs 24 bytes .* has 19",
        load_images,
        p,
    )
    p.write_bytes(p.read_bytes() + bytes(9))
    _fails(p, r"longer than its header says: .* needs 24 bytes .* has 28", load_images, p)
    _cut(p, 10)
    _fails(p, r"truncated IDX header: 3 dimensions need 16 bytes, the file has 10", load_images, p)
    p.write_bytes(b"\x89PNG\r\n")
    _fails(p, r"not an IDX file \(first bytes 89504e47", load_images, p)
    p.write_bytes(b"")
    _fails(p, r"not an IDX file \(first bytes empty", read_idx, p)
    _fails(tmp_path / "nope", "no such file", read_idx, tmp_path / "nope")


def test_idx_gzip_errors(tmp_path):
    p = tmp_path / "x-images-idx3-ubyte.gz"
    write_idx(p, np.zeros((40, 3, 2), np.uint8))
    data = p.read_bytes()
    _cut(p, len(data) // 2)
    _fails(p, "gzip stream is truncated", load_images, p)
    p.write_bytes(data[:10] + bytes(len(data) - 10))
    _fails(p, "corrupt gzip data", load_images, p)


def test_idx_kind_and_labels_errors(tmp_path):
    images, labels = tmp_path / "train-images-idx3-ubyte", tmp_path / "train-labels-idx1-ubyte"
    write_idx(images, np.zeros((4, 3, 3), np.uint8))
    write_idx(labels, np.zeros(4, np.uint8))
    _fails(labels, r"0x00000801 \(a labels file: give the images file", load_images, labels)
    write_idx(labels, np.zeros(3, np.uint8))
    _fails(labels, f"3 labels for the 4 images of {re.escape(str(images))}", load_images, images)
    write_idx(labels, np.zeros((4, 1), np.uint8))
    _fails(labels, r"magic 0x00000802; MNIST-format labels are 0x00000801", load_images, images)
    write_idx(labels, np.zeros(4, np.float32))
    _fails(labels, r"magic 0x00000d01", load_images, images)
    write_idx(images, np.zeros((4, 3, 3), np.int16))
    _fails(images, r"magic 0x00000b03; MNIST-format images are 0x00000803", read_idx_images, images)
    with pytest.raises(ValueError, match="IDX holds 1 to 255 dimensions"):
        write_idx(tmp_path / "b.idx", np.zeros(3, np.uint16))


# --- arrays ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("array", "match"),
    [
        (np.zeros((2, 4, 4), np.float32), r"integers 0\.\.255 \(uint8\), got float32; scale"),
        (np.full((2, 4, 4), 256, np.int32), r"must lie in 0\.\.255, found 256\.\.256"),
        (np.full((2, 4, 4), -1, np.int8), r"found -1\.\.-1"),
        (np.zeros((2, 16), np.uint8), r"got shape \(2, 16\) \(flattened images: reshape"),
        (np.zeros((2, 1, 4, 4, 1), np.uint8), r"got shape \(2, 1, 4, 4, 1\)"),
        (np.zeros((2, 3, 4, 3), np.uint8), r"could be either .* give layout="),
        (np.zeros((2, 5, 5, 5), np.uint8), r"has no axis of 1, 3 or 4 channels"),
        (np.zeros((2, 5, 5, 4), np.uint8), "transparent pixels"),  # RGBA, alpha 0
    ],
)
def test_bad_npy(tmp_path, array, match):
    np.save(tmp_path / "a.npy", array)
    _fails(tmp_path / "a.npy", match, load_images, tmp_path / "a.npy")


def test_layout_option_errors(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((2, 4, 4), np.uint8))
    _fails(
        tmp_path / "a.npy",
        r"layout='nhwc' given for \(N, H, W\)",
        load_images,
        tmp_path / "a.npy",
        layout="nhwc",
    )
    np.save(tmp_path / "b.npy", np.zeros((2, 3, 4, 3), np.uint8))
    _fails(
        tmp_path / "b.npy",
        "layout must be 'nhwc' or 'nchw'",
        load_images,
        tmp_path / "b.npy",
        layout="hwc",
    )


@pytest.mark.parametrize(
    ("arrays", "spec", "match"),
    [
        (
            {"pixels": np.zeros((2, 4, 4), np.uint8)},
            "a.npz",
            r"no images array; it holds pixels\. Images go under",
        ),
        (
            {"x": np.zeros((2, 4, 4), np.uint8), "images": np.zeros((2, 4, 4), np.uint8)},
            "a.npz",
            "several image arrays",
        ),
        (
            {"x": np.zeros((2, 4, 4), np.uint8)},
            "a.npz:x_train",
            r"no array 'x_train'; it holds x\.",
        ),
        (
            {"x": np.zeros((2, 4, 4), np.uint8), "y": np.zeros(3, int)},
            "a.npz",
            r"labels of shape \(3,\) for 2 images",
        ),
        (
            {"x": np.zeros((2, 4, 4), np.uint8), "y": np.zeros(2)},
            "a.npz",
            "labels must be integers or strings, got float64",
        ),
        (
            {"x": np.zeros((2, 4, 4), np.uint8), "y": np.zeros((2, 1), int)},
            "a.npz",
            r"labels of shape \(2, 1\)",
        ),
        (
            {"x": np.array([None, None], dtype=object)},
            "a.npz",
            "unreadable .npz file .*allow_pickle",
        ),
    ],
)
def test_bad_npz(tmp_path, arrays, spec, match):
    np.savez(tmp_path / "a.npz", **arrays)
    _fails(tmp_path / "a.npz", match, load_images, tmp_path / spec)


def test_corrupt_array_files(tmp_path):
    np.save(tmp_path / "a.npy", np.zeros((4, 8, 8), np.uint8))
    _fails(tmp_path / "a.npy", r"unreadable \.npy file", load_images, _cut(tmp_path / "a.npy", -30))
    (tmp_path / "b.npz").write_bytes(b"not a zip archive")
    _fails(tmp_path / "b.npz", r"unreadable \.npz file", load_images, tmp_path / "b.npz")
    _fails(tmp_path / "c.npy", "no such file", load_images, tmp_path / "c.npy")
    np.save(tmp_path / "d.npy", np.zeros((2, 4, 4), np.uint8))
    from probpath.data import read_image_array

    _fails(
        tmp_path / "d.npy",
        "key='x' applies to .npz files",
        read_image_array,
        tmp_path / "d.npy",
        key="x",
    )


# --- options and the ImageSet's own checks --------------------------------------------


def test_options_that_do_not_apply(tmp_path):
    _fails("digits", "channels does not apply to a built-in set", load_images, "digits", channels=1)
    _fails("digits", "layout does not apply", load_images, "digits", layout="nchw")
    _fails(
        "digits",
        r"levels must be an integer in 2\.\.256, got 300",
        load_images,
        "digits",
        levels=300,
    )
    _fails("digits", "grey level 16, not below levels=8", load_images, "digits", levels=8)
    np.save(tmp_path / "a.npy", np.zeros((2, 4, 4), np.uint8))
    _fails(
        tmp_path / "a.npy",
        "channels does not apply to arrays",
        load_images,
        tmp_path / "a.npy",
        channels=3,
    )
    write_idx(tmp_path / "b.idx", np.zeros((2, 4, 4), np.uint8))
    _fails(
        tmp_path / "b.idx",
        "layout does not apply to IDX",
        load_images,
        tmp_path / "b.idx",
        layout="nchw",
    )
    _fails("8gaussians", "neither a built-in image set", load_images, "8gaussians")


def _set(images=None, labels=None, classes=(), levels=256):
    x = torch.zeros(2, 1, 2, 2, dtype=torch.uint8) if images is None else images
    return ImageSet(x, labels, classes, levels, "src")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"images": torch.zeros(2, 1, 2, 2)}, r"uint8 tensor \(N, C, H, W\), got torch.float32"),
        ({"images": torch.zeros(2, 2, 2, dtype=torch.uint8)}, r"shape \(2, 2, 2\)"),
        ({"images": torch.zeros(0, 1, 2, 2, dtype=torch.uint8)}, "no images"),
        ({"classes": ("a",)}, "class names .* given without labels"),
        ({"labels": torch.tensor([0, 1])}, "labels given without class names"),
        (
            {"labels": torch.tensor([0, 2]), "classes": ("a", "b")},
            r"labels must lie in 0\.\.1 .* found 0\.\.2",
        ),
        ({"labels": torch.tensor([0.0, 1.0]), "classes": ("a", "b")}, "long tensor of shape"),
        ({"levels": 1}, "levels must be an integer in 2..256, got 1"),
    ],
)
def test_image_set_checks(kwargs, match):
    _fails("src", match, _set, **kwargs)
