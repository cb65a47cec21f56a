"""torch.compile of the networks (TrainConfig.compile, --compile): the same results as eager.

Compilation (about 10-20 s per graph on this machine) is kept to one small network.
Inductor fuses and reorders float32 arithmetic, so results agree to rounding: a few float32
ulps per operation, grown over the steps through Adam, whose update divides by the square
root of the running gradient variance; 1e-4 relative after 4 steps leaves room above that
while any wrong graph (an O(1) change) fails.
"""

from __future__ import annotations

import pytest
import torch

from probpath.models import build
from probpath.train import TrainConfig, count_nfe, train

TOL = {"rtol": 1e-4, "atol": 1e-5}


def test_compiled_training_and_sampling_equal_eager(tmp_path) -> None:
    data = torch.randn(128, 2, generator=torch.Generator().manual_seed(0))
    runs = {}
    for mode in (None, "default"):
        torch.manual_seed(0)
        model = build("fm", dim=2, hidden=[16])
        cfg = TrainConfig(steps=4, batch_size=32, lr=1e-2, ema_decay=0.0, compile=mode)
        out = train(model, data, cfg, tmp_path / str(mode), progress=False)
        gen = torch.Generator().manual_seed(1)
        with count_nfe(model) as c, torch.no_grad():
            x = model.sample(32, sampler="euler", steps=3, generator=gen)
        # the exact divergence backpropagates through one forward pass once per dimension
        lp = model.log_prob(data[:32], rtol=1e-5, atol=1e-5).detach()
        runs[mode] = out.losses, model.state_dict(), x, c["nfe"], lp
    (eager_losses, eager_state, eager_x, eager_nfe, eager_lp) = runs[None]
    (losses, state, x, nfe, lp) = runs["default"]
    assert list(state) == list(eager_state)  # in place: no "_orig_mod." in checkpoints
    torch.testing.assert_close(torch.tensor(losses), torch.tensor(eager_losses), **TOL)
    for k in state:
        torch.testing.assert_close(state[k], eager_state[k], **TOL)
    torch.testing.assert_close(x, eager_x, **TOL)
    assert nfe == eager_nfe == 3
    torch.testing.assert_close(lp, eager_lp, **TOL)


def test_compile_refuses_a_loss_that_differentiates_the_network_twice(tmp_path) -> None:
    """A CNF's loss takes the divergence by autograd and backpropagates through it:
    torch.compile has no double backward, and the error says to train eagerly."""
    cfg = TrainConfig(steps=1, batch_size=8, compile="default")
    model = build("cnf", dim=2, hidden=[8], method="rk4")
    with pytest.raises(ValueError, match="drop --compile"):
        train(model, torch.randn(16, 2), cfg, tmp_path, progress=False)
