"""Likelihoods that are not trained on hold memory bounded by a chunk of rows, whatever the
number of solver steps: ``probpath plot``'s 100 x 100 density grid of a diffusion-family
run and of a CNF, measured as the peak resident memory of a fresh process.

The bound comes from the sizes involved. One evaluation of the augmented PF-ODE field on
a chunk of 2048 rows holds the MLP's activations and their vector-Jacobian products,
about ``chunk x (2 + sum of widths) x 8 tensors x 4 bytes`` (well under 1 MiB for widths
(16, 16)), and dopri5 keeps 7 stages of the (2048, 2) state; the figures are 500 x 500
pixel RGBA canvases (1 MiB each). Allowing 64 MiB above the process's peak after its
imports and a warm-up drawing the same figures of analytic data covers these many times
over, while a graph
kept across the solve grows with NFE x grid rows (measured: hundreds of MiB for the
untrained VP run here when ``plot`` kept it, 3.6 GiB at the 4 GiB limit). The process
may map 1 GiB more than after the warm-up, so such a regression fails at once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from probpath.cli import main

MIB = 2**20
BOUND = 64 * MIB

PEAK_OF_PLOT = textwrap.dedent(
    """
    import resource, sys
    import torch
    from probpath.train import load_run, plot_run

    from probpath import plots

    torch.set_num_threads(1)
    run = load_run(sys.argv[1])
    # warm-up without the model: matplotlib, its fonts and the same figures
    out = run.run_dir / "warm-up"
    x = torch.randn(200, 2)
    plots.plot_samples(x, x, out / "s.png")
    plots.plot_density(lambda p: -p.pow(2).sum(-1), (-3, 3, -3, 3), out / "d.png", resolution=100)
    plots.plot_trajectories(torch.randn(50, 200, 2), out / "t.png")
    plots.plot_training_curves(run.run_dir / "metrics.jsonl", out / "c.png")
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB, the peak so far
    # a graph kept across the solve then fails fast instead of filling the machine
    size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, resource.RLIM_INFINITY))
    plot_run(run, n=200)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(before * 1024, after * 1024)
    """
)


def _peak_increase(run) -> int:
    proc = subprocess.run(
        [sys.executable, "-c", PEAK_OF_PLOT, str(run)],
        capture_output=True,
        text=True,
        timeout=600,
        env={"MALLOC_ARENA_MAX": "2", **os.environ},
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout
    before, after = map(int, proc.stdout.split())
    return after - before


@pytest.mark.parametrize(
    "flags",
    [
        ["--model", "sde", "--sde", "vp"],  # PF-ODE likelihood of a diffusion model
        ["--model", "cnf", "--rtol", "1e-5", "--atol", "1e-5"],
    ],
    ids=["sde-vp", "cnf"],
)
def test_plot_density_memory_is_bounded_by_a_chunk(tmp_path, flags):
    run = tmp_path / "run"
    argv = ["train", "--out", str(run), "--threads", "1", "--n-train", "64", "--n-eval", "200"]
    argv += ["--batch", "32", "--hidden", "16,16", "--steps", "2", "--quiet", *flags]
    assert main(argv) == 0
    increase = _peak_increase(run)
    assert increase < BOUND, f"plot took {increase / MIB:.0f} MiB more than its warm-up"
