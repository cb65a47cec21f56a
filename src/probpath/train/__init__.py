"""Training for every model family: one loop, EMA weights, safe checkpoints, torchrun,
and the workflow of a run folder.

``train(model, data, TrainConfig(...), run_dir)`` works for any module with
``loss(x, *, generator=None) -> (loss, logs)`` (the :class:`~probpath.models.base.GenerativeModel`
contract); ``fit(RunConfig(...), run_dir)`` is the whole workflow of ``probpath train``
(data → model space → train → evaluate → save) and ``load_run(run_dir)`` gives the
trained model back, sampling in data space. Discrete data (images, integer files) are
dequantized into model space (:class:`ModelSpace`) and scored in bits/dim of the discrete
data; image samples by a judge (:mod:`.judge`). See ``docs/training.md`` and
``docs/images.md``.
"""

from .checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from .config import RunConfig, TrainConfig, lr_factor
from .distributed import DistInfo, LossModule
from .ema import EMA
from .evaluate import count_nfe, default_evaluate, dequantized_nll
from .judge import judge_features, judge_scores, load_judge
from .report import evaluate_classifier, evaluate_run, plot_run
from .rows import RunRows, load_rows, split_data, to_data_space, to_model_space
from .run import LoadedRun, load_run, run_space
from .space import ModelSpace
from .trainer import NonFiniteLossError, TrainResult, train
from .workflow import FitResult, config_like, fit

__all__ = [
    "EMA",
    "Checkpoint",
    "CheckpointError",
    "DistInfo",
    "FitResult",
    "LoadedRun",
    "LossModule",
    "ModelSpace",
    "NonFiniteLossError",
    "RunConfig",
    "RunRows",
    "TrainConfig",
    "TrainResult",
    "config_like",
    "count_nfe",
    "default_evaluate",
    "dequantized_nll",
    "evaluate_classifier",
    "evaluate_run",
    "fit",
    "judge_features",
    "judge_scores",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "load_judge",
    "load_rows",
    "load_run",
    "lr_factor",
    "plot_run",
    "run_space",
    "save_checkpoint",
    "split_data",
    "to_data_space",
    "to_model_space",
    "train",
]
