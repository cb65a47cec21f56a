"""Training for every model family: one loop, EMA weights, safe checkpoints, torchrun.

``train(model, data, TrainConfig(...), run_dir)`` works for any module with
``loss(x, *, generator=None) -> (loss, logs)`` (the :class:`~probpath.models.base.GenerativeModel`
contract); see ``docs/training.md``.
"""

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from .config import TrainConfig, lr_factor
from .distributed import DistInfo, LossModule
from .ema import EMA
from .run import LoadedRun, RunConfig, load_run, split_data
from .trainer import NonFiniteLossError, TrainResult, default_evaluate, train

__all__ = [
    "EMA",
    "Checkpoint",
    "CheckpointError",
    "DistInfo",
    "LoadedRun",
    "LossModule",
    "NonFiniteLossError",
    "RunConfig",
    "TrainConfig",
    "TrainResult",
    "default_evaluate",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_run",
    "lr_factor",
    "save_checkpoint",
    "split_data",
    "train",
]
