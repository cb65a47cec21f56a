"""``probpath``'s parser (one sub-parser per command module) and its entry point."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from .. import __version__
from .demo import add_parser as add_demo
from .evaluate import add_parser as add_eval
from .plot import add_parser as add_plot
from .sample import add_parser as add_sample
from .train import add_parser as add_train

__all__ = ["build_parser", "main"]

COMMANDS = (add_train, add_sample, add_eval, add_plot, add_demo)
"""Each command module's ``add_parser(subparsers, common)``, in the order of ``--help``."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``probpath``: each command module adds its sub-parser."""
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
    for add_parser in COMMANDS:
        add_parser(sub, common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``probpath`` with ``argv`` (default ``sys.argv[1:]``); returns the exit code."""
    from ..solvers import SolverError
    from ..train import NonFiniteLossError

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
