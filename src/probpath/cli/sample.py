"""``probpath sample``: samples of a run (optionally guided towards a label) into ``.npy``.

Samples are in data space: floats for continuous rows, integer levels for discrete data
(images as uint8 (N, C, H, W), with a PNG grid of them beside the ``.npy``)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..models import DiffusionModel, NoisyClassifier
from ..train import LoadedRun, load_run
from ._common import (
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
    """The ``sample`` sub-parser."""
    s = sub.add_parser(
        "sample", parents=[common], help="draw samples from a trained run into a .npy file"
    )
    add_run_flags(s, n=1000, n_help="number of samples", weights=True)
    s.add_argument(
        "--out",
        type=Path,
        default=Path("samples.npy"),
        help="output .npy file (an image run also writes the grid OUT.png)",
    )
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
    add_sampler_flags(s)
    add_solver_flags(s)
    add_device_flags(s)
    s.set_defaults(func=run)


def _label_index(label: str, classes: tuple[str, ...], run: Path) -> int:
    """The index of ``label`` among a run's class names (its data's labels)."""
    if label not in classes:
        shown = ", ".join(classes[:20]) + (" ..." if len(classes) > 20 else "")
        raise ValueError(f"label {label!r} is not a class of {run}; its classes: {shown}")
    return classes.index(label)


def _classifier(
    run: LoadedRun, args: argparse.Namespace
) -> tuple[NoisyClassifier, tuple[str, ...]]:
    """The ``--classifier`` run's model and class names, checked to be a noisy classifier
    reading ``run``'s space."""
    if args.classifier is None:
        raise ValueError(
            "--guidance classifier needs --classifier RUN (train one with probpath train "
            f"--model noisy-classifier --like {args.run})"
        )
    clf = load_run(args.classifier, ema=not args.no_ema, device=run.device)
    if not isinstance(clf.model, NoisyClassifier):
        raise ValueError(f"--classifier {args.classifier} is a {clf.config.model} run")
    if (clf.standardizer, clf.dequantizer) != (run.standardizer, run.dequantizer):
        raise ValueError(
            f"--classifier {args.classifier} reads data standardised differently from "
            f"{args.run}; train it with --like {args.run}"
        )
    return clf.model, clf.classes


def _guided(run: LoadedRun, args: argparse.Namespace) -> tuple[Any, dict[str, Any]]:
    """The model ``probpath sample`` draws from: the run's, or its guided view for
    ``--label`` (``--guidance cfg`` or ``classifier`` with ``--classifier RUN``)."""
    guidance_flags = {
        "--guidance": args.guidance,
        "--scale": args.scale,
        "--classifier": args.classifier,
    }
    if args.label is None:
        given = [k for k, v in guidance_flags.items() if v is not None]
        if given:
            raise ValueError(f"{', '.join(given)} guide towards a class: add --label")
        return run.model, {}
    from ..guidance import guide

    if not isinstance(run.model, DiffusionModel):
        raise ValueError(f"--label guides the diffusion family, not a {run.config.model} run")
    method = args.guidance or ("classifier" if args.classifier is not None else "cfg")
    scale = 1.0 if args.scale is None else args.scale
    classifier: NoisyClassifier | None = None
    classes, source = run.classes, args.run
    if method == "classifier":
        classifier, classes = _classifier(run, args)
        source = args.classifier
    elif args.classifier is not None:
        raise ValueError("--classifier belongs to --guidance classifier")
    elif not run.classes:
        raise ValueError(
            f"{args.run} is unconditional: classifier-free guidance needs a run trained with "
            "--conditional; or use --guidance classifier --classifier RUN"
        )
    y = _label_index(args.label, classes, source)
    try:
        model = guide(run.model, y, scale, method=method, classifier=classifier)
    except ValueError as e:
        if classifier is None or "path" not in str(e):
            raise
        raise ValueError(
            f"{e}; from the command line: train it with probpath train --model "
            f"noisy-classifier --like {args.run}"
        ) from None
    return model, {"label": args.label, "guidance": method, "scale": scale}


def run(args: argparse.Namespace) -> int:
    """``probpath sample``."""
    if args.n < 1:
        raise ValueError(f"--n must be positive, got {args.n}")
    loaded, solver = load(args)
    model, guided = _guided(loaded, args)
    sampling = sampling_kwargs(model, args, solver)
    with accelerated(loaded, args):
        t0 = time.perf_counter()
        progress = sys.stderr.isatty()
        x, nfe = loaded.sample(args.n, seed=args.seed, model=model, progress=progress, **sampling)
        seconds = time.perf_counter() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.save(args.out, x.numpy(), allow_pickle=False)
    rows = {
        "run": str(args.run),
        "step": loaded.step,
        "n": args.n,
        "dim": int(x[0].numel()),
        **guided,
        **({"sampler": sampling["sampler"]} if "sampler" in sampling else {}),
        "nfe": nfe,
        "seconds": round(seconds, 3),
        "out": str(args.out),
    }
    if loaded.kind == "images":
        from ..plots import plot_image_grid  # matplotlib: imported when a plot is drawn

        top = int(loaded.config.levels or 256) - 1
        png = plot_image_grid(x, args.out.with_suffix(".png"), vmin=0, vmax=top)
        rows.update(shape=list(x.shape[1:]), levels=loaded.config.levels, png=str(png))
    emit(args, "samples", rows)
    return 0
