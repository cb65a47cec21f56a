"""Checkpoints that are safe to load and never half-written.

A checkpoint is one folder ``<run>/checkpoints/step_00000100/`` holding

- ``model.safetensors``, ``ema.safetensors``, ``optimizer.safetensors``: every tensor;
- ``manifest.json``: the step, the training config, RNG states, data standardisation,
  the JSON skeleton of the optimiser state (its non-tensor structure, with each tensor
  replaced by its safetensors key), and the size and SHA-256 of every file.

Each file is written to a temporary name in the same folder, flushed with ``fsync`` and
moved into place with ``os.replace``; the manifest is written last, so a checkpoint without
a manifest is ignored and one whose files do not match their recorded hash is refused
with an error naming the file. Nothing is ever unpickled.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import Tensor

__all__ = [
    "Checkpoint",
    "CheckpointError",
    "flatten_state",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
    "unflatten_state",
]

MANIFEST = "manifest.json"
_PARTS = ("model", "ema", "optimizer")
FORMAT_VERSION = 1
_STEP_DIR = re.compile(r"^step_(\d+)$")


class CheckpointError(ValueError):
    """A checkpoint is missing, truncated, corrupt or of an unknown format."""


@dataclass(frozen=True)
class Checkpoint:
    """The contents of one checkpoint, as loaded by :func:`load_checkpoint`."""

    path: Path
    step: int
    model: dict[str, Tensor]
    ema: dict[str, Tensor] | None
    optimizer: dict[str, Any] | None
    meta: dict[str, Any] = field(default_factory=dict)


def flatten_state(obj: Any, prefix: str = "") -> tuple[dict[str, Tensor], Any]:
    """Split a nested state (an optimiser ``state_dict``) into tensors and a JSON skeleton.

    Dicts become ``{"__dict__": [[key, value], ...]}`` (so integer keys survive JSON),
    tuples ``{"__tuple__": [...]}`` and tensors ``{"__tensor__": key}``.

    Example:
        >>> import torch
        >>> tensors, skel = flatten_state({0: {"step": torch.tensor(3.0)}, "lr": (0.1, 2)})
        >>> list(tensors)
        ['0.step']
        >>> unflatten_state(tensors, skel)
        {0: {'step': tensor(3.)}, 'lr': (0.1, 2)}
    """
    tensors: dict[str, Tensor] = {}

    def walk(x: Any, path: str) -> Any:
        if isinstance(x, Tensor):
            tensors[path] = x.detach().cpu().contiguous().clone()
            return {"__tensor__": path}
        if isinstance(x, dict):
            items = []
            for k, v in x.items():
                if not isinstance(k, (str, int)):
                    raise TypeError(f"cannot store a state key of type {type(k).__name__}")
                items.append([k, walk(v, f"{path}.{k}" if path else str(k))])
            return {"__dict__": items}
        if isinstance(x, (list, tuple)):
            out = [walk(v, f"{path}.{i}" if path else str(i)) for i, v in enumerate(x)]
            return {"__tuple__": out} if isinstance(x, tuple) else out
        if x is None or isinstance(x, (bool, int, float, str)):
            return x
        raise TypeError(f"cannot store a state value of type {type(x).__name__} at {path!r}")

    return tensors, walk(obj, prefix)


def unflatten_state(tensors: dict[str, Tensor], skeleton: Any) -> Any:
    """Inverse of :func:`flatten_state`."""
    if isinstance(skeleton, dict):
        if "__tensor__" in skeleton:
            return tensors[skeleton["__tensor__"]]
        if "__tuple__" in skeleton:
            return tuple(unflatten_state(tensors, v) for v in skeleton["__tuple__"])
        return {k: unflatten_state(tensors, v) for k, v in skeleton["__dict__"]}
    if isinstance(skeleton, list):
        return [unflatten_state(tensors, v) for v in skeleton]
    return skeleton


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def save_checkpoint(
    directory: str | os.PathLike[str],
    step: int,
    *,
    model: dict[str, Tensor],
    ema: dict[str, Tensor] | None = None,
    optimizer: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
    keep: int | None = None,
) -> Path:
    """Write a checkpoint for ``step`` into ``directory/step_<step>/`` atomically.

    ``model``/``ema`` are state dicts, ``optimizer`` an optimiser ``state_dict()``,
    ``meta`` any JSON-serialisable dict. With ``keep``, only the newest ``keep``
    checkpoints in ``directory`` remain afterwards.

    Example:
        >>> import tempfile, torch
        >>> d = tempfile.mkdtemp()
        >>> p = save_checkpoint(d, 3, model={"w": torch.ones(2)}, meta={"note": "hi"})
        >>> ck = load_checkpoint(p)
        >>> ck.step, ck.model["w"].tolist(), ck.meta["note"]
        (3, [1.0, 1.0], 'hi')
    """
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    root = Path(directory)
    target = root / f"step_{step:08d}"
    target.mkdir(parents=True, exist_ok=True)
    (target / MANIFEST).unlink(missing_ok=True)  # invalidate first when re-saving a step
    files: dict[str, dict[str, Any]] = {}
    parts: dict[str, dict[str, Tensor]] = {
        "model": {k: v.detach().cpu().contiguous().clone() for k, v in model.items()}
    }
    if ema is not None:
        parts["ema"] = {k: v.detach().cpu().contiguous().clone() for k, v in ema.items()}
    opt_skeleton = None
    if optimizer is not None:
        parts["optimizer"], opt_skeleton = flatten_state(optimizer)
    for name, tensors in parts.items():
        data = st_save(tensors)
        _write_atomic(target / f"{name}.safetensors", data)
        files[name] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    manifest = {
        "format": FORMAT_VERSION,
        "step": int(step),
        "files": files,
        "optimizer_structure": opt_skeleton,
        "meta": meta or {},
    }
    _write_atomic(target / MANIFEST, json.dumps(manifest).encode())
    _fsync_dir(target)
    _fsync_dir(root)
    if keep is not None and keep > 0:
        for old in list_checkpoints(root)[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    return target


def list_checkpoints(directory: str | os.PathLike[str]) -> list[Path]:
    """Complete checkpoints (those with a manifest) in ``directory``, oldest first."""
    root = Path(directory)
    if not root.is_dir():
        return []
    found = []
    for p in root.iterdir():
        m = _STEP_DIR.match(p.name)
        if m and (p / MANIFEST).is_file():
            found.append((int(m.group(1)), p))
    return [p for _, p in sorted(found)]


def latest_checkpoint(directory: str | os.PathLike[str]) -> Path | None:
    """The newest complete checkpoint in ``directory``, or ``None`` if there is none."""
    found = list_checkpoints(directory)
    return found[-1] if found else None


def _read_tensors(path: Path, expected: dict[str, Any]) -> dict[str, Tensor]:
    if not path.is_file():
        raise CheckpointError(f"checkpoint file {path} is missing")
    data = path.read_bytes()
    if len(data) != expected.get("bytes") or hashlib.sha256(data).hexdigest() != expected.get(
        "sha256"
    ):
        raise CheckpointError(
            f"checkpoint file {path} is corrupt or truncated "
            f"({len(data)} bytes, expected {expected.get('bytes')}; SHA-256 mismatch)"
        )
    try:
        return st_load(data)
    except Exception as e:  # safetensors raises its own error type
        raise CheckpointError(f"checkpoint file {path} is not valid safetensors: {e}") from e


def load_checkpoint(path: str | os.PathLike[str]) -> Checkpoint:
    """Load a checkpoint folder (or a run's ``checkpoints`` folder: its newest one).

    Raises :class:`CheckpointError` (a ``ValueError``) naming the bad file when the
    manifest or a tensor file is missing, truncated or corrupt.
    """
    p = Path(path)
    if not (p / MANIFEST).is_file() and p.is_dir():
        newest = latest_checkpoint(p)
        if newest is not None:
            p = newest
    mpath = p / MANIFEST
    if not mpath.is_file():
        raise CheckpointError(f"no checkpoint at {p}: {mpath} is missing")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"checkpoint manifest {mpath} is corrupt: {e}") from e
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint manifest {mpath} has an unknown format")
    files, step, meta = manifest.get("files"), manifest.get("step"), manifest.get("meta", {})
    if not (
        isinstance(files, dict)
        and "model" in files
        and set(files) <= set(_PARTS)  # file names come from this list, never from the manifest
        and all(isinstance(v, dict) for v in files.values())
        and isinstance(step, int)
        and not isinstance(step, bool)
        and step >= 0
        and isinstance(meta, dict)
    ):
        raise CheckpointError(f"checkpoint manifest {mpath} is malformed")
    tensors = {name: _read_tensors(p / f"{name}.safetensors", files[name]) for name in files}
    optimizer = None
    if "optimizer" in tensors:
        try:
            optimizer = unflatten_state(tensors["optimizer"], manifest.get("optimizer_structure"))
        except (KeyError, TypeError, ValueError, RecursionError) as e:
            raise CheckpointError(f"optimizer structure in {mpath} is corrupt: {e!r}") from e
    return Checkpoint(
        path=p,
        step=step,
        model=tensors["model"],
        ema=tensors.get("ema"),
        optimizer=optimizer,
        meta=meta,
    )
