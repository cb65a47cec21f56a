"""``probpath demo``: train a CNF on 8gaussians, plot it and print its evaluation."""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..train import (
    RunConfig,
    TrainConfig,
    evaluate_run,
    fit,
    list_checkpoints,
    load_run,
    plot_run,
)
from ..train.distributed import local_device
from ._common import EVAL_TITLE, add_device_flags, print_table
from .train import print_fit

__all__ = ["add_parser", "demo_config", "run"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``demo`` sub-parser."""
    d = sub.add_parser(
        "demo", parents=[common], help="train a CNF on 8gaussians, plot it, print its metrics"
    )
    d.add_argument("--out", type=Path, default=Path("runs/demo"), help="run folder")
    d.add_argument("--steps", type=int, default=1500, help="training steps (default 1500)")
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    add_device_flags(d, accelerate=False)
    d.set_defaults(func=run)


def demo_config(steps: int) -> RunConfig:
    """The demo's run: the CNF family's defaults on 8gaussians, ``steps`` steps."""
    from ..models import CNF

    return RunConfig(
        model="cnf",
        model_config={
            "hidden": [64, 64, 64],
            "trace": "exact",
            "method": "dopri5",
            "rtol": 1e-5,
            "atol": 1e-5,
        },
        data="8gaussians",
        n_train=20_000,
        n_eval=2_000,
        train=TrainConfig(
            **{**CNF.train_defaults, "steps": steps},
            eval_every=100,
            log_every=25,
            checkpoint_every=250,
        ),
    )


def run(args: argparse.Namespace) -> int:
    """``probpath demo``: running it again after an interruption resumes the run."""
    device = local_device(args.device)
    resume = bool(list_checkpoints(args.out / "checkpoints"))
    if resume:
        saved = RunConfig.load(args.out)
        cfg = replace(saved, train=replace(saved.train, steps=args.steps))
    else:
        cfg = demo_config(args.steps)
    print_fit(fit(cfg, args.out, resume=resume, progress=not args.quiet, device=device))
    loaded = load_run(args.out, device=device)
    for path in plot_run(loaded, progress=not args.quiet):
        print(path)
    print_table(EVAL_TITLE, {"run": str(args.out), **evaluate_run(loaded, progress=not args.quiet)})
    return 0
