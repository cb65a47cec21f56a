"""Checkpoints: exact round trips, atomic layout, corruption detection, no pickle."""

from __future__ import annotations

import json
import pickle

import pytest
import torch
from torch import nn

from probpath.train import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from probpath.train.checkpoint import flatten_state, unflatten_state


def _trained_adamw() -> tuple[nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=1e-2, betas=(0.8, 0.95), amsgrad=True)
    for _ in range(3):
        opt.zero_grad()
        net(torch.randn(8, 3)).pow(2).mean().backward()
        opt.step()
    return net, opt


def test_optimizer_state_round_trip_gives_identical_next_step(tmp_path):
    net, opt = _trained_adamw()
    path = save_checkpoint(tmp_path, 3, model=net.state_dict(), optimizer=opt.state_dict())
    ck = load_checkpoint(path)
    net2 = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 1))
    net2.load_state_dict(ck.model)
    opt2 = torch.optim.AdamW(net2.parameters(), lr=1.0)
    assert ck.optimizer is not None
    opt2.load_state_dict(ck.optimizer)
    assert opt2.param_groups[0]["betas"] == (0.8, 0.95) and opt2.param_groups[0]["amsgrad"]
    x = torch.randn(8, 3)
    for n, o in ((net, opt), (net2, opt2)):
        o.zero_grad()
        n(x).pow(2).mean().backward()
        o.step()
    for p, q in zip(net.parameters(), net2.parameters(), strict=True):
        assert torch.equal(p, q)


def test_flatten_preserves_int_keys_tuples_and_nesting():
    state = {
        "state": {0: {"step": torch.tensor(2.0), "buf": [torch.ones(2), None]}},
        "groups": [{"betas": (0.9, 0.99), "params": [0, 1], "name": "x", "flag": True}],
    }
    tensors, skel = flatten_state(state)
    json.dumps(skel)  # the skeleton is plain JSON
    back = unflatten_state(tensors, json.loads(json.dumps(skel)))
    assert back["groups"] == state["groups"] and list(back["state"]) == [0]
    assert torch.equal(back["state"][0]["buf"][0], torch.ones(2))
    with pytest.raises(TypeError, match="object"):
        flatten_state({"x": object()})


def test_manifest_is_written_last_and_incomplete_checkpoints_are_ignored(tmp_path):
    save_checkpoint(tmp_path, 5, model={"w": torch.zeros(1)})
    half = tmp_path / "step_00000009"  # files present, manifest never written
    half.mkdir()
    (half / "model.safetensors").write_bytes(b"partial")
    assert latest_checkpoint(tmp_path) == tmp_path / "step_00000005"
    assert load_checkpoint(tmp_path).step == 5
    assert not list(tmp_path.glob("**/.*tmp*"))  # no temp files left behind


def test_keep_prunes_oldest(tmp_path):
    for step in (1, 2, 3, 4):
        save_checkpoint(tmp_path, step, model={"w": torch.full((1,), float(step))}, keep=2)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000003", "step_00000004"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_tensor_file_is_named_in_the_error(tmp_path, damage):
    path = save_checkpoint(tmp_path, 1, model={"w": torch.arange(100.0)}, ema={"w": torch.ones(3)})
    f = path / "model.safetensors"
    data = f.read_bytes()
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        f.write_bytes(data[:-5] + bytes([data[-5] ^ 1]) + data[-4:])
    else:
        f.unlink()
    with pytest.raises(CheckpointError, match=r"model\.safetensors"):
        load_checkpoint(path)


def test_corrupt_or_missing_manifest(tmp_path):
    path = save_checkpoint(tmp_path, 1, model={"w": torch.ones(1)})
    (path / "manifest.json").write_text('{"format": 1, "step"')
    with pytest.raises(CheckpointError, match=r"manifest\.json is corrupt"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path / "nowhere")
    assert isinstance(CheckpointError("x"), ValueError)  # the CLI reports it as a user error


def test_loading_never_unpickles(tmp_path, monkeypatch):
    net, opt = _trained_adamw()
    path = save_checkpoint(tmp_path, 3, model=net.state_dict(), optimizer=opt.state_dict())

    def forbidden(*args, **kwargs):
        raise AssertionError("unpickling attempted")

    monkeypatch.setattr(pickle, "loads", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(torch, "load", forbidden)
    assert load_checkpoint(path).step == 3
    assert {p.name for p in path.iterdir()} == {
        "manifest.json",
        "model.safetensors",
        "optimizer.safetensors",
    }
