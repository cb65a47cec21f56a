"""``probpath plot``: the PNGs of a run (samples, density, trajectories, training curves)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..device import resolve_device
from ..train import load_run, plot_run
from ._common import add_device_flags, add_run_flags

__all__ = ["add_parser", "run"]


def add_parser(sub: Any, common: argparse.ArgumentParser) -> None:
    """The ``plot`` sub-parser."""
    p = sub.add_parser(
        "plot", parents=[common], help="samples, density, trajectories, training curves (PNGs)"
    )
    add_run_flags(p, n=2000, n_help="points to plot", weights=False)
    add_device_flags(p, accelerate=False)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """``probpath plot``: writes the PNGs into the run folder and prints their paths."""
    device = resolve_device(args.device)  # a missing GPU is refused before any work
    for path in plot_run(
        load_run(args.run, device=device),
        n=args.n,
        seed=args.seed,
        progress=sys.stderr.isatty(),
    ):
        print(path)
    return 0
