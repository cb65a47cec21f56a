"""Held-out evaluation under torchrun: each rank evaluates its shard, with no collective
inside, and the row-weighted means are combined once (probpath.train.distributed).

The evaluation solves one ODE per row with an adaptive solver, dy/dt = -k y from y0 to
t = 1, whose exact end is y0 exp(-k). Rank 0's rows have k = 1 (a few steps), rank 1's
k = 40 (many): the ranks take different numbers of solver steps, the situation in which a
collective inside the solve would hang. The scores must equal the single-process ones.
"""

from __future__ import annotations

import json
import math
import sys
import textwrap

import torch
from _ranks import run_ranks  # tests/train/_ranks.py (pytest puts this folder on sys.path)

from probpath.train.distributed import DistInfo, mean_over_ranks, shard

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch
    from torch import nn
    from probpath.solvers import odeint
    from probpath.train import TrainConfig, train

    class Mean(nn.Module):  # Gaussian NLL of a learnt mean: log_prob is per-row exact
        def __init__(self):
            super().__init__()
            self.mu = nn.Parameter(torch.zeros(2, dtype=torch.float64))
            self.config = {}

        def loss(self, x, *, generator=None):
            return -self.log_prob(x).mean(), {}

        def log_prob(self, x):
            return -0.5 * (x - self.mu).pow(2).sum(-1)

    def run(out_dir):
        rank = os.environ.get("RANK", "single")
        nfe = []

        def evaluate(model, rows):  # a shard of rows (y0, k)
            y0, k = rows[:, 0], rows[:, 1]
            calls = [0]

            def f(t, y):
                calls[0] += 1
                return -k * y

            ts = torch.tensor([0.0, 1.0], dtype=torch.float64)
            y1 = odeint(f, y0, ts, method="dopri5", rtol=1e-9, atol=1e-12)[-1]
            nfe.append(calls[0])
            nll = -model.log_prob(rows).mean().detach()
            return {"nll": float(nll), "y1": float(y1.mean())}

        g = torch.Generator().manual_seed(0)
        data = torch.randn(32, 2, generator=g, dtype=torch.float64)
        held = torch.stack([1.0 + torch.rand(7, generator=g, dtype=torch.float64),
                            torch.tensor([1.0] * 4 + [40.0] * 3, dtype=torch.float64)], 1)
        cfg = TrainConfig(steps=4, batch_size=8, lr=0.1, ema_decay=0.0, eval_every=2,
                          eval_rows=5, eval_budget=0.0, log_every=2, checkpoint_every=4)
        out = train(Mean(), data, cfg, os.path.join(out_dir, f"run_{rank}"), progress=False,
                    eval_data=held, evaluate=evaluate)
        with open(os.path.join(out_dir, f"eval_{rank}.json"), "w") as f:
            json.dump({"eval": out.eval, "nfe": nfe, "exact": float(
                (held[:, 0] * torch.exp(-held[:, 1])).mean())}, f)

    if __name__ == "__main__":
        run(sys.argv[1])
        os._exit(0)  # skip gloo's interpreter teardown (see test_ddp.py)
    """
)


def test_sharded_evaluation_equals_the_single_process_one(tmp_path):
    script = tmp_path / "eval_script.py"
    script.write_text(SCRIPT)
    run_ranks(script, str(tmp_path))
    sys.path.insert(0, str(tmp_path))
    try:
        import eval_script

        eval_script.run(str(tmp_path))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("eval_script", None)
    r0, r1, one = (json.loads((tmp_path / f"eval_{r}.json").read_text()) for r in (0, 1, "single"))
    # Periodic (5 rows: 3 + 2) and final (7 rows: 4 + 3) evaluations; rank 1's final shard
    # holds the k = 40 rows, so the ranks' solves took different numbers of steps.
    assert len(r0["nfe"]) == len(r1["nfe"]) == 2
    assert r1["nfe"][-1] > 2 * r0["nfe"][-1]
    assert r0["eval"] == r1["eval"]  # every rank gets the combined scores
    # The NLL is a per-row closed form: sharding changes only the float64 summation order
    # (and DDP's averaged gradients, ~1e-16 per step, as in test_ddp.py).
    assert math.isclose(r0["eval"]["nll"], one["eval"]["nll"], rel_tol=1e-12)
    # y1: each solve is accurate to its tolerance (rtol 1e-9) whatever the batch it is in.
    assert math.isclose(r0["eval"]["y1"], one["exact"], rel_tol=1e-7)
    assert math.isclose(one["eval"]["y1"], one["exact"], rel_tol=1e-7)


def test_shards_cover_the_rows_and_means_combine():
    for n in (0, 1, 5, 8):
        parts = [shard(n, DistInfo(rank=r, world_size=3)) for r in range(3)]
        assert [i for p in parts for i in range(n)[p]] == list(range(n))
        sizes = [len(range(n)[p]) for p in parts]
        assert max(sizes) - min(sizes) <= 1
    assert mean_over_ranks({"a": 2.0}, 4, DistInfo()) == {"a": 2.0}
    x = torch.arange(7.0)
    means = [x[shard(7, DistInfo(rank=r, world_size=2))].mean() for r in (0, 1)]
    combined = (4 * means[0] + 3 * means[1]) / 7  # what mean_over_ranks forms from two ranks
    assert torch.isclose(combined, x.mean())
