"""Held-out evaluation during training: periodic ones on a fixed subsample with the
model's cheap setting and within a time budget, the final one exact on every row; and a
step count that costs no memory up front.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap
import time

import torch
from torch import Tensor, nn

from probpath.train import TrainConfig, default_evaluate, train


class Recorder(nn.Module):
    """N(mu, I) in 2-D whose ``log_prob`` records the rows and the ``fast`` flag it got,
    and sleeps ``delay`` seconds per call (an expensive likelihood)."""

    def __init__(self, delay: float = 0.0) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(2, dtype=torch.float64))
        self.delay = delay
        self.calls: list[tuple[Tensor, bool]] = []

    def loss(self, x: Tensor, *, generator: torch.Generator | None = None):
        return 0.5 * (x - self.mu).pow(2).sum(-1).mean(), {}

    def log_prob(self, x: Tensor, *, fast: bool = False) -> Tensor:
        self.calls.append((x.clone(), fast))
        time.sleep(self.delay)
        return -0.5 * (x - self.mu).pow(2).sum(-1) - math.log(2 * math.pi)


def _data(n: int, seed: int) -> Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def _records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["split"] == "eval"]


def test_periodic_evaluations_take_a_fixed_subsample_fast_and_the_last_all_rows(tmp_path):
    held_out = _data(100, 1)
    cfg = TrainConfig(steps=12, batch_size=16, ema_decay=0.0, eval_every=4, eval_rows=10,
                      eval_budget=0.0, seed=3)  # fmt: skip
    model = Recorder()
    out = train(model, _data(64, 0), cfg, tmp_path, eval_data=held_out, progress=False)
    (a, fast_a), (b, fast_b), (last, fast_last) = model.calls
    assert fast_a and fast_b and not fast_last
    assert len(a) == 10 and torch.equal(a, b)  # the same rows each time
    assert len({tuple(r.tolist()) for r in a}) == 10  # drawn without replacement
    assert all(any(torch.equal(r, h) for h in held_out) for r in a)  # from the held-out rows
    assert torch.equal(last, held_out)
    recs = _records(tmp_path)
    assert [(r["step"], r["rows"], r["final"]) for r in recs] == [
        (4, 10, False), (8, 10, False), (12, 100, True),
    ]  # fmt: skip
    assert out.eval["nll"] == recs[-1]["eval_nll"]
    # the subsample depends on the seed only: another seed draws other rows
    other = Recorder()
    train(other, _data(64, 0), TrainConfig(**{**cfg.to_dict(), "seed": 4, "steps": 4}),
          tmp_path / "b", eval_data=held_out, progress=False)  # fmt: skip
    assert not torch.equal(other.calls[0][0], a)


def test_periodic_evaluation_keeps_within_its_time_budget(tmp_path):
    # Each evaluation sleeps 0.2 s; 20 steps of this model take milliseconds. With the
    # default budget (10% of the training time) only the first periodic evaluation runs
    # (nothing is known of its cost before it), then every later one would exceed it.
    cfg = TrainConfig(steps=20, batch_size=16, ema_decay=0.0, eval_every=1, eval_rows=5)
    model = Recorder(delay=0.2)
    train(model, _data(64, 0), cfg, tmp_path, eval_data=_data(50, 1), progress=False)
    assert [(r["step"], r["final"]) for r in _records(tmp_path)] == [(1, False), (20, True)]
    # without a budget (0), every eval_every steps
    cfg = TrainConfig(**{**cfg.to_dict(), "eval_budget": 0.0})
    train(Recorder(), _data(64, 0), cfg, tmp_path / "b", eval_data=_data(50, 1), progress=False)
    assert len(_records(tmp_path / "b")) == 20


def test_default_evaluate_reports_the_nll_of_the_data_space():
    # log_det = log|det dz/dx| of the map to model space: NLL_x = NLL_z - log_det.
    model, x = Recorder(), _data(30, 2)
    nll_z = default_evaluate(model, x)["nll"]
    nll_x = default_evaluate(model, x, log_det=-1.5, chunk=7)["nll"]  # chunks of 7 rows
    assert math.isclose(nll_x, nll_z + 1.5, rel_tol=1e-12)
    assert [len(c) for c, _ in model.calls[1:]] == [7, 7, 7, 7, 2]


HUGE_STEPS = textwrap.dedent(
    """
    import resource, signal, sys
    import torch
    from probpath.cli import main
    from probpath.train import distributed

    calls = 0
    forward = distributed.LossModule.forward

    def second_step_interrupts(self, *args, **kwargs):
        global calls
        calls += 1
        if calls == 2:  # Ctrl-C during step 2: the trainer finishes it and checkpoints
            signal.raise_signal(signal.SIGINT)
        return forward(self, *args, **kwargs)

    distributed.LossModule.forward = second_step_interrupts
    torch.set_num_threads(1)
    size = int(open("/proc/self/statm").read().split()[0]) * resource.getpagesize()
    # address space: what is mapped now plus 1 GiB; 10^9 steps of anything cost 4 GiB
    resource.setrlimit(resource.RLIMIT_AS, (size + 2**30, resource.RLIM_INFINITY))
    code = main(["train", "--out", sys.argv[1], "--steps", "1000000000", "--n-train", "64",
                 "--n-eval", "16", "--batch", "32", "--hidden", "8", "--quiet",
                 "--eval-every", "1", "--rtol", "1e-2", "--atol", "1e-2"])
    sys.exit(code)
    """
)


def test_a_huge_step_count_allocates_nothing_up_front(tmp_path):
    """``--steps 10**9`` builds the run and takes two steps within 1 GiB of address space
    more than the interpreter holds after its imports: nothing is sized by the step count
    (a float32 per step would be 4 GB)."""
    proc = subprocess.run(
        [sys.executable, "-c", HUGE_STEPS, str(tmp_path / "run")],
        capture_output=True,
        text=True,
        timeout=300,
        env={"MALLOC_ARENA_MAX": "2", **__import__("os").environ},
    )
    assert proc.returncode == 130, proc.stderr[-2000:]  # interrupted, as asked
    assert "interrupted after step 2" in proc.stdout, proc.stdout + proc.stderr[-2000:]
