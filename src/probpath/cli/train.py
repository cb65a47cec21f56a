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

__all__ = ["MODEL_FLAGS", "RUN_FLAGS", "TRAIN_FLAGS", "add_parser", "merge_config", "run"]

# Named flags and the model-config key each one sets (families share these names).
MODEL_FLAGS = {
    "trace": "trace",
    "solver": "method",
    "rtol": "rtol",
    "atol": "atol",
    "adjoint": "adjoint",
    "hidden": "hidden",
    "sde": "sde",
    "path": "path",
    "ot_coupling": "ot_coupling",
    "p_uncond": "p_uncond",
    "net": "net",
}
TRAIN_FLAGS = {
    "steps": "steps",
    "batch": "batch_size",
    "lr": "lr",
    "optimizer": "optimizer",
    "weight_decay": "weight_decay",
    "warmup": "warmup_steps",
    "schedule": "schedule",
    "grad_clip": "grad_clip",
    "ema": "ema_decay",
    "eval_every": "eval_every",
    "eval_rows": "eval_rows",
    "eval_budget": "eval_budget",
    "log_every": "log_every",
    "checkpoint_every": "checkpoint_every",
    "seed": "seed",
    "precision": "precision",
    "compile": "compile",
}
RUN_FLAGS = {
    "model": "model",
    "data": "data",
    "n_train": "n_train",
    "n_eval": "n_eval",
    "standardize": "standardize",
    "label_column": "label_column",
    "levels": "levels",
    "image_space": "image_space",
}


def _parse_value(text: str) -> Any:
    """``--set`` values: JSON (numbers, booleans, lists), else a plain string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _key_value(text: str) -> tuple[str, Any]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key.strip(), _parse_value(value)


def _column(text: str) -> int | str:
    """``--label-column``: a 0-based index (an integer) or a CSV header name."""
    try:
        return int(text)
    except ValueError:
        return text


def _int_list(text: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 64,64,64, got {text!r}") from None


def _add_run_flags(t: argparse.ArgumentParser) -> None:
    from ..models import MODELS

    t.add_argument("--model", choices=sorted(MODELS), help="model family (default cnf)")
    t.add_argument(
        "--data",
        help="toy set name (e.g. 8gaussians); images: digits (sklearn's 8x8), mnist5k, a "
        "folder, .npz, IDX or 3-D/4-D .npy file; vectors: a .npy/.csv/.pt file, discrete "
        "when it holds integers (default 8gaussians)",
    )
    t.add_argument("--out", required=True, type=Path, help="run folder")
    t.add_argument("--config", type=Path, help="YAML/JSON file with the same keys as config.json")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument(
        "--n-train",
        type=int,
        help="training rows (default: 20000 of a toy set; the rest of a file or digits)",
    )
    t.add_argument(
        "--n-eval",
        type=int,
        help="held-out rows (default: 5000 of a toy set; 20%% of a file or digits)",
    )
    t.add_argument(
        "--standardize",
        action=argparse.BooleanOptionalAction,
        help="standardise each dimension of vectors (default on)",
    )
    t.add_argument(
        "--levels",
        type=int,
        help="levels K of discrete data, values 0..K-1 (default: the data's; 17 for digits, "
        "256 for 8-bit images and uint8 files); makes a file of floats discrete",
    )
    t.add_argument(
        "--image-space",
        choices=["centered", "logit"],
        help="model space of images: centered ([-1, 1], default) or logit (FFJORD)",
    )


def _add_optimisation_flags(t: argparse.ArgumentParser) -> None:
    o = t.add_argument_group("optimisation (TrainConfig)")
    o.add_argument("--steps", type=int, help="optimiser steps (default: the family's)")
    o.add_argument("--batch", type=int, help="global batch size (default: the family's)")
    o.add_argument("--lr", type=float, help="peak learning rate (default: the family's)")
    o.add_argument("--optimizer", choices=["adam", "adamw"])
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--warmup", type=int, help="linear warm-up steps")
    o.add_argument("--schedule", choices=["constant", "cosine"])
    o.add_argument("--grad-clip", type=float, help="gradient-norm clip (0: off)")
    o.add_argument("--ema", type=float, help="EMA decay of the weights (0: off)")
    o.add_argument("--eval-every", type=int, help="steps between held-out evaluations")
    o.add_argument(
        "--eval-rows", type=int, help="held-out rows of a periodic evaluation (default 1000)"
    )
    o.add_argument(
        "--eval-budget",
        type=float,
        help="largest fraction of the training time periodic evaluations take (default 0.1; "
        "0: no limit)",
    )
    o.add_argument("--log-every", type=int, help="steps between metrics.jsonl records")
    o.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    o.add_argument("--seed", type=int, help="seed of data, initialisation and noise")


def _add_model_flags(t: argparse.ArgumentParser) -> None:
    m = t.add_argument_group("model (family config keys)")
    m.add_argument(
        "--net",
        choices=["auto", "mlp", "unet"],
        help="network: auto (the U-Net for images, else the MLP), mlp (on images: "
        "flattened) or unet (images only)",
    )
    m.add_argument(
        "--trace",
        choices=["auto", "exact", "hutchinson"],
        help="divergence estimator (auto: exact for small dimensions)",
    )
    m.add_argument(
        "--adjoint", action=argparse.BooleanOptionalAction, help="gradients by the adjoint method"
    )
    m.add_argument("--hidden", type=_int_list, help="hidden widths, e.g. 64,64,64")
    m.add_argument(
        "--sde", choices=["vp", "ve", "subvp"], help="the SDE of --model sde (config key sde)"
    )
    m.add_argument("--path", choices=["ot", "vp", "ve"], help="probability path of --model fm")
    m.add_argument(
        "--ot-coupling",
        action=argparse.BooleanOptionalAction,
        help="minibatch optimal-transport pairs (--model fm)",
    )
    m.add_argument(
        "--set",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other model config key (value parsed as JSON)",
    )


def _add_label_flags(t: argparse.ArgumentParser) -> None:
    c = t.add_argument_group("labels (conditional models and classifiers)")
    c.add_argument(
        "--conditional",
        action="store_true",
        help="train a conditional diffusion-family model on labelled data (n_classes from "
        "the data; enables classifier-free guidance)",
    )
    c.add_argument("--p-uncond", type=float, help="probability of dropping the label (default 0.1)")
    c.add_argument(
        "--label-column",
        type=_column,
        help="the label column of a data file: 0-based index or CSV header name",
    )
    c.add_argument(
        "--like",
        type=Path,
        metavar="RUN",
        help="--model noisy-classifier: the diffusion run it will guide; copies its path, "
        "data, label column, sizes, seed and standardisation",
    )


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``train`` sub-parser."""
    t = sub.add_parser(
        "train",
        parents=[common],
        help="train a model; writes a run folder",
        description="Train a model on a toy set or a data file. Flags override "
        "--config; the final config is saved as OUT/config.json.",
    )
    _add_run_flags(t)
    _add_optimisation_flags(t)
    _add_model_flags(t)
    _add_label_flags(t)
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
