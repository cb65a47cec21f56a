"""Sampling memory does not grow with the number of steps (issue "Numbers you can trust", §3).

The probability-flow sampler keeps the two end states of its grid, not one per step; the
test measures the peak RSS of a 4000-step Euler run on a 256 x 256 state (1 GiB if every
state were kept) in a fresh process, against a bound of 256 MiB above the process's own
peak before the run (torch and the model)."""

import subprocess
import sys

import torch

from probpath.samplers import probability_flow

_SCRIPT = """
import resource, torch
from probpath.samplers import probability_flow
torch.set_num_threads(1)
x = torch.randn(256, 256)
probability_flow(lambda y, t: -y, x, torch.linspace(1.0, 0.5, 3), method="euler")  # warm-up
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
probability_flow(lambda y, t: -y, x, torch.linspace(1.0, 0.0, 4001), method="euler")
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before)
"""


def test_a_long_fixed_step_solve_keeps_two_states() -> None:
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True, timeout=300
    )
    grew_kib = int(out.stdout.strip())
    assert grew_kib < 256 * 1024, f"peak RSS grew by {grew_kib / 1024:.0f} MiB"


def test_the_callback_sees_every_step_and_the_result_is_the_same() -> None:
    x, ts = torch.randn(4, 3, dtype=torch.float64), torch.linspace(1.0, 0.0, 11)
    seen: list[torch.Tensor] = []
    ends, nfe = probability_flow(lambda y, t: -y, x, ts, method="rk4")
    with_cb, nfe_cb = probability_flow(
        lambda y, t: -y, x, ts, method="rk4", callback=lambda k, y: seen.append(y)
    )
    assert nfe == nfe_cb == 40 and len(seen) == 10
    torch.testing.assert_close(ends, with_cb, rtol=0, atol=0)
    torch.testing.assert_close(seen[-1], with_cb, rtol=0, atol=0)
