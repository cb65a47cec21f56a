"""The flags of ``probpath train``: run, optimisation, model and label groups, and the
config key each named flag sets (:func:`probpath.cli.train.merge_config` reads them)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["MODEL_FLAGS", "RUN_FLAGS", "TRAIN_FLAGS", "add_train_flags"]

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


def add_train_flags(t: argparse.ArgumentParser) -> None:
    """The run, optimisation, model and label flags of the ``train`` sub-parser."""
    _add_run_flags(t)
    _add_optimisation_flags(t)
    _add_model_flags(t)
    _add_label_flags(t)
