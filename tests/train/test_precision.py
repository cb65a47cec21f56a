"""Mixed precision in the trainer and the integrators (CPU autocast; docs/gpu.md).

bf16 and fp16 lower the networks' matrix products; the loss, the solver state and the
log-densities stay float32. fp16 adds dynamic loss scaling, whose overflowing steps are
skipped, not errors.
"""

from __future__ import annotations

import json

import pytest
import torch

from probpath.device import autocast
from probpath.models import build
from probpath.solvers import odeint
from probpath.train import TrainConfig, train
from probpath.train._feed import Batches, StepRecord, Window

CPU = torch.device("cpu")


def _data(n: int = 256) -> torch.Tensor:
    return torch.randn(n, 2, generator=torch.Generator().manual_seed(0)) * 0.5 + 1.0


def _out_dtypes(model: torch.nn.Module) -> list[torch.dtype]:
    seen: list[torch.dtype] = []
    model.net.register_forward_hook(lambda m, args, out: seen.append(out.dtype))
    return seen


def test_bf16_training_runs_the_network_in_bf16_and_keeps_float32_weights(tmp_path) -> None:
    model = build("fm", dim=2, hidden=[16])
    seen = _out_dtypes(model)
    cfg = TrainConfig(steps=30, batch_size=32, lr=1e-2, precision="bf16", log_every=10)
    out = train(model, _data(), cfg, tmp_path, progress=False)
    assert set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(torch.isfinite(torch.tensor(out.losses)))
    assert sum(out.losses[-10:]) < sum(out.losses[:10])  # it learns


def test_fp16_loss_scaling_skips_overflowing_steps_without_stopping(tmp_path) -> None:
    """GradScaler starts at 2^16: the first backward passes overflow float16 (gradients of
    order 1 scaled past 65504), so the scaler skips them and halves the scale."""
    model = build("fm", dim=2, hidden=[16])
    before = [p.detach().clone() for p in model.parameters()]
    cfg = TrainConfig(steps=20, batch_size=32, lr=1e-2, precision="fp16", log_every=10)
    out = train(model, _data(), cfg, tmp_path, progress=False)
    records = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    skipped = [r["amp_skipped"] for r in records if r["split"] == "train"]
    assert skipped[0] > 0 and skipped[-1] < 1  # some steps skipped, later ones taken
    assert out.step == 20
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))


def test_a_lowered_network_output_is_cast_up_by_the_solver() -> None:
    """Under autocast a network returns bf16; the solver keeps its float32 state and
    likelihoods stay float32. Outside autocast a dtype mismatch is still a user error."""
    net = torch.nn.Linear(2, 2)
    y0, ts = torch.ones(3, 2), torch.tensor([0.0, 1.0])
    with autocast(CPU, "bf16"):
        ys = odeint(lambda t, y: net(y), y0, ts, method="rk4")
    assert ys.dtype == torch.float32
    with pytest.raises(TypeError, match="dtype"):
        odeint(lambda t, y: net(y).bfloat16(), y0, ts, method="rk4")
    model = build("fm", dim=2, hidden=[8])
    x = torch.randn(4, 2)
    with autocast(CPU, "bf16"):
        lp = model.log_prob(x, rtol=1e-3, atol=1e-3)
    assert lp.dtype == torch.float32
    # bf16 keeps 8 significant bits: the log-density moves by rounding, not by a mistake
    torch.testing.assert_close(lp, model.log_prob(x, rtol=1e-3, atol=1e-3), rtol=0.05, atol=0.05)


def test_the_log_window_treats_scaled_overflow_as_a_skipped_step() -> None:
    w = Window(scaled=True)
    skipped, taken = StepRecord(1, 1.0, float("inf"), {}), StepRecord(2, 3.0, 2.0, {})
    assert w.skipped(skipped) and not w.skipped(taken)
    assert not Window(scaled=False).skipped(skipped)  # without scaling: an error
    w.add(skipped)
    w.add(taken)
    assert w.means() == {"loss": 2.0, "amp_skipped": 0.5, "grad_norm": 2.0}
    assert w.means() == {}


def test_rows_and_labels_are_gathered_on_the_device() -> None:
    data, labels = torch.arange(12.0).reshape(6, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    batches = Batches(data, labels, CPU, torch.float64)
    x, y = batches(torch.tensor([5, 1]))
    assert batches.resident and x.dtype == torch.float64
    assert x.tolist() == [[10.0, 11.0], [2.0, 3.0]] and y.tolist() == [2, 1]


def test_precision_and_compile_are_checked_and_resume_rules(tmp_path) -> None:
    with pytest.raises(ValueError, match="fp32, bf16, fp16"):
        TrainConfig(precision="fp64")
    with pytest.raises(ValueError, match="compile mode"):
        TrainConfig(compile="fast")
    cfg = TrainConfig(steps=2, batch_size=8, precision="bf16")
    train(build("fm", dim=2, hidden=[8]), _data(32), cfg, tmp_path, progress=False)
    more = TrainConfig(steps=3, batch_size=8, precision="fp32")
    with pytest.raises(ValueError, match="precision"):  # changes the arithmetic: refused
        train(build("fm", dim=2, hidden=[8]), _data(32), more, tmp_path, resume=True)
    cfg.check_resumes({**cfg.to_dict(), "compile": "default"}, tmp_path)  # compiling may change
    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("precision", "compile")}
    TrainConfig().check_resumes(old, tmp_path)  # a run saved before these keys: fp32, eager
