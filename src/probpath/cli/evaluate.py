"""``probpath eval``: test NLL, bits/dim, entropy gap, energy distance and NFE of a run."""

from __future__ import annotations

import argparse
import inspect
import sys
from typing import Any

import torch

from ..train import evaluate_classifier, evaluate_run
from ._common import (
    EVAL_TITLE,
    accelerated,
    add_device_flags,
    add_run_flags,
    add_sampler_flags,
    add_solver_flags,
    emit,
    load,
    sampling_kwargs,
)

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``eval`` sub-parser."""
    e = sub.add_parser(
        "eval", parents=[common], help="test NLL, bits/dim, entropy gap, energy distance, NFE"
    )
    add_run_flags(e, n=2000, n_help="test rows and samples", weights=True)
    e.add_argument("--data", help="toy name or data file (default: the run's held-out rows)")
    e.add_argument(
        "--nll",
        choices=["exact", "hutchinson"],
        help="trace of the PF-ODE likelihood of diffusion-family models (default exact)",
    )
    add_sampler_flags(e)
    add_solver_flags(e)
    add_device_flags(e)
    e.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``probpath eval``."""
    loaded, solver = load(args)
    model: Any = loaded.model
    if not hasattr(model, "log_prob"):
        if args.data:
            raise ValueError("--data: a classifier run is evaluated on its own held-out rows")
        with accelerated(loaded, args):
            scores = evaluate_classifier(loaded, n=args.n)
        emit(args, "evaluation (held-out rows)", {"run": str(args.run), **scores})
        return 0
    takes = inspect.signature(model.log_prob).parameters
    lp_kwargs: dict[str, Any] = {k: v for k, v in solver.items() if k in takes}
    if args.nll is not None:
        if "trace" not in takes:
            raise ValueError(f"--nll applies to the diffusion family, not {type(model).__name__}")
        lp_kwargs["trace"] = args.nll
        if args.nll == "hutchinson":
            lp_kwargs["generator"] = torch.Generator(loaded.device).manual_seed(args.seed)
    sampling = sampling_kwargs(model, args, {k: v for k, v in solver.items() if k not in takes})
    with accelerated(loaded, args):
        rows = evaluate_run(
            loaded,
            data=args.data,
            n=args.n,
            seed=args.seed,
            log_prob_kwargs=lp_kwargs,
            sampling=sampling,
            progress=sys.stderr.isatty(),
        )
    emit(args, EVAL_TITLE, {"run": str(args.run), **rows})
    return 0
