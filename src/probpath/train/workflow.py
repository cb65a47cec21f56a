"""The training workflow of a run: data → model space → train → evaluate → save.

:func:`fit` is what ``probpath train`` runs, and what a Python user calls to get the same
run folder (``config.json``, ``metrics.jsonl``, checkpoints) from a
:class:`~probpath.train.config.RunConfig`::

    from probpath.train import RunConfig, TrainConfig, fit, load_run
    fit(RunConfig(model="fm", data="moons", train=TrainConfig(steps=2000)), "runs/fm")
    run = load_run("runs/fm")
    x, nfe = run.sample(1000)           # data space
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Callable, Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data import Standardizer
from .checkpoint import Checkpoint, list_checkpoints, load_checkpoint
from .config import RunConfig
from .distributed import local_device
from .evaluate import default_evaluate
from .rows import RunRows, load_rows
from .run import LoadedRun, build_for, load_run, run_space
from .space import ModelSpace
from .trainer import Evaluate, TrainResult, train

__all__ = ["LIKE_KEYS", "FitResult", "config_like", "fit"]

LIKE_KEYS = (
    "data", "label_column", "n_train", "n_eval", "standardize", "seed", "levels", "image_space",
)  # fmt: skip
"""What :func:`config_like` copies from the run a noisy classifier will guide (besides
its path): the data and how it is split, seeded, standardised or dequantized."""


@dataclass(frozen=True)
class FitResult:
    """What :func:`fit` returns: the run folder, its complete config (as saved in
    ``config.json``), the trainer's :class:`~probpath.train.trainer.TrainResult` and the
    wall-clock seconds of training (evaluations and checkpoints included)."""

    run_dir: Path
    config: RunConfig
    result: TrainResult
    seconds: float


def _main_process() -> bool:
    return os.environ.get("RANK", "0") == "0"  # under torchrun, rank 0 writes


def config_like(
    config: RunConfig, like: str | os.PathLike[str] | LoadedRun, *, keep: Collection[str] = ()
) -> RunConfig:
    """The config of a noisy classifier for the diffusion run ``like``.

    The classifier must read ``x_t`` exactly as ``like``'s model does: it takes that run's
    path (its model's ``schedule_config``, which ``config.model_config`` must not set) and
    the keys of :data:`LIKE_KEYS` (``seed`` is ``train.seed``) except those in ``keep``;
    :func:`fit` with the same ``like`` then reuses its standardisation.
    """
    if config.model != "noisy-classifier":
        raise ValueError(f"--like applies to --model noisy-classifier, not {config.model}")
    run = like if isinstance(like, LoadedRun) else load_run(like, device="cpu")
    schedule_config = getattr(run.model, "schedule_config", None)
    if schedule_config is None:
        raise ValueError(f"--like {run.run_dir}: a {run.config.model} run has no diffusion path")
    clash = sorted(set(config.model_config) & set(schedule_config))
    if clash:
        raise ValueError(f"--like copies the path of {run.run_dir}; drop --set {', '.join(clash)}")
    src = run.config
    copied = {k: getattr(src, k) for k in LIKE_KEYS if k not in keep and k != "seed"}
    seed = config.train.seed if "seed" in keep else src.train.seed
    return replace(
        config,
        **copied,
        train=replace(config.train, seed=seed),
        model_config={**config.model_config, **schedule_config},
    )


def _labelled(config: RunConfig, conditional: bool, resume: bool) -> bool:
    """Whether the run trains on labels: a conditional diffusion model or a classifier
    (a family with ``accuracy``: the noisy classifier, the image classifier)."""
    from ..models import MODELS, DiffusionModel

    if resume:
        return int(config.model_config.get("n_classes") or 0) > 0
    family = MODELS.get(config.model)
    if conditional and not (isinstance(family, type) and issubclass(family, DiffusionModel)):
        raise ValueError(
            f"--conditional applies to the diffusion family (ddpm, ncsn, sde, fm), "
            f"not {config.model}"
        )
    return conditional or hasattr(family, "accuracy")


def _standardizer(
    config: RunConfig, rows: RunRows, saved: Checkpoint | None, like: LoadedRun | None
) -> Standardizer | None:
    """The run's affine map of vectors: the ``saved`` one on resume, ``like``'s, or fitted
    on the training rows (``None`` when the run does not standardise, and for images)."""
    if rows.kind == "images":
        return None
    if saved is not None:
        state = saved.meta["extra"]["standardizer"]
        return None if state is None else Standardizer.from_dict(state)
    if like is not None:
        return like.standardizer if config.standardize else None
    return Standardizer.fit(rows.train) if config.standardize else None


def _takes(model: str, key: str) -> bool:
    """Whether the family ``model`` takes the config key ``key``."""
    from ..models import MODELS

    return key in inspect.signature(MODELS[model]).parameters


def _build(config: RunConfig, rows: RunRows, labelled: bool) -> nn.Module:
    """The model of ``config``, its data's shape (``dim`` of vectors, ``shape`` of
    images), ``n_classes`` and, for images in the centered space, the DDPM decoder's
    ``levels`` filled in from the data; its initial weights drawn with the run's seed."""
    from ..models import build

    model_config = dict(config.model_config)
    if rows.kind == "images":
        model_config.setdefault("shape", list(rows.shape))
    elif rows.train.ndim == 2:
        model_config.setdefault("dim", rows.train.shape[1])
    centered = rows.kind == "images" and config.image_space == "centered"
    if centered and _takes(config.model, "levels"):
        model_config.setdefault("levels", rows.levels)
    if labelled:
        k = model_config.setdefault("n_classes", len(rows.classes))
        if k != len(rows.classes):
            raise ValueError(
                f"n_classes={k} was set, but the data hold {len(rows.classes)} classes"
            )
    torch.manual_seed(config.train.seed)  # the initial weights are part of the run's seed
    return build(config.model, **model_config)


def _extra_state(
    config: RunConfig,
    rows: RunRows,
    std: Standardizer | None,
    labelled: bool,
    like_run: LoadedRun | None,
) -> dict[str, Any]:
    """What the checkpoints keep besides the weights: the standardisation, the class names,
    the model config (what ``check_weights`` compares ``config.json`` with), the data's kind
    and shape, and the run a noisy classifier guides."""
    extra: dict[str, Any] = {
        "standardizer": std.to_dict() if std is not None else None,
        "classes": list(rows.classes) if labelled else None,
        "model_config": config.model_config,
        "data": {"kind": rows.kind, "shape": list(rows.shape)},
    }
    if like_run is not None:
        extra["like"] = str(like_run.run_dir)
    return extra


def _in_model_space(
    space: ModelSpace, rows: RunRows
) -> tuple[Tensor, Tensor, Evaluate, Callable[[Tensor, torch.Generator], Tensor] | None]:
    """The training and held-out rows as the trainer takes them, with their evaluation and
    the per-batch transform: continuous rows mapped to model space once and scored in data
    space; discrete rows kept as integer levels, dequantized per batch, scored by the bound."""
    if space.dequantizer is None:
        data, (eval_data, log_det) = space.forward(rows.train)[0], space.forward(rows.eval)
        evaluate = functools.partial(default_evaluate, log_det=float(log_det.mean()))
        return data, eval_data, evaluate, None
    evaluate = functools.partial(default_evaluate, space=space)
    return rows.train, rows.eval, evaluate, space.dequantize


def fit(
    config: RunConfig,
    run_dir: str | os.PathLike[str],
    *,
    resume: bool = False,
    conditional: bool = False,
    like: str | os.PathLike[str] | LoadedRun | None = None,
    progress: bool = True,
    device: str | torch.device | None = "auto",
) -> FitResult:
    """Train the run ``config`` into ``run_dir``: data → model space → train → evaluate → save.

    Loads the rows (:func:`~probpath.train.rows.load_rows`), fits the standardisation on
    the training rows (or reuses ``like``'s, or the saved one on resume), builds the model
    (``dim`` or ``shape``, and ``n_classes``, from the data), writes ``config.json`` with
    the complete model config, the sizes and the levels used, and trains with
    :func:`~probpath.train.trainer.train`; the held-out NLL it reports is in nats of the
    data space. Discrete data (images, integer files) stay integer levels in memory and
    are dequantized per batch with the step's noise (:class:`.space.ModelSpace`); their
    held-out NLL is the dequantized bound on -log P(x), with its bits/dim. ``resume=True`` continues
    the run in ``run_dir`` (``config`` is its saved one, ``train.steps`` may be raised);
    ``conditional=True`` trains a diffusion-family model on the data's labels;
    ``like`` is the diffusion run a noisy classifier will guide (see :func:`config_like`);
    ``device`` is where to train (:func:`~probpath.train.distributed.local_device`: ``auto``
    is the GPU when there is one; under torchrun each rank takes ``cuda:LOCAL_RANK``).
    """
    run_dir = Path(run_dir)
    if not resume and list_checkpoints(run_dir / "checkpoints"):
        raise ValueError(f"{run_dir} already holds a run; add --resume or pick another --out")
    like_run = like if like is None or isinstance(like, LoadedRun) else load_run(like, device="cpu")
    labelled = _labelled(config, conditional, resume)
    rows = load_rows(config, labels=labelled)
    if config.image_space != "centered" and rows.kind != "images":
        raise ValueError(f"image_space={config.image_space!r} applies to images; "
                         f"{config.data} holds {rows.kind} rows")  # fmt: skip
    if not resume:
        n_train, n_eval = len(rows.train), len(rows.eval)
        config = replace(config, n_train=n_train, n_eval=n_eval, levels=rows.levels)
    saved = load_checkpoint(run_dir / "checkpoints") if resume else None
    std = _standardizer(config, rows, saved, like_run)
    if saved is not None:
        model = build_for(lambda: _build(config, rows, labelled), saved, config, run_dir)
    else:
        model = _build(config, rows, labelled)
        config = replace(config, model_config=dict(model.config))  # type: ignore[arg-type]
        if _main_process():
            config.save(run_dir)
    model = model.to(local_device(device))
    space = run_space(config, rows.kind, std)
    extra = _extra_state(config, rows, std, labelled, like_run)
    data, eval_data, evaluate, transform = _in_model_space(space, rows)
    t0 = time.perf_counter()
    result = train(
        model,
        data,
        config.train,
        run_dir,
        eval_data=eval_data,
        evaluate=evaluate,
        resume=resume,
        extra_state=extra,
        progress=progress,
        labels=rows.train_y,
        eval_labels=rows.eval_y,
        transform=transform,
    )
    return FitResult(run_dir, config, result, time.perf_counter() - t0)
