"""The CLI with labels: conditional training, noisy classifiers, guided sampling, digits.

Plumbing on tiny budgets (guidance quality is benchmarks/bench_guidance.py's job): labels
reach the run, the class names are stored, every guidance path samples, and each misuse
ends in one clear line.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from probpath.cli import main

DDPM = ["--model", "ddpm", "--set", 'schedule_kwargs={"T": 10}']


def tiny(*extra: str) -> list[str]:
    args = ["--threads", "1", "--data", "8gaussians", "--n-train", "64", "--n-eval", "16"]
    return [*args, "--batch", "32", "--hidden", "8", "--quiet", "--steps", "2", *extra]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_guidance")
    trainings = {
        "cond_ddpm": [*DDPM, "--conditional", "--p-uncond", "0.2"],
        "cond_fm": ["--model", "fm", "--conditional"],
        "ddpm": DDPM,
        "clf": ["--model", "noisy-classifier", "--like", str(root / "ddpm")],
        "clf_vp": ["--model", "noisy-classifier"],  # default path "vp": not the DDPM chain
    }
    for name, extra in trainings.items():
        assert main(["train", "--out", str(root / name), *tiny(*extra)]) == 0, name
    return root


def _config(run):
    return json.loads((run / "config.json").read_text())


def test_conditional_runs_store_classes(runs):
    from probpath.train import load_run

    for name in ("cond_ddpm", "cond_fm", "clf"):
        run = load_run(runs / name)
        assert run.classes == tuple(str(k) for k in range(8)), name
        assert run.config.model_config["n_classes"] == 8
    assert _config(runs / "cond_ddpm")["model_config"]["p_uncond"] == 0.2
    assert load_run(runs / "ddpm").classes == ()
    # --like copies the DDPM's path, data, sizes, seed and standardisation
    clf, ddpm = load_run(runs / "clf"), load_run(runs / "ddpm")
    assert clf.config.model_config["schedule"] == "ddpm-linear"
    assert clf.config.model_config["schedule_kwargs"] == {"T": 10}
    assert clf.standardizer == ddpm.standardizer


@pytest.mark.parametrize(
    ("run", "flags", "sampler", "nfe"),
    [
        ("cond_ddpm", ["--guidance", "cfg", "--scale", "3"], "ancestral", 10),
        ("cond_ddpm", [], "ddim", 4),  # --label alone: cfg at scale 1, p(x | y)
        ("cond_fm", ["--scale", "2"], "euler", 4),
        ("ddpm", ["--guidance", "classifier", "--scale", "2", "--classifier", "clf"], "ddim", 4),
        ("ddpm", ["--classifier", "clf"], "pf-ode", None),
    ],
)
def test_guided_sampling(runs, tmp_path, capsys, run, flags, sampler, nfe):
    out = tmp_path / "x.npy"
    flags = [str(runs / f) if f == "clf" else f for f in flags]
    argv = ["sample", str(runs / run), "--n", "5", "--out", str(out), "--json", "--label", "3"]
    argv += [*flags, "--sampler", sampler]
    argv += ["--steps", "4"] if sampler in ("ddim", "euler") else []
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rows["label"] == "3" and rows["sampler"] == sampler
    assert rows["guidance"] == ("classifier" if "clf" in " ".join(flags) else "cfg")
    if nfe is not None:
        assert rows["nfe"] == nfe
    x = np.load(out)
    assert x.shape == (5, 2) and np.isfinite(x).all()


def test_eval_of_labelled_runs(runs, capsys):
    assert main(["eval", str(runs / "clf"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rows["n"] == 16 and 0.0 <= rows["accuracy"] <= 1.0 and rows["loss"] > 0
    argv = ["eval", str(runs / "cond_fm"), "--json", "--n", "16", "--sampler", "euler"]
    assert main([*argv, "--steps", "2", "--solver", "euler"]) == 0  # the unconditional NLL
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(rows["nll_nats"]) and "energy_distance" in rows


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--label", "8"], "label '8' is not a class of .*cond_ddpm; its classes: 0, 1, 2"),
        (["--scale", "2"], "--scale guide towards a class: add --label"),
        (["--label", "1", "--classifier", "clf", "--guidance", "cfg"], "belongs to --guidance"),
    ],
)
def test_sample_errors_conditional(runs, capsys, argv, message):
    argv = [str(runs / a) if a == "clf" else a for a in argv]
    assert main(["sample", str(runs / "cond_ddpm"), "--out", "/dev/null", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert __import__("re").search(message, err), err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--label", "1"], "is unconditional: classifier-free guidance needs a run trained"),
        (["--label", "1", "--guidance", "classifier"], "needs --classifier RUN"),
        (["--label", "1", "--classifier", "missing"], "is not a run folder"),
        (["--label", "1", "--classifier", "cond_ddpm"], "is a ddpm run"),
        (["--label", "1", "--classifier", "clf_vp"], "classifier must be trained on the model's"),
    ],
)
def test_sample_errors_unconditional(runs, capsys, argv, message):
    argv = [str(runs / a) if a in ("clf_vp", "cond_ddpm", "missing") else a for a in argv]
    assert main(["sample", str(runs / "ddpm"), "--out", "/dev/null", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--model", "cnf", "--conditional"], "--conditional applies to the diffusion family"),
        (["--model", "fm", "--p-uncond", "0.1"], "--p-uncond is the label dropout"),
        (["--model", "fm", "--like", "x"], "--like applies to --model noisy-classifier"),
        (["--model", "fm", "--conditional", "--data", "swissroll"], "'swissroll' has no labels"),
        (["--model", "fm", "--label-column", "2"], "label_column applies to data files"),
        (["--model", "fm", "--conditional", "--set", "n_classes=3"], "n_classes=3 was set"),
    ],
)
def test_train_errors(tmp_path, capsys, argv, message):
    base = ["train", "--out", str(tmp_path / "r"), "--steps", "1", "--quiet", "--n-train", "8"]
    assert main([*base, "--n-eval", "4", *argv]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_classifier_like_a_run_on_another_path_is_refused(runs, tmp_path, capsys):
    out = str(tmp_path / "c")
    like = ["--model", "noisy-classifier", "--like", str(runs / "ddpm")]
    assert main(["train", "--out", out, *tiny(*like, "--set", "schedule=vp")]) == 1
    assert "--like copies the path of" in capsys.readouterr().err


def test_digits_use_all_rows_and_a_label_file(tmp_path, capsys):
    out = tmp_path / "digits"
    argv = ["train", "--out", str(out), "--model", "fm", "--data", "digits", "--conditional"]
    argv += ["--net", "mlp", "--no-plot"]
    assert main([*argv, "--steps", "2", "--batch", "16", "--hidden", "8", "--quiet"]) == 0
    cfg = _config(out)
    assert (cfg["n_train"], cfg["n_eval"]) == (1438, 359)  # all 1797 images, 20% held out
    assert cfg["levels"] == 17  # digits are images of 17 grey levels
    assert cfg["model_config"]["dim"] == 64 and cfg["model_config"]["n_classes"] == 10
    assert main(["plot", str(out)]) == 0  # a grid of 8 x 8 samples, a row per digit
    assert (out / "samples.png").stat().st_size > 0
    too_many = ["train", "--out", str(tmp_path / "d2"), "--data", "digits", "--n-train", "1700"]
    assert main([*too_many, "--n-eval", "200"]) == 1
    err = capsys.readouterr().err
    assert "digits splits into 1438 training and 359 test images (a fixed split)" in err
    assert "cannot take n_train=1700 and n_eval=200" in err
    # a CSV with string labels in a named column: labels map to 0..K-1, names are kept
    data = tmp_path / "d.csv"
    rng = np.random.default_rng(0)
    lines = [f"{a:.3f},{b:.3f},{'ab'[i % 2]}" for i, (a, b) in enumerate(rng.normal(size=(50, 2)))]
    data.write_text("x,y,kind\n" + "\n".join(lines) + "\n")
    run = tmp_path / "csv"
    argv = ["train", "--out", str(run), "--model", "fm", "--data", str(data), "--quiet"]
    assert main([*argv, "--conditional", "--label-column", "kind", "--steps", "1"]) == 0
    from probpath.train import load_run

    assert load_run(run).classes == ("a", "b") and _config(run)["n_eval"] == 10
    argv = ["sample", str(run), "--label", "b", "--n", "3", "--out", str(tmp_path / "s.npy")]
    assert main(argv) == 0
    assert np.load(tmp_path / "s.npy").shape == (3, 2)


def test_a_classifier_on_another_path_is_told_to_train_with_like(runs, capsys):
    argv = ["sample", str(runs / "ddpm"), "--out", "/dev/null", "--label", "1"]
    assert main([*argv, "--classifier", str(runs / "clf_vp")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"train it with probpath train --model noisy-classifier --like {runs / 'ddpm'}" in err
