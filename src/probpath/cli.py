"""The ``probpath`` command line: ``train``, ``sample``, ``eval``, ``plot`` and ``demo``.

Every family in ``probpath.models.MODELS`` works without changes here: ``--model``
takes any registered name, the common flags (``--trace``, ``--solver``, ``--rtol`` ...)
map to the family's config keys, and ``--set key=value`` reaches any other key.
User mistakes end with one line ``probpath: error: ...`` and a non-zero exit code.

Example:
    >>> main(["--version"])  # doctest: +ELLIPSIS
    probpath 0...
    0
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from . import __version__

__all__ = ["build_parser", "main", "merge_config"]

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
    "log_every": "log_every",
    "checkpoint_every": "checkpoint_every",
    "seed": "seed",
}
RUN_FLAGS = {
    "model": "model",
    "data": "data",
    "n_train": "n_train",
    "n_eval": "n_eval",
    "standardize": "standardize",
    "label_column": "label_column",
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


def _add_solver_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("solver (model config keys method, rtol, atol)")
    g.add_argument("--solver", help="ODE method: dopri5, rk4, euler, midpoint, heun, bosh3")
    g.add_argument("--rtol", type=float, help="relative tolerance of adaptive solvers")
    g.add_argument("--atol", type=float, help="absolute tolerance of adaptive solvers")


def _add_sampler_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampler (models with several samplers, e.g. the diffusion family)")
    g.add_argument("--sampler", help="sampler name; the model lists those it accepts")
    budget = g.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="sampler steps")
    budget.add_argument("--nfe", type=int, help="network evaluations (converted to steps)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``probpath`` (one sub-parser per command)."""
    from .models import MODELS

    parser = argparse.ArgumentParser(
        prog="probpath",
        description="Continuous-time generative models: train, sample, evaluate, plot.",
    )
    parser.add_argument("--version", action="version", version=f"probpath {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--threads",
        type=int,
        help="CPU threads for torch (1 is often fastest for small models on a busy machine)",
    )

    t = sub.add_parser(
        "train",
        parents=[common],
        help="train a model; writes a run folder",
        description="Train a model on a toy set or a data file. Flags override "
        "--config; the final config is saved as OUT/config.json.",
    )
    t.add_argument("--model", choices=sorted(MODELS), help="model family (default cnf)")
    t.add_argument(
        "--data",
        help="toy set name (e.g. 8gaussians), digits (sklearn's 8x8 images) or data file "
        "(default 8gaussians)",
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
        help="standardise each dimension (default on)",
    )
    o = t.add_argument_group("optimisation (TrainConfig)")
    o.add_argument("--steps", type=int, help="optimiser steps (default 1000)")
    o.add_argument("--batch", type=int, help="global batch size (default 256)")
    o.add_argument("--lr", type=float, help="peak learning rate (default 1e-3)")
    o.add_argument("--optimizer", choices=["adam", "adamw"])
    o.add_argument("--weight-decay", type=float)
    o.add_argument("--warmup", type=int, help="linear warm-up steps")
    o.add_argument("--schedule", choices=["constant", "cosine"])
    o.add_argument("--grad-clip", type=float, help="gradient-norm clip (0: off)")
    o.add_argument("--ema", type=float, help="EMA decay of the weights (0: off)")
    o.add_argument("--eval-every", type=int, help="steps between held-out evaluations")
    o.add_argument("--log-every", type=int, help="steps between metrics.jsonl records")
    o.add_argument("--checkpoint-every", type=int, help="steps between checkpoints")
    o.add_argument("--seed", type=int, help="seed of data, initialisation and noise")
    m = t.add_argument_group("model (family config keys)")
    m.add_argument("--trace", choices=["exact", "hutchinson"], help="divergence estimator")
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
    m.add_argument(
        "--set",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other model config key (value parsed as JSON)",
    )
    _add_solver_flags(t)
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    t.set_defaults(func=_cmd("train"))

    s = sub.add_parser(
        "sample", parents=[common], help="draw samples from a trained run into a .npy file"
    )
    s.add_argument("run", type=Path, help="run folder")
    s.add_argument("--n", type=int, default=1000, help="number of samples (default 1000)")
    s.add_argument("--out", type=Path, default=Path("samples.npy"), help="output .npy file")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--no-ema", action="store_true", help="use the raw, not the EMA, weights")
    s.add_argument("--json", action="store_true", help="print one JSON object")
    gd = s.add_argument_group("guidance (diffusion family; see docs/guidance.md)")
    gd.add_argument("--label", help="sample this class (a label of the run's data)")
    gd.add_argument(
        "--guidance",
        choices=["cfg", "classifier"],
        help="classifier-free (a --conditional run) or classifier guidance (default: "
        "classifier with --classifier, else cfg)",
    )
    gd.add_argument("--scale", type=float, help="guidance scale gamma (default 1: p(x | y))")
    gd.add_argument(
        "--classifier", type=Path, metavar="RUN", help="a noisy-classifier run on the same path"
    )
    _add_sampler_flags(s)
    _add_solver_flags(s)
    s.set_defaults(func=_cmd("sample"))

    e = sub.add_parser(
        "eval", parents=[common], help="test NLL, bits/dim, entropy gap, energy distance, NFE"
    )
    e.add_argument("run", type=Path, help="run folder")
    e.add_argument("--data", help="toy name or data file (default: the run's held-out rows)")
    e.add_argument("--n", type=int, default=2000, help="test rows and samples (default 2000)")
    e.add_argument("--seed", type=int, default=0)
    e.add_argument("--no-ema", action="store_true", help="use the raw, not the EMA, weights")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument(
        "--nll",
        choices=["exact", "hutchinson"],
        help="trace of the PF-ODE likelihood of diffusion-family models (default exact)",
    )
    _add_sampler_flags(e)
    _add_solver_flags(e)
    e.set_defaults(func=_cmd("eval"))

    p = sub.add_parser(
        "plot", parents=[common], help="samples, density, trajectories, training curves (PNGs)"
    )
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--n", type=int, default=2000, help="points to plot (default 2000)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd("plot"))

    d = sub.add_parser(
        "demo", parents=[common], help="train a CNF on 8gaussians, plot it, print its metrics"
    )
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder")
    d.add_argument("--steps", type=int, default=1500, help="training steps (default 1500)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=_cmd("demo"))
    return parser


def _cmd(name: str) -> Any:
    def run(args: argparse.Namespace) -> int:
        from . import _cli_commands

        result: int = getattr(_cli_commands, f"cmd_{name}")(args)
        return result

    return run


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``probpath`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    from .solvers import SolverError
    from .train import NonFiniteLossError

    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help, --version and usage errors
        return int(e.code or 0) if not isinstance(e.code, str) else 2
    try:
        if args.threads is not None:
            if args.threads < 1:
                raise ValueError(f"--threads must be at least 1, got {args.threads}")
            import torch

            torch.set_num_threads(args.threads)
        return int(args.func(args))
    except KeyboardInterrupt:
        print("probpath: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, ImportError, NonFiniteLossError, SolverError) as e:
        print(f"probpath: error: {e}", file=sys.stderr)
        return 1


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


def merge_config(args: argparse.Namespace) -> Any:
    """``RunConfig`` from defaults (the family's ``train_defaults`` over ``TrainConfig``'s),
    then ``--config FILE``, then the flags given."""
    from .models import MODELS
    from .train.run import RunConfig

    base: dict[str, Any] = {}
    if getattr(args, "config", None) is not None:
        if not args.config.is_file():
            raise FileNotFoundError(f"config file {args.config} does not exist")
        text = args.config.read_text()
        try:
            base = (json.loads(text) if args.config.suffix == ".json" else _load_yaml(text)) or {}
        except ValueError as e:  # json.JSONDecodeError and yaml.YAMLError (see _load_yaml)
            raise ValueError(f"cannot read config file {args.config}: {e}") from None
        if not isinstance(base, dict):
            raise ValueError(f"{args.config} must hold a mapping of config keys")
    run = {k: getattr(args, f) for f, k in RUN_FLAGS.items() if getattr(args, f) is not None}
    # A family may carry training defaults (``train_defaults``) that the file and flags override.
    family = MODELS.get(run.get("model", base.get("model", RunConfig.model)))
    base = {**base, "train": {**getattr(family, "train_defaults", {}), **(base.get("train") or {})}}
    cfg = RunConfig.from_dict(base)
    train = {k: getattr(args, f) for f, k in TRAIN_FLAGS.items() if getattr(args, f) is not None}
    model = {k: getattr(args, f) for f, k in MODEL_FLAGS.items() if getattr(args, f) is not None}
    model.update(dict(args.set))
    return replace(
        cfg,
        **run,
        train=replace(cfg.train, **train),
        model_config={**cfg.model_config, **model},
    )


if __name__ == "__main__":
    sys.exit(main())
