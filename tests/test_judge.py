"""The judge: an image-classifier run scores image samples by the Fréchet distance of its
features, against the floor of two sets of held-out images, and guided samples by its
accuracy.

Tiny budgets (the judge's quality is the benchmarks' job). The exact check: a model whose
samples are n held-out images itself scores exactly the floor, since both compare those
very images with the same n others.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

from probpath.cli import main
from probpath.train import evaluate_run, judge_features, load_judge, load_run

TINY = ["--threads", "1", "--data", "digits", "--n-train", "64", "--n-eval", "16", "--quiet"]
TINY += ["--batch", "16", "--steps", "2", "--no-plot"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("judge")
    judge = ["--model", "image-classifier", "--set", "channels=[4]", "--set", "features=8"]
    model = ["--model", "fm", "--conditional", "--net", "mlp", "--hidden", "8"]
    for name, flags in {"judge": judge, "fm": model}.items():
        assert main(["train", "--out", str(root / name), *TINY, *flags]) == 0, name
    return root


class Replay(nn.Module):
    """Samples that are given model-space points, in order."""

    def __init__(self, z: Tensor) -> None:
        super().__init__()
        self.register_buffer("z", z)
        self.anchor = nn.Parameter(torch.zeros(()))

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        return self.z[:n]

    def log_prob(self, z: Tensor) -> Tensor:
        return z.new_zeros(len(z))


def test_samples_that_are_held_out_images_score_the_floor(runs):
    run, judge = load_run(runs / "fm"), load_run(runs / "judge")
    x = run.rows().eval  # 16 held-out images: the scores compare x[:8] with x[8:16]
    replay = Replay(run.to_model_space(x[8:16])[0])
    perfect = replace(run, model=replay, classes=())  # an unconditional model
    scores = evaluate_run(perfect, n=16, judge=judge)
    assert scores["frechet_n"] == 8
    assert scores["frechet_distance"] == scores["frechet_floor"] > 0
    assert judge_features(judge, x).shape == (16, 8)


def test_eval_with_a_judge_through_the_cli(runs, capsys):
    capsys.readouterr()
    argv = ["eval", str(runs / "fm"), "--judge", str(runs / "judge"), "--n", "16", "--json"]
    assert main([*argv, "--sampler", "heun", "--steps", "2", "--scale", "2", "--threads", "1"]) == 0
    scores = json.loads(capsys.readouterr().out)
    assert scores["frechet_n"] == 8 and scores["frechet_distance"] >= 0
    assert 0 <= scores["judge_accuracy"] <= 1 and scores["judge_scale"] == 2.0
    assert scores["bits_per_dim"] > 0
    assert main(["eval", str(runs / "judge"), "--json"]) == 0  # the judge's own scores
    own = json.loads(capsys.readouterr().out)
    assert {"loss", "accuracy"} <= set(own) and own["n"] == 16


def test_a_judge_of_other_images_is_refused(runs):
    run, judge = load_run(runs / "fm"), load_run(runs / "judge")
    with pytest.raises(ValueError, match="trained on images of shape"):
        load_judge(judge, replace(run, shape=(1, 28, 28)))
    with pytest.raises(ValueError, match="is a fm run"):
        load_judge(run, run)
