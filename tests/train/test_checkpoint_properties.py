"""Property tests of the checkpoint reader: whatever the bytes on disk, loading returns a
checkpoint or raises :class:`CheckpointError`, never another exception (hypothesis)."""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

from probpath.train import CheckpointError, load_checkpoint, save_checkpoint

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


def _reference() -> Path:
    """A real checkpoint (model, EMA, AdamW state) in a fresh folder."""
    net = nn.Linear(3, 2)
    opt = torch.optim.AdamW(net.parameters())
    net(torch.ones(4, 3)).sum().backward()
    opt.step()
    root = Path(tempfile.mkdtemp())
    return save_checkpoint(
        root, 7, model=net.state_dict(), ema=net.state_dict(), optimizer=opt.state_dict()
    )


REFERENCE = _reference()


def _copy() -> Path:
    target = Path(tempfile.mkdtemp()) / REFERENCE.name
    shutil.copytree(REFERENCE, target)
    return target


def _loads_or_refuses(path: Path) -> None:
    try:
        load_checkpoint(path)
    except CheckpointError:
        pass
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


@SETTINGS
@given(st.sampled_from(["model", "ema", "optimizer"]), st.data())
def test_a_damaged_tensor_file_is_refused(part, data):
    path = _copy()
    f = path / f"{part}.safetensors"
    raw = bytearray(f.read_bytes())
    if data.draw(st.booleans(), label="truncate"):
        raw = raw[: data.draw(st.integers(0, len(raw) - 1), label="length")]
    else:
        i = data.draw(st.integers(0, len(raw) - 1), label="byte")
        raw[i] ^= data.draw(st.integers(1, 255), label="xor")
    f.write_bytes(bytes(raw))
    try:
        load_checkpoint(path)
        raise AssertionError("a damaged file was loaded")
    except CheckpointError as e:
        assert f.name in str(e)
    finally:
        shutil.rmtree(path.parent, ignore_errors=True)


@SETTINGS
@given(st.sampled_from(["model", "ema", "optimizer"]), st.binary(max_size=200))
def test_any_tensor_bytes_with_a_matching_hash_load_or_are_refused(part, raw):
    # The hash only proves the file is the one written; the safetensors parser itself
    # must still refuse garbage with the library's error.
    path = _copy()
    (path / f"{part}.safetensors").write_bytes(raw)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"][part] = {"bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    (path / "manifest.json").write_text(json.dumps(manifest))
    _loads_or_refuses(path)


@SETTINGS
@given(st.sampled_from(["files", "step", "meta", "optimizer_structure", "format"]), json_values)
def test_any_manifest_entry_loads_or_is_refused(key, value):
    path = _copy()
    manifest = json.loads((path / "manifest.json").read_text())
    manifest[key] = value
    (path / "manifest.json").write_text(json.dumps(manifest))
    _loads_or_refuses(path)


@SETTINGS
@given(st.binary(max_size=300))
def test_any_manifest_bytes_load_or_are_refused(raw):
    path = _copy()
    (path / "manifest.json").write_bytes(raw)
    _loads_or_refuses(path)


def test_manifest_names_no_other_file(tmp_path):
    # File names come from the reader's list, not from the manifest: no path traversal.
    path = _copy()
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["../../secret"] = manifest["files"]["model"]
    (path / "manifest.json").write_text(json.dumps(manifest))
    try:
        load_checkpoint(path)
        raise AssertionError("a manifest naming another file was accepted")
    except CheckpointError as e:
        assert "malformed" in str(e)
