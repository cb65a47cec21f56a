"""``probpath eval``: test NLL, bits/dim, entropy gap, sample quality and NFE of a run.

Discrete data (images, integer files) get the dequantized bound on -log P(x) in bits/dim
(``--k`` importance draws); images get the Fréchet distance of samples in a judge's
features with ``--judge RUN`` (a ``probpath train --model image-classifier`` run).
"""

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
        "eval", parents=[common], help="test NLL, bits/dim, entropy gap, sample quality, NFE"
    )
    add_run_flags(e, n=2000, n_help="test rows and samples", weights=True)
    e.add_argument(
        "--data", help="toy name, data file or images (default: the run's held-out rows)"
    )
    e.add_argument(
        "--nll",
        choices=["exact", "hutchinson"],
        help="trace of the PF-ODE likelihood of diffusion-family models (default: the "
        "model's; exact for small dimensions)",
    )
    e.add_argument(
        "--probes",
        type=int,
        help="Hutchinson probes per row, averaged (--nll hutchinson, or a Hutchinson CNF; "
        "default 1)",
    )
    e.add_argument(
        "--k",
        type=int,
        default=1,
        help="discrete data: dequantization draws per example (1: the uniform bound; more: "
        "the tighter importance-weighted bound)",
    )
    j = e.add_argument_group("image samples (see docs/images.md)")
    j.add_argument(
        "--judge",
        metavar="RUN",
        help="an image-classifier run on the same images: Fréchet distance of samples in "
        "its features (not the Inception FID), and guided-sample accuracy",
    )
    j.add_argument(
        "--scale", type=float, default=1.0, help="guidance scale of --judge's accuracy (default 1)"
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
        if args.data or args.judge:
            raise ValueError(
                "--data, --judge: a classifier run is evaluated on its own held-out rows"
            )
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
    if args.probes is not None:
        if "n_probes" not in takes or args.nll == "exact" or args.probes < 1:
            raise ValueError(
                "--probes N (N >= 1) averages N probes of a Hutchinson trace (--nll "
                f"hutchinson, or a CNF trained with it); {type(model).__name__}'s "
                f"log_prob takes {'none' if 'n_probes' not in takes else 'none with --nll exact'}"
            )
        lp_kwargs["n_probes"] = args.probes
    if "generator" in takes and (args.nll == "hutchinson" or args.probes is not None):
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
            k=args.k,
            judge=args.judge,
            scale=args.scale,
        )
    emit(args, EVAL_TITLE, {"run": str(args.run), **rows})
    if loaded.kind == "images" and args.judge is None:
        print(
            "probpath: note: image samples are scored with --judge RUN (train one with "
            f"probpath train --model image-classifier --data {loaded.config.data})",
            file=sys.stderr,
        )
    return 0
