"""``probpath train``: flags and config file → :class:`RunConfig` → :func:`probpath.train.fit`;
an image run then draws its samples (:func:`probpath.train.plot_run`)."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..data import data_kind
from ..train import FitResult, RunConfig, config_like, fit, load_run, plot_run
from ..train.distributed import local_device
from ._common import add_device_flags, add_solver_flags, print_table
from ._train_flags import MODEL_FLAGS, RUN_FLAGS, TRAIN_FLAGS, add_train_flags

__all__ = ["MODEL_FLAGS", "RUN_FLAGS", "TRAIN_FLAGS", "add_parser", "merge_config", "run"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``train`` sub-parser."""
    t = sub.add_parser(
        "train",
        parents=[common],
        help="train a model; writes a run folder",
        description="Train a model on a toy set or a data file. Flags override "
        "--config; the final config is saved as OUT/config.json.",
    )
    add_train_flags(t)
    add_solver_flags(t)
    add_device_flags(t)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.add_argument(
        "--no-plot",
        action="store_true",
        help="images: skip the sample grid and plots written after training",
    )
    t.set_defaults(func=run)


def _load_yaml(text: str) -> Any:
    """``yaml.safe_load`` that also reads ``1e-3`` as a float (YAML 1.1 wants ``1.0e-3``)."""
    import re

    import yaml

    class Loader(yaml.SafeLoader):
        pass

    pattern = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?$|^[-+]?\.(inf|Inf|INF)$")
    Loader.add_implicit_resolver("tag:yaml.org,2002:float", pattern, list("-+0123456789."))
    try:
        return yaml.load(text, Loader=Loader)
    except yaml.YAMLError as e:
        raise ValueError(str(e).replace("\n", " ")) from None


def _config_file(path: Path | None) -> dict[str, Any]:
    """The mapping of a ``--config`` file (``{}`` without one)."""
    if path is None:
        return {}
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text()
    try:
        base = (json.loads(text) if path.suffix == ".json" else _load_yaml(text)) or {}
    except ValueError as e:  # json.JSONDecodeError and yaml.YAMLError (see _load_yaml)
        raise ValueError(f"cannot read config file {path}: {e}") from None
    if not isinstance(base, dict):
        raise ValueError(f"{path} must hold a mapping of config keys")
    return base


def merge_config(args: argparse.Namespace) -> RunConfig:
    """``RunConfig`` from defaults (the family's ``train_defaults`` over ``TrainConfig``'s),
    then ``--config FILE``, then the run ``--like RUN`` (its data and path, see
    :func:`probpath.train.config_like`), then the flags given."""
    from ..models import MODELS

    base = _config_file(getattr(args, "config", None))
    run = {k: getattr(args, f) for f, k in RUN_FLAGS.items() if getattr(args, f) is not None}
    cfg = RunConfig.from_dict(base)
    train = {k: getattr(args, f) for f, k in TRAIN_FLAGS.items() if getattr(args, f) is not None}
    model = {k: getattr(args, f) for f, k in MODEL_FLAGS.items() if getattr(args, f) is not None}
    model.update(dict(args.set))
    cfg = replace(
        cfg,
        **run,
        train=replace(cfg.train, **train),
        model_config={**cfg.model_config, **model},
    )
    if getattr(args, "like", None) is not None:
        cfg = config_like(cfg, args.like, keep={*run, *(["seed"] if "seed" in train else [])})
    # The family's training defaults for the data's kind; the file and the flags override them.
    given = {*(base.get("train") or {}), *train}
    defaults = family_train_defaults(MODELS.get(cfg.model), data_kind(cfg.data).kind)
    return replace(
        cfg, train=replace(cfg.train, **{k: v for k, v in defaults.items() if k not in given})
    )


def family_train_defaults(family: Any, kind: str) -> dict[str, Any]:
    """A family's ``TrainConfig`` defaults on data of ``kind`` (:func:`probpath.data.data_kind`):
    its ``image_train_defaults`` on images, else its ``train_defaults`` (``{}``: none)."""
    if kind == "images" and hasattr(family, "image_train_defaults"):
        return dict(family.image_train_defaults)
    return dict(getattr(family, "train_defaults", {}))


def _resumed_config(args: argparse.Namespace) -> RunConfig:
    """The saved config of the run in ``--out``, with ``--steps`` and ``--compile`` (the only
    config flags allowed; ``--device`` is not part of the config) applied."""
    flags = {**RUN_FLAGS, **TRAIN_FLAGS, **MODEL_FLAGS, "config": "", "set": ""}
    flags.update(conditional="", like="")
    changes = ("steps", "compile")
    given = [f for f in flags if f not in changes and getattr(args, f) not in (None, [], False)]
    if given:
        names = ", ".join("--" + f.replace("_", "-") for f in given)
        raise ValueError(
            "--resume continues with the run's saved config; only --steps may change (and "
            f"--device and --compile, which change no result), got {names}"
        )
    cfg = RunConfig.load(args.out)
    new = {f: getattr(args, f) for f in changes if getattr(args, f) is not None}
    return replace(cfg, train=replace(cfg.train, **new)) if new else cfg


def print_fit(fitted: FitResult) -> None:
    """The table ``probpath train`` prints at the end of a run (rank 0 under torchrun)."""
    if os.environ.get("RANK", "0") != "0":
        return
    result = fitted.result
    table: dict[str, Any] = {
        "run": str(fitted.run_dir),
        "step": result.step,
        "seconds": round(fitted.seconds, 1),
    }
    if result.losses:
        table["final training loss"] = result.losses[-1]
    if "nll" in result.eval:
        table["held-out NLL (nats)"] = result.eval["nll"]
    if "bits_per_dim" in result.eval:  # discrete data: the dequantized bound
        table["held-out bits/dim"] = result.eval["bits_per_dim"]
    if "accuracy" in result.eval:
        table["held-out accuracy"] = result.eval["accuracy"]
    print_table("trained", table)


def run(args: argparse.Namespace) -> int:
    """``probpath train``."""
    device = local_device(args.device)  # a missing GPU is refused before any work
    if args.resume:
        cfg = _resumed_config(args)
    else:
        cfg = merge_config(args)
        if args.p_uncond is not None and not args.conditional:
            raise ValueError("--p-uncond is the label dropout of a --conditional model")
    fitted = fit(
        cfg,
        args.out,
        resume=args.resume,
        conditional=args.conditional,
        like=args.like,
        progress=not args.quiet,
        device=device,
    )
    print_fit(fitted)
    if not args.no_plot and os.environ.get("RANK", "0") == "0":
        loaded = load_run(args.out)
        if loaded.kind == "images":  # one command: trained, scored, sampled and drawn
            for path in plot_run(loaded, progress=not args.quiet):
                print(path)
    return 0
