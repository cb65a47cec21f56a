"""Discrete data through the workflow: the bound eval reports against a closed form, and
per-batch dequantization that a resumed run draws again exactly.

The closed form: a model uniform on the model-space image of [-1/2, K - 1/2)^D, the union
of the level cubes, gives every example P(x) = K^-D exactly, for any affine map of the
cubes (the centered map of images, a standardisation of integer vectors) and any number
of draws k: eval must report log2 K bits/dim. In model space its density is
exp(-sum_d log width_d), and the map's log-determinant must enter with the right sign for
the two to cancel. Float64 throughout: agreement to 1e-9.
"""

from __future__ import annotations

import json
import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from probpath.train import (
    LoadedRun,
    RunConfig,
    TrainConfig,
    evaluate_run,
    fit,
    load_run,
)


class UniformOnCubes(nn.Module):
    """Uniform on the product of intervals [lo_d, hi_d) (model space), any shape."""

    def __init__(self, lo: Tensor, hi: Tensor) -> None:
        super().__init__()
        self.register_buffer("lo", lo)
        self.register_buffer("hi", hi)
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def log_prob(self, z: Tensor) -> Tensor:
        inside = ((z >= self.lo) & (z < self.hi)).flatten(1).all(1)
        density = -(self.hi - self.lo).log().sum()
        return torch.where(inside, density, -math.inf) + 0 * self.anchor

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        u = torch.rand(n, *self.lo.shape, generator=generator, dtype=torch.float64)
        return self.lo + (self.hi - self.lo) * u


def _uniform(run: LoadedRun) -> LoadedRun:
    dq = run.dequantizer
    assert dq is not None and run.shape is not None
    edge = torch.full((1, *run.shape), -0.5, dtype=torch.float64)
    lo, hi = dq.forward(edge), dq.forward(edge + dq.levels)
    return replace(run, model=UniformOnCubes(lo[0], hi[0]))


def _fit(tmp_path, data: str, name: str, **run) -> LoadedRun:
    train = TrainConfig(steps=2, batch_size=16, log_every=1, checkpoint_every=2)
    mc = {"hidden": [8], "net": "mlp"}
    cfg = RunConfig(model="fm", model_config=mc, data=data, train=train, **run)
    fit(cfg, tmp_path / name, progress=False)
    return load_run(tmp_path / name)


@pytest.fixture
def uint8_file(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "pixels.npy"  # integer vectors with columns of different ranges
    np.save(path, (rng.integers(0, 256, (80, 6)) * [1, 1, 0.5, 0.25, 1, 0.1]).astype(np.uint8))
    return str(path)


@pytest.mark.parametrize("standardize", [True, False])
def test_a_uniform_model_of_integer_vectors_scores_8_bits_per_dim(
    tmp_path, uint8_file, standardize
):
    run = _fit(tmp_path, uint8_file, "v", standardize=standardize, n_eval=16)
    assert (run.kind, run.config.levels, run.shape) == ("discrete", 256, (6,))
    assert (run.standardizer is not None) == standardize
    uniform = _uniform(run)
    for k in (1, 4):
        scores = evaluate_run(uniform, n=16, k=k)
        assert scores["bits_per_dim"] == pytest.approx(8.0, rel=1e-9)
        assert scores["bits_per_dim_se"] == pytest.approx(0.0, abs=1e-9)
    assert scores["levels"] == 256 and "k=4" in scores["bound"]
    assert {"energy_distance", "noise_floor", "nfe_sample"} <= set(scores)  # vectors


def test_a_uniform_model_of_digits_scores_log2_17_bits_per_dim(tmp_path):
    run = _fit(tmp_path, "digits", "d", n_train=32, n_eval=8)
    assert (run.kind, run.config.levels, run.shape) == ("images", 17, (1, 8, 8))
    scores = evaluate_run(_uniform(run), n=8)
    assert scores["bits_per_dim"] == pytest.approx(math.log2(17), rel=1e-9)
    assert "energy_distance" not in scores  # image samples are scored by a judge
    x, _ = run.sample(5, steps=2, sampler="heun")
    assert x.dtype == torch.uint8 and x.shape == (5, 1, 8, 8) and int(x.max()) <= 16


def test_eval_reports_the_bound_training_logged(tmp_path, uint8_file):
    """The trainer's final held-out bound and eval's use the same EMA weights, rows and
    seeded noise: the same number."""
    run = _fit(tmp_path, uint8_file, "v", n_eval=16)
    records = [json.loads(s) for s in (run.run_dir / "metrics.jsonl").read_text().splitlines()]
    held_out = [r for r in records if r["split"] == "eval"][-1]
    scores = evaluate_run(run, n=16)
    assert scores["nll_nats"] == pytest.approx(held_out["eval_nll"], rel=1e-6)
    assert scores["bits_per_dim"] == pytest.approx(held_out["eval_bits_per_dim"], rel=1e-6)


def test_resume_draws_the_same_dequantization_noise(tmp_path, uint8_file):
    """Each batch is dequantized with the step's seeded generator: 2 steps + 2 resumed
    reproduce 4 steps' losses exactly."""
    base = RunConfig(model="fm", model_config={"hidden": [8]}, data=uint8_file, n_eval=16)
    train = TrainConfig(steps=4, batch_size=16, log_every=1, checkpoint_every=2, ema_decay=0)
    fit(replace(base, train=train), tmp_path / "a", progress=False)
    fit(replace(base, train=replace(train, steps=2)), tmp_path / "b", progress=False)
    saved = RunConfig.load(tmp_path / "b")
    more = replace(saved, train=replace(saved.train, steps=4))
    fit(more, tmp_path / "b", resume=True, progress=False)

    def losses(name):
        lines = (tmp_path / name / "metrics.jsonl").read_text().splitlines()
        return [r["loss"] for r in map(json.loads, lines) if r["split"] == "train"]

    assert losses("a") == losses("b") and len(losses("a")) == 4
