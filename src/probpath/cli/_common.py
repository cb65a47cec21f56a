"""What several ``probpath`` commands share: flag groups, loading a run, printing."""

from __future__ import annotations

import argparse
import contextlib
import json
from pathlib import Path
from typing import Any

from ..device import COMPILE_MODES, PRECISIONS, autocast, compile_networks, resolve_device
from ..train import LoadedRun, RunConfig, load_run

__all__ = [
    "EVAL_TITLE",
    "accelerated",
    "add_device_flags",
    "add_run_flags",
    "add_sampler_flags",
    "add_solver_flags",
    "emit",
    "load",
    "print_table",
    "sampling_kwargs",
    "solver_flags",
]

EVAL_TITLE = (
    "evaluation (NLL in nats of the data space, for discrete data a bound on -log P(x); "
    "samples vs held-out)"
)

SOLVER_FLAGS = {"solver": "method", "rtol": "rtol", "atol": "atol"}
"""The solver flags and the model-config (or sampler option) key each one sets."""


def add_solver_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("solver (model config keys method, rtol, atol)")
    g.add_argument("--solver", help="ODE method: dopri5, rk4, euler, midpoint, heun, bosh3")
    g.add_argument("--rtol", type=float, help="relative tolerance of adaptive solvers")
    g.add_argument("--atol", type=float, help="absolute tolerance of adaptive solvers")


def add_sampler_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sampler (models with several samplers, e.g. the diffusion family)")
    g.add_argument("--sampler", help="sampler name; the model lists those it accepts")
    budget = g.add_mutually_exclusive_group()
    budget.add_argument("--steps", type=int, help="sampler steps")
    budget.add_argument("--nfe", type=int, help="network evaluations (converted to steps)")


def add_device_flags(p: argparse.ArgumentParser, *, accelerate: bool = True) -> None:
    """``--device``; with ``accelerate``, ``--precision`` and ``--compile [MODE]`` (docs/gpu.md)."""
    g = p.add_argument_group("device (docs/gpu.md)")
    g.add_argument(
        "--device",
        default="auto",
        help="auto (a GPU when there is one), cpu, cuda or cuda:N (default auto)",
    )
    if not accelerate:
        return
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="autocast precision of the networks (default fp32); solver state, divergences "
        "and log-densities stay float32",
    )
    g.add_argument(
        "--compile",
        nargs="?",
        const="default",
        choices=COMPILE_MODES,
        metavar="MODE",
        help=f"torch.compile the networks; MODE one of {', '.join(COMPILE_MODES)} "
        "(default: default)",
    )


def accelerated(
    run: LoadedRun, args: argparse.Namespace
) -> contextlib.AbstractContextManager[object]:
    """The run's networks compiled if ``--compile`` was given, and the autocast context of
    ``--precision`` on the run's device, in which a command computes with its model."""
    if getattr(args, "compile", None) is not None:
        compile_networks(run.model, args.compile)
    return autocast(run.device, getattr(args, "precision", None) or "fp32")


def add_run_flags(p: argparse.ArgumentParser, *, n: int, n_help: str, weights: bool) -> None:
    """The run folder, ``--n`` and ``--seed``; with ``weights``, ``--no-ema`` and ``--json``."""
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--n", type=int, default=n, help=f"{n_help} (default {n})")
    p.add_argument("--seed", type=int, default=0)
    if weights:
        p.add_argument("--no-ema", action="store_true", help="use the raw, not the EMA, weights")
        p.add_argument("--json", action="store_true", help="print one JSON object")


def solver_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The solver flags given, by config key."""
    return {
        k: getattr(args, a) for a, k in SOLVER_FLAGS.items() if getattr(args, a, None) is not None
    }


def load(args: argparse.Namespace) -> tuple[LoadedRun, dict[str, Any]]:
    """The run with the solver flags that are keys of its model config applied; the other
    solver flags are returned as options for the sampler or ``log_prob`` (diffusion family).
    """
    device = resolve_device(args.device)  # a missing GPU is refused before any work
    flags = solver_flags(args)
    known = RunConfig.load(args.run).model_config
    run = load_run(
        args.run,
        ema=not args.no_ema,
        overrides={k: v for k, v in flags.items() if k in known},
        device=device,
    )
    return run, {k: v for k, v in flags.items() if k not in known}


def sampling_kwargs(model: Any, args: argparse.Namespace, solver: dict[str, Any]) -> Any:
    """``sampler``, ``steps`` and solver options for ``model.sample_with_nfe``.

    Generic over families: the names come from ``model.samplers``, the NFE-to-steps rule
    from ``model.steps_for_nfe`` (whose error says what an adaptive sampler takes instead)
    and the accepted solver options from ``model.sampler_options(name)``.
    """
    sampler, steps, nfe = (getattr(args, k, None) for k in ("sampler", "steps", "nfe"))
    names = getattr(model, "samplers", None)
    if names is None:
        if sampler is not None or steps is not None or nfe is not None:
            raise ValueError(
                f"model {type(model).__name__} has a single sampler: drop --sampler/--steps/--nfe"
            )
        if solver:
            raise ValueError(f"model {type(model).__name__} takes no option {', '.join(solver)}")
        return {}
    name = sampler if sampler is not None else model.default_sampler
    allowed = model.sampler_options(name)  # raises for an unknown name, listing the known
    extra = [k for k in solver if k not in allowed]
    if extra:
        raise ValueError(f"sampler {name!r} takes no solver option {', '.join(extra)}")
    kwargs: dict[str, Any] = {"sampler": name, **solver}
    if nfe is not None:
        if nfe < 1:
            raise ValueError(f"--nfe must be a positive number of evaluations, got {nfe}")
        kwargs["steps"] = model.steps_for_nfe(name, nfe, **solver)
    elif steps is not None:
        kwargs["steps"] = steps
    return kwargs


def print_table(title: str, rows: dict[str, Any]) -> None:
    width = max(len(k) for k in rows)
    print(title)
    for k, v in rows.items():
        text = f"{v:.4f}" if isinstance(v, float) else str(v)
        print(f"  {k:<{width}}  {text}")


def emit(args: argparse.Namespace, title: str, rows: dict[str, Any]) -> None:
    """One JSON object with ``--json``, else a table."""
    if getattr(args, "json", False):
        print(json.dumps(rows))
    else:
        print_table(title, rows)
