"""The ``probpath`` command line, end to end on tiny budgets.

A CNF with 8 hidden units is trained for a few steps on 8gaussians (seconds), then
sampled, evaluated and plotted from its run folder. Quality is not tested here (that is
the benchmarks' job); the tests check the plumbing: configs, files, exact resumption,
output formats and one-line errors.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import entry_points

import numpy as np
import pytest

from probpath.cli import main
from probpath.train import RunConfig, load_checkpoint

TINY = [
    "--threads",
    "1",
    "--model",
    "cnf",
    "--data",
    "8gaussians",
    "--n-train",
    "64",
    "--n-eval",
    "32",
    "--batch",
    "32",
    "--hidden",
    "8",
    "--rtol",
    "1e-3",
    "--atol",
    "1e-3",
    "--quiet",
    "--log-every",
    "1",
    "--checkpoint-every",
    "2",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    assert main(["train", "--out", str(out), "--steps", "3", *TINY]) == 0
    return out


def test_train_writes_config_metrics_and_checkpoint(run_dir, capsys):
    cfg = RunConfig.load(run_dir)
    assert cfg.model == "cnf" and cfg.train.steps == 3 and cfg.train.batch_size == 32
    # flags land in the family's config keys; the saved config is the complete one
    assert cfg.model_config["hidden"] == [8] and cfg.model_config["rtol"] == 1e-3
    assert cfg.model_config["dim"] == 2 and "method" in cfg.model_config
    steps = [json.loads(s)["step"] for s in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 3]  # three train records and the final eval
    ck = load_checkpoint(run_dir / "checkpoints")
    assert ck.step == 3 and ck.meta["extra"]["standardizer"] is not None


def test_family_train_defaults_sit_under_file_and_flags(tmp_path):
    from probpath.cli import build_parser, merge_config
    from probpath.models import CNF

    def merged(*extra):
        return merge_config(build_parser().parse_args(["train", "--out", "r", *extra])).train

    assert merged().batch_size == CNF.train_defaults["batch_size"] == 512
    assert merged("--batch", "64").batch_size == 64
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("train:\n  batch_size: 32\n")
    assert merged("--config", str(cfg_file)).batch_size == 32
    assert merged("--config", str(cfg_file)).schedule == "cosine"  # the rest stays the family's


def test_image_data_take_the_family_image_defaults():
    from probpath.cli import build_parser, merge_config
    from probpath.models import CNF, FlowMatching

    def merged(*extra):
        return merge_config(build_parser().parse_args(["train", "--out", "r", *extra])).train

    vectors, images = FlowMatching.train_defaults, FlowMatching.image_train_defaults
    assert merged("--model", "fm", "--data", "moons").steps == vectors["steps"]
    assert merged("--model", "fm", "--data", "digits").steps == images["steps"] != vectors["steps"]
    assert merged("--model", "cnf", "--data", "digits").batch_size == 64
    assert CNF.image_train_defaults["batch_size"] == 64
    assert merged("--model", "fm", "--data", "digits", "--steps", "7").steps == 7


def test_config_file_and_flags_combine_flags_win(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(
        "train:\n  steps: 2\n  lr: 1e-2\n  seed: 4\nmodel_config:\n"
        "  hidden: [4]\n  trace: hutchinson\n"
    )
    out = tmp_path / "run"
    argv = [
        "train",
        "--out",
        str(out),
        "--config",
        str(cfg_file),
        *TINY,
        "--steps",
        "1",
        "--set",
        "activation=softplus",
    ]
    assert main(argv) == 0
    cfg = RunConfig.load(out)
    assert cfg.train.steps == 1 and cfg.train.lr == 0.01 and cfg.train.seed == 4
    assert cfg.model_config["hidden"] == [8]  # the flag beats the file
    assert (
        cfg.model_config["trace"] == "hutchinson" and cfg.model_config["activation"] == "softplus"
    )


def test_resume_continues_exactly(run_dir, tmp_path):
    # 3 steps, then --resume to 5 == 5 steps at once (constant lr, so `steps` is free).
    ref = tmp_path / "ref"
    assert main(["train", "--out", str(ref), "--steps", "5", *TINY]) == 0
    part = tmp_path / "part"
    assert main(["train", "--out", str(part), "--steps", "3", *TINY]) == 0
    assert main(["train", "--out", str(part), "--resume", "--steps", "5", "--quiet"]) == 0

    def losses(d):
        recs = [json.loads(s) for s in (d / "metrics.jsonl").read_text().splitlines()]
        return {r["step"]: r["loss"] for r in recs if r["split"] == "train"}

    assert losses(part) == losses(ref)


def test_train_and_eval_on_a_data_file(tmp_path, capsys):
    from probpath.data import load_dataset, sample_toy

    data = tmp_path / "pts.npy"
    np.save(data, 3.0 + 2.0 * sample_toy("moons", 120, generator=0).numpy())
    out = tmp_path / "run"
    tiny = [a if a != "8gaussians" else str(data) for a in TINY]
    assert main(["train", "--out", str(out), "--steps", "1", *tiny]) == 0
    # the standardisation is fitted on exactly the training rows (the first n_train of
    # the seeded draw of n_train + n_eval rows)
    std = load_checkpoint(out / "checkpoints").meta["extra"]["standardizer"]
    rows = load_dataset(str(data), 96, seed=0)[:64].double()
    assert std["mean"] == pytest.approx(rows.mean(0).tolist(), rel=1e-6)
    capsys.readouterr()
    assert main(["eval", str(out), "--data", str(data), "--n", "16", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["n"] == 16 and "gap_nats" not in res  # no known entropy for a file


def test_sample_json_and_npy(run_dir, tmp_path, capsys):
    out = tmp_path / "s.npy"
    assert (
        main(["sample", str(run_dir), "--n", "7", "--out", str(out), "--json", "--solver", "rk4"])
        == 0
    )
    info = json.loads(capsys.readouterr().out)
    assert info["n"] == 7 and info["dim"] == 2 and info["nfe"] > 0
    x = np.load(out, allow_pickle=False)
    assert x.shape == (7, 2) and np.isfinite(x).all()


def test_eval_table_and_json(run_dir, capsys):
    assert main(["eval", str(run_dir), "--n", "16", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    for key in (
        "nll_nats",
        "bits_per_dim",
        "gap_nats",
        "energy_distance",
        "noise_floor",
        "nfe_log_prob",
        "nfe_sample",
    ):
        assert key in res
    # bits/dim is the NLL in nats over d ln 2 (continuous data, d = 2)
    assert res["bits_per_dim"] == pytest.approx(res["nll_nats"] / (2 * np.log(2)), rel=1e-9)
    assert res["gap_nats"] == pytest.approx(res["nll_nats"] - res["entropy_nats"], rel=1e-9)
    assert main(["eval", str(run_dir), "--n", "16"]) == 0
    assert "nll_nats" in capsys.readouterr().out


def test_plot_writes_pngs(run_dir):
    assert main(["plot", str(run_dir), "--n", "64"]) == 0
    for name in ("samples.png", "density.png", "trajectories.png", "training_curves.png"):
        assert (run_dir / name).stat().st_size > 1000, name


@pytest.mark.parametrize(
    ("argv", "msg"),
    [
        (["sample", "nowhere"], "not a run folder"),
        (["train", "--out", "{tmp}", "--steps", "0"], "steps must be a positive integer"),
        (["train", "--out", "{tmp}", "--config", "missing.yaml"], "does not exist"),
        (["train", "--out", "{tmp}", "--config", "{bad_yaml}"], "cannot read config file"),
        (
            [
                "train",
                "--out",
                "{tmp}",
                "--set",
                "nonsense=1",
                "--steps",
                "1",
                "--quiet",
                "--n-train",
                "8",
                "--n-eval",
                "8",
            ],
            "nonsense",
        ),
        (["train", "--out", "{tmp}", "--resume"], "not a run folder"),
        (["train", "--out", "{tmp}", "--resume", "--lr", "0.1"], "only --steps may change"),
        (["train", "--out", "{tmp}", "--data", "no_such_set", "--steps", "1"], "no_such_set"),
    ],
)
def test_user_errors_give_one_line_and_exit_1(argv, msg, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("train: [steps: 3\n")
    argv = [a.replace("{tmp}", str(tmp_path / "r")) for a in argv]
    argv = [a.replace("{bad_yaml}", str(tmp_path / "bad.yaml")) for a in argv]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("probpath: error: ") and msg in err and "Traceback" not in err
    assert err.count("\n") == 1


def test_usage_errors_and_help(capsys):
    assert main(["train"]) == 2  # --out missing: argparse's usage error
    assert main(["train", "--model", "nope", "--out", "x"]) == 2
    capsys.readouterr()
    for cmd in ("train", "sample", "eval", "plot", "demo"):
        assert main([cmd, "--help"]) == 0
        assert "usage: probpath" in capsys.readouterr().out


def test_console_script_points_at_main():
    # What `pip install` turns into the `probpath` executable (checked without a
    # subprocess: a fresh interpreter importing torch costs seconds).
    (ep,) = [e for e in entry_points(group="console_scripts") if e.name == "probpath"]
    assert ep.load() is main


def test_sde_family_samplers_and_exact_nll(tmp_path, capsys):
    """``--model sde --sde ve``; ``sample --sampler/--steps/--nfe``; ``eval --nll``."""
    out = tmp_path / "sde"
    cut = TINY.index("--rtol")  # the sde family has no solver config keys
    tiny = [*TINY[:cut], *TINY[cut + 4 :]]
    tiny[tiny.index("cnf")] = "sde"
    assert main(["train", "--out", str(out), "--steps", "2", "--sde", "ve", *tiny]) == 0
    assert RunConfig.load(out).model_config["sde"] == "ve"
    capsys.readouterr()
    npy = str(tmp_path / "s.npy")
    for flags, nfe in (
        (["--sampler", "heun", "--steps", "2"], 4),
        (["--sampler", "pc", "--nfe", "6"], 6),
        (["--sampler", "pf-ode", "--steps", "3", "--solver", "euler"], 3),
    ):
        assert main(["sample", str(out), "--n", "5", "--out", npy, "--json", *flags]) == 0
        info = json.loads(capsys.readouterr().out)
        assert info["nfe"] == nfe and info["sampler"] == flags[1]
    assert main(["eval", str(out), "--n", "8", "--json", "--nll", "hutchinson", "--steps", "2",
                 "--sampler", "heun", "--rtol", "1e-3"]) == 0  # fmt: skip
    res = json.loads(capsys.readouterr().out)
    assert np.isfinite(res["nll_nats"]) and res["nfe_sample"] == 4
    assert main(["sample", str(out), "--sampler", "ancestral"]) == 1
    assert re.search(r"this model accepts .*euler-maruyama", capsys.readouterr().err)
    assert main(["sample", str(out), "--sampler", "heun", "--solver", "rk4"]) == 1
    assert main(["eval", "--nll", "exact", str(tmp_path / "missing")]) == 1
