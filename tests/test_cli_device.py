"""``--device``, ``--precision`` and ``--compile`` on the command line (docs/gpu.md).

A flow-matching model with 8 hidden units trains for a few steps on the CPU in bf16
(CPU autocast), then samples, evaluates and plots from its run folder; a GPU asked for
where there is none is one line of error before any work.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from probpath.cli import main
from probpath.cli._main import build_parser
from probpath.cli.train import merge_config
from probpath.train import RunConfig, load_checkpoint, load_run

TINY = [
    "--threads", "1", "--model", "fm", "--data", "8gaussians", "--n-train", "64",
    "--n-eval", "32", "--batch", "32", "--hidden", "8", "--quiet", "--log-every", "1",
    "--checkpoint-every", "2", "--device", "cpu",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_device") / "run"
    assert main(["train", "--out", str(out), "--steps", "3", "--precision", "bf16", *TINY]) == 0
    return out


def test_train_in_bf16_on_the_cpu(run_dir):
    assert RunConfig.load(run_dir).train.precision == "bf16"
    ck = load_checkpoint(run_dir / "checkpoints")
    assert ck.meta["device"] == "cpu" and ck.meta["train_config"]["compile"] is None
    assert all(v.dtype == torch.float32 for v in ck.model.values())  # weights stay float32


def test_sample_eval_plot_on_the_cpu(run_dir, tmp_path, capsys):
    out = tmp_path / "x.npy"
    argv = ["--device", "cpu", "--n", "16", "--json"]
    assert main(["sample", str(run_dir), "--out", str(out), "--precision", "bf16", *argv]) == 0
    assert np.load(out).shape == (16, 2)
    capsys.readouterr()
    fixed = ["--sampler", "euler", "--steps", "4"]
    assert main(["eval", str(run_dir), "--precision", "bf16", *fixed, *argv]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert np.isfinite(rows["nll_nats"]) and rows["nfe_sample"] == 4
    assert main(["plot", str(run_dir), "--device", "cpu", "--n", "64"]) == 0
    assert load_run(run_dir, device="cpu").device == torch.device("cpu")


def test_resume_may_change_the_device_not_the_precision(run_dir, capsys):
    base = ["train", "--out", str(run_dir), "--resume", "--quiet", "--device", "cpu"]
    assert main([*base, "--steps", "4"]) == 0
    assert load_checkpoint(run_dir / "checkpoints").step == 4
    capsys.readouterr()
    assert main([*base, "--precision", "fp32"]) == 1
    assert "only --steps may change" in capsys.readouterr().err


def test_compile_flag_sets_the_mode():
    parser = build_parser()
    args = parser.parse_args(["train", "--out", "r", "--compile"])
    assert merge_config(args).train.compile == "default"
    args = parser.parse_args(["train", "--out", "r", "--compile", "reduce-overhead"])
    assert merge_config(args).train.compile == "reduce-overhead"
    assert merge_config(parser.parse_args(["train", "--out", "r"])).train.compile is None


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error where there is no GPU")
@pytest.mark.parametrize("command", ["train", "sample", "eval", "plot", "demo"])
def test_a_missing_gpu_is_one_line_before_any_work(command, run_dir, tmp_path, capsys):
    target = ["--out", str(tmp_path / "new")] if command in ("train", "demo") else [str(run_dir)]
    assert main([command, *target, "--device", "cuda"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("probpath: error: device 'cuda'") and "--device cpu" in err
    assert err.count("\n") == 1
    assert not (tmp_path / "new").exists()


def test_unknown_device_and_precision(capsys):
    assert main(["sample", "somewhere", "--device", "tpu"]) == 1
    assert "auto, cpu, cuda" in capsys.readouterr().err
    assert main(["train", "--out", "r", "--precision", "fp64"]) == 2  # argparse's choices
    assert main(["train", "--out", "r", "--compile", "fastest"]) == 2
