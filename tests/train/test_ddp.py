"""Two processes under torchrun (gloo, CPU) train exactly like one with the same batch.

Each rank sees a different half of every batch, so the ranks' parameters stay equal,
and equal to the single-process run, only if DDP really averages the gradients (the
loss is routed through the DDP-wrapped adapter's forward). The model is conditional (a
shift per class): each rank must also take the labels of its own rows.
"""

from __future__ import annotations

import json
import sys
import textwrap

import torch
from _ranks import run_ranks  # tests/train/_ranks.py (pytest puts this folder on sys.path)

SCRIPT = textwrap.dedent(
    """
    import json, math, os, sys
    import torch
    from torch import nn
    from probpath.train import TrainConfig, train

    class Model(nn.Module):  # a tiny MLP energy-free "flow": Gaussian NLL of a linear map
        def __init__(self):
            super().__init__()
            torch.manual_seed(1234 + int(os.environ.get("RANK", "0")))  # differs per rank:
            self.net = nn.Linear(2, 2).double()  # DDP must broadcast rank 0's weights
            self.shift = nn.Parameter(torch.randn(3, 2, dtype=torch.float64))
            self.config = {}

        def loss(self, x, *, y, generator=None):
            z = self.net(x) - self.shift[y]
            logdet = torch.linalg.slogdet(self.net.weight)[1]
            return (0.5 * z.pow(2).sum(-1) - logdet).mean(), {"nfe": 1.0}

    def run(out_dir):
        g = torch.Generator().manual_seed(0)
        data = torch.randn(64, 2, generator=g, dtype=torch.float64) * 2 + 1
        labels = torch.randint(3, (64,), generator=g)
        cfg = TrainConfig(steps=6, batch_size=16, lr=0.05, ema_decay=0.9, log_every=2,
                          checkpoint_every=3, seed=5)
        model = Model()
        train(model, data, cfg, os.path.join(out_dir, "run"), progress=False, labels=labels)
        rank = os.environ.get("RANK", "single")
        params = {k: v.tolist() for k, v in model.state_dict().items()}
        with open(os.path.join(out_dir, f"params_{rank}.json"), "w") as f:
            json.dump(params, f)

    if __name__ == "__main__":
        run(sys.argv[1])  # trains, tears the process group down, writes the parameters
        # The worker's job ends here. Skip interpreter finalisation: with gloo's threads
        # it can abort a process whose work is done (pytorch/pytorch#179291), which is
        # torch's teardown and not what this test checks; `train` already destroyed the group.
        os._exit(0)
    """
)


def test_two_process_gloo_matches_single_process(tmp_path):
    script = tmp_path / "ddp_script.py"
    script.write_text(SCRIPT)
    (tmp_path / "ddp").mkdir()
    run_ranks(script, str(tmp_path / "ddp"))

    sys.path.insert(0, str(tmp_path))
    try:
        import ddp_script  # the same model and data, in this (single) process

        (tmp_path / "single").mkdir()
        ddp_script.run(str(tmp_path / "single"))
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("ddp_script", None)

    def load(path):
        return {
            k: torch.tensor(v, dtype=torch.float64) for k, v in json.loads(path.read_text()).items()
        }

    r0, r1 = load(tmp_path / "ddp" / "params_0.json"), load(tmp_path / "ddp" / "params_1.json")
    one = load(tmp_path / "single" / "params_single.json")
    for k in r0:
        assert torch.equal(r0[k], r1[k]), k  # synchronised ranks are bitwise equal
        # The two runs differ only in float64 summation order (two half-batch means
        # averaged vs one full mean): ~1e-16 relative per step, a few dozen operations
        # per update over 6 steps, so 1e-12 leaves a wide margin above rounding while
        # any missing gradient sync (an O(1e-2) change per step) fails it.
        torch.testing.assert_close(r0[k], one[k], rtol=1e-12, atol=1e-12)
    # Only rank 0 logs and checkpoints: one record per logged step, not two.
    steps = [json.loads(s)["step"] for s in (tmp_path / "ddp" / "run" / "metrics.jsonl").open()]
    assert steps == [2, 4, 6]
    assert sorted(p.name for p in (tmp_path / "ddp" / "run" / "checkpoints").iterdir()) == [
        "step_00000003",
        "step_00000006",
    ]


def test_batch_must_split_evenly_across_processes():
    from probpath.train.distributed import DistInfo, batch_indices

    it = batch_indices(10, 3, DistInfo(rank=0, world_size=2), seed=0)
    try:
        next(it)
    except ValueError as e:
        assert "divisible by the number of processes 2" in str(e)
    else:
        raise AssertionError("an odd global batch over 2 processes was accepted")
    # The shards of one global batch are exactly the single-process batch, step by step,
    # across epoch boundaries (n = 10, 5 rows per rank per epoch, 2 rows per rank a step).
    one = batch_indices(10, 4, DistInfo(), seed=7)
    two = [batch_indices(10, 4, DistInfo(rank=r, world_size=2), seed=7) for r in (0, 1)]
    for _ in range(7):
        assert sorted(next(one).tolist()) == sorted(torch.cat([next(i) for i in two]).tolist())
