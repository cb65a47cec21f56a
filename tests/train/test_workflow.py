"""``fit``: the workflow of ``probpath train`` from Python gives the same run folder."""

from __future__ import annotations

import json

import pytest
import torch

from probpath.cli import main
from probpath.train import RunConfig, TrainConfig, config_like, fit, load_run


def _train_records(run_dir):
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [
        {k: v for k, v in r.items() if k not in ("it_s", "time", "seconds")}
        for r in map(json.loads, lines)
    ]


def test_fit_is_what_the_cli_runs(tmp_path):
    argv = ["train", "--out", str(tmp_path / "cli"), "--model", "fm", "--n-train", "64"]
    argv += ["--n-eval", "16", "--batch", "16", "--hidden", "8", "--steps", "3", "--quiet"]
    assert main([*argv, "--log-every", "1", "--threads", "1"]) == 0
    cli = RunConfig.load(tmp_path / "cli")
    cfg = RunConfig(
        model="fm",
        model_config={"hidden": [8]},
        n_train=64,
        n_eval=16,
        train=TrainConfig(**{**cli.train.to_dict(), "steps": 3, "log_every": 1}),
    )
    done = fit(cfg, tmp_path / "py", progress=False)
    assert done.config == cli == RunConfig.load(tmp_path / "py")
    assert _train_records(tmp_path / "py") == _train_records(tmp_path / "cli")
    a, b = load_run(tmp_path / "cli"), load_run(tmp_path / "py")
    xa, nfe = a.sample(5, seed=1, sampler="euler", steps=4)
    assert nfe == 4 and torch.equal(xa, b.sample(5, seed=1, sampler="euler", steps=4)[0])
    with pytest.raises(ValueError, match="already holds a run"):
        fit(cfg, tmp_path / "py", progress=False)


def test_config_like_copies_the_guided_runs_data_and_path(tmp_path):
    argv = ["train", "--out", str(tmp_path / "ddpm"), "--model", "ddpm", "--n-train", "40"]
    argv += ["--n-eval", "8", "--batch", "8", "--hidden", "8", "--steps", "1", "--quiet"]
    assert main([*argv, "--seed", "5", "--data", "moons"]) == 0
    clf = RunConfig(model="noisy-classifier", n_train=20, train=TrainConfig(seed=1))
    got = config_like(clf, tmp_path / "ddpm", keep={"n_train"})
    assert (got.data, got.n_train, got.n_eval, got.train.seed) == ("moons", 20, 8, 5)
    assert got.model_config["schedule"] == "ddpm-linear"
    with pytest.raises(ValueError, match="--like applies to --model noisy-classifier"):
        config_like(RunConfig(model="fm"), tmp_path / "ddpm")
