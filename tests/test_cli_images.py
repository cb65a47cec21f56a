"""The CLI on images and integer vectors: train, sample, eval and plot on digits with a
tiny budget, and the misuses that end in one line.

Plumbing only (sample quality is the benchmarks' job): discrete data stay levels, every
command reports or writes them as such (uint8 images, PNG grids, bits/dim of the discrete
data with its standard error), and each family works end to end.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from probpath.cli import main

FAST = ["--rtol", "1e-2", "--atol", "1e-2"]
MLP = ["--net", "mlp"]  # the U-Net path: test_unet_runs
FAMILIES = {
    "fm": ["--model", "fm", "--conditional"],
    "ddpm": ["--model", "ddpm", "--set", 'schedule_kwargs={"T": 10}'],
    "cnf": ["--model", "cnf", *FAST],
    "sde": ["--model", "sde"],
    "ncsn": ["--model", "ncsn", "--set", "n_levels=5"],
    "ebm": ["--model", "ebm", "--set", "objective=dsm", "--set", "n_steps=10"],
}


def tiny(data: str, *extra: str) -> list[str]:
    args = ["--threads", "1", "--data", data, "--n-train", "48", "--n-eval", "8"]
    return [*args, "--batch", "16", "--hidden", "8", "--quiet", "--steps", "2", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_images")
    for name, flags in FAMILIES.items():
        drawn = [] if name == "fm" else ["--no-plot"]  # train draws an image run's PNGs
        argv = ["train", "--out", str(root / name), *tiny("digits", *flags, *drawn, *MLP)]
        assert main(argv) == 0, name
    assert (root / "fm" / "samples.png").is_file() and not (root / "cnf" / "samples.png").exists()
    np.save(root / "pixels.npy", np.arange(64 * 6, dtype=np.uint8).reshape(64, 6))
    assert main(["train", "--out", str(root / "vec"), *tiny(str(root / "pixels.npy"))]) == 0
    assert main(["train", "--out", str(root / "moons"), *tiny("moons")]) == 0
    return root


def _json(capsys, *argv: str) -> tuple[dict, str]:
    """The command's JSON output and its stderr."""
    capsys.readouterr()
    assert main([*argv, "--json", "--threads", "1"]) == 0
    out, err = capsys.readouterr()
    return json.loads(out), err


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_every_family_trains_samples_evaluates_and_plots_digits(runs, tmp_path, capsys, name):
    run = runs / name
    config = json.loads((run / "config.json").read_text())
    assert config["levels"] == 17 and config["image_space"] == "centered"
    out = tmp_path / "s.npy"
    rows, _ = _json(capsys, "sample", str(run), "--n", "6", "--out", str(out), *_steps(name))
    x = np.load(out)
    assert x.dtype == np.uint8 and x.shape == (6, 1, 8, 8) and x.max() <= 16
    assert rows["shape"] == [1, 8, 8] and rows["levels"] == 17
    assert (tmp_path / "s.png").stat().st_size > 0 and rows["png"] == str(tmp_path / "s.png")
    fast = [] if name == "ebm" else FAST  # Langevin takes no tolerances
    scores, err = _json(capsys, "eval", str(run), "--n", "8", *_steps(name), *fast)
    assert (scores["kind"], scores["levels"], scores["shape"]) == ("images", 17, [1, 8, 8])
    if name == "ebm":  # no normaliser beyond 2-D: its held-out loss instead
        assert "loss" in scores and "bits_per_dim" not in scores
    else:
        assert scores["bits_per_dim"] > 0 and scores["bits_per_dim_se"] > 0
        assert "uniform" in scores["bound"] and scores["nfe_log_prob"] > 0
    assert "energy_distance" not in scores  # images: sample quality needs a judge
    assert "--judge" in err
    assert main(["plot", str(run), "--threads", "1"]) == 0
    written = capsys.readouterr().out.split()
    assert str(run / "samples.png") in written and str(run / "training_curves.png") in written


def _steps(name: str) -> list[str]:
    """A short sampler run for each family."""
    if name in ("ebm", "cnf"):  # a single sampler each
        return []
    return ["--steps", "3"] if name in ("ddpm", "ncsn") else ["--sampler", "heun", "--steps", "2"]


def test_ddpm_elbo_and_importance_weighted_bound(runs, capsys):
    scores, _ = _json(capsys, "eval", str(runs / "ddpm"), "--n", "8", "--k", "3", *FAST)
    assert "importance-weighted, k=3" in scores["bound"]
    assert scores["nll_bound_decoder"] in ("gaussian", "discretized")
    assert scores["nll_bound_bits_per_dim"] > 0 and scores["nfe_nll_bound"] == 10


def test_conditional_digits_sample_by_label_and_plot_rows(runs, tmp_path, capsys):
    out = tmp_path / "seven.npy"
    argv = ["sample", str(runs / "fm"), "--label", "7", "--n", "4", "--out", str(out)]
    assert main([*argv, "--sampler", "heun", "--steps", "2"]) == 0
    assert np.load(out).shape == (4, 1, 8, 8)


def test_integer_vectors_are_discrete(runs, tmp_path, capsys):
    config = json.loads((runs / "vec" / "config.json").read_text())
    assert config["levels"] == 256 and config["model_config"]["dim"] == 6
    scores, _ = _json(capsys, "eval", str(runs / "vec"), "--n", "8")
    assert (scores["kind"], scores["levels"]) == ("discrete", 256)
    assert "bound on -log P(x)" in scores["bound"] and "energy_distance" in scores
    out = tmp_path / "v.npy"
    assert main(["sample", str(runs / "vec"), "--n", "5", "--out", str(out)]) == 0
    assert np.load(out).dtype == np.uint8 and np.load(out).shape == (5, 6)


UNET = ["--net", "unet", "--set", 'net_config={"base_channels": 8, "channel_mult": [1]}']


def test_unet_runs(tmp_path, capsys):
    """--net unet on digits: a U-Net field, the DDPM's decoder discretized on the data's 17
    levels, so its ELBO bounds -log P(x) of the pixels themselves."""
    ddpm = ["--model", "ddpm", "--set", 'schedule_kwargs={"T": 10}', *UNET]
    assert main(["train", "--out", str(tmp_path / "u"), *tiny("digits", *ddpm, "--no-plot")]) == 0
    config = json.loads((tmp_path / "u" / "config.json").read_text())["model_config"]
    assert (config["net"], config["shape"], config["levels"]) == ("unet", [1, 8, 8], 17)
    scores, _ = _json(capsys, "eval", str(tmp_path / "u"), "--n", "8", *FAST)
    assert scores["nll_bound_decoder"] == "discretized" and scores["bits_per_dim"] > 0
    assert scores["nll_bound_bits_per_dim"] > 0
    out = tmp_path / "u.npy"
    assert main(["sample", str(tmp_path / "u"), "--n", "3", "--steps", "3", "--out", str(out)]) == 0
    assert np.load(out).shape == (3, 1, 8, 8)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["eval", "{moons}", "--judge", "{ddpm}"], "--judge scores images"),
        (["eval", "{moons}", "--k", "2"], "dequantizes discrete data"),
        (["eval", "{ddpm}", "--judge", "{fm}"], "train a judge with probpath train --model"),
        (["eval", "{fm}", "--probes", "4", "--nll", "exact"], "none with --nll exact"),
        (["eval", "{fm}", "--data", "moons"], "models images data of shape (1, 8, 8)"),
        (["train", "--out", "{tmp}", *tiny("moons", "--levels", "4")], "continuous toy set"),
        (
            ["train", "--out", "{tmp}", *tiny("moons", "--image-space", "logit")],
            "applies to images",
        ),
        (["train", "--out", "{tmp}", *tiny("digits", "--label-column", "0")], "bring their own"),
        (["train", "--out", "{tmp}", *tiny("moons", "--net", "unet")], "use net='mlp'"),
    ],
)
def test_misuses_end_in_one_line(runs, tmp_path, capsys, argv, message):
    paths = {"moons": runs / "moons", "ddpm": runs / "ddpm", "fm": runs / "fm", "tmp": tmp_path}
    capsys.readouterr()
    assert main([a.format(**paths) for a in argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err
