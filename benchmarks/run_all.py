"""Run the benchmarks: a quick smoke subset by default, every benchmark with ``--full``.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        .venv/bin/python -m benchmarks.run_all [--full]          # or: make bench

Default (``QUICK``): each benchmark that has a ``--quick`` mode, in that mode (few rounds,
short training; results go to ``benchmarks/results/NAME_quick.json``, never over the
documented numbers). It checks that the benchmarks run, not what they measure.

``--full`` (``FULL``): every benchmark at the settings behind the numbers in
docs/benchmarks.md (and the model pages it links); hours on a 2-core machine.
``gpu_check`` runs only where CUDA is available. Not here: the CLI runs of the CNF tables
(``probpath train``/``eval``, commands in docs/benchmarks.md), the ``--compare-with``
checkout of bench_sampler_overhead, and the figure scripts ``make_*.py``.

Each command is printed before it runs; the exit status is 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import torch

ROOT = Path(__file__).resolve().parents[1]
ALLOCATOR = {"MALLOC_MMAP_THRESHOLD_": "4294967296", "MALLOC_TRIM_THRESHOLD_": "4294967296"}


class Run(NamedTuple):
    """``python -m benchmarks.<script> <args>``, its stdout kept in ``out`` if given."""

    script: str
    args: tuple[str, ...] = ()
    out: str | None = None
    cuda: bool = False


QUICK = (
    Run("bench_ode", ("--quick",)),
    Run("bench_sde", ("--quick",)),
    Run("bench_adjoint", ("--quick",)),
    Run("bench_cnf", ("--quick",)),
    Run("bench_cnf_trace", ("--quick",)),
    Run("bench_fm", ("--quick",)),
    Run("bench_ddpm", ("--quick",)),
    Run("bench_sde_samplers", ("--quick",)),
    Run("bench_guidance", ("--quick",)),
    Run("bench_unet", ("--quick",)),
    Run("gpu_check", ("--device", "cpu", "--quick")),
)

CURVE = ("--split", "test", "--curve", "10", "--curve-seeds", "100", "--threads", "1")
FULL = (
    Run("bench_ode"),
    Run("bench_sde"),
    Run("bench_adjoint"),
    Run("bench_cnf", ("--threads", "1")),
    Run("bench_cnf", ("--budget", "60", "--skip-speed", "--threads", "1")),
    Run("bench_cnf", ("--budget", "120", "--skip-speed", "--threads", "1")),
    Run("bench_cnf_trace"),
    Run("bench_fm"),
    Run("bench_ddpm"),
    Run("bench_ddpm", ("--hidden", "64,64,64")),
    Run("bench_sde_samplers"),
    Run("bench_sde_samplers", ("--peers-only", "64,64,64", "--train-steps", "20000")),
    Run("bench_guidance"),
    Run("bench_unet"),
    Run("bench_sampler_overhead", ("--tricks", "--repeats", "21")),
    Run("bench_precision"),
    Run("bench_ebm_langevin"),
    Run("bench_defaults", (*CURVE, "--dims", "2", "--name", "defaults_d2")),
    Run("bench_defaults", (*CURVE, "--dims", "5", "--name", "defaults_d5")),
    Run("bench_images", ("--data", "digits", "--threads", "1")),
    Run(
        "bench_images",
        (
            "--data",
            "mnist5k",
            "--families",
            "fm",
            "--threads",
            "1",
            "--flags",
            "--conditional --steps 1000",
            "--eval-n",
            "200",
        ),
    ),
    Run("bench_images", ("--nfe-vs", "runs/bench_images/digits/fm", "--n", "64", "--threads", "1")),
    Run("gpu_check", out="benchmarks/results/gpu_check.json", cuda=True),
)


def command(run: Run) -> list[str]:
    """The command line of one run, with this interpreter."""
    return [sys.executable, "-m", f"benchmarks.{run.script}", *run.args]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="every benchmark, documented settings")
    args = parser.parse_args(argv)
    env = {**ALLOCATOR, **os.environ}
    failed: list[str] = []
    t0 = time.perf_counter()
    for run in FULL if args.full else QUICK:
        cmd = command(run)
        shown = "python " + shlex.join(cmd[1:]) + (f" > {run.out}" if run.out else "")
        if run.cuda and not torch.cuda.is_available():
            print(f"skipped (no CUDA): {shown}", flush=True)
            continue
        print(f"$ {shown}", flush=True)
        start = time.perf_counter()
        if run.out:
            with open(ROOT / run.out, "w") as out:
                code = subprocess.run(cmd, cwd=ROOT, env=env, stdout=out).returncode
        else:
            code = subprocess.run(cmd, cwd=ROOT, env=env).returncode
        print(f"# exit {code} after {time.perf_counter() - start:.0f} s", flush=True)
        if code:
            failed.append(shown)
    print(f"{len(failed)} failed, {time.perf_counter() - t0:.0f} s in all", flush=True)
    for shown in failed:
        print(f"FAILED: {shown}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
