"""``probpath train|sample|eval`` with the flow-matching family, on tiny budgets (plumbing)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from probpath.cli import build_parser, main

TINY = [
    "--threads",
    "1",
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
    "--steps",
    "3",
    "--quiet",
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_fm") / "run"
    args = ["train", "--model", "fm", "--set", "path=ot", "--set", "ot_coupling=true"]
    assert main([*args, "--out", str(out), *TINY]) == 0
    return out


def _has_flag(command: str, flag: str) -> bool:
    parser = build_parser()
    sub = parser._subparsers._group_actions[0].choices[command]  # type: ignore[union-attr]
    return any(flag in a.option_strings for a in sub._actions)


def test_train_through_the_registry_saves_the_family_config(run_dir) -> None:
    cfg = json.loads((run_dir / "config.json").read_text())
    assert cfg["model"] == "fm"
    assert cfg["model_config"]["path"] == "ot" and cfg["model_config"]["ot_coupling"] is True


def test_named_flags_set_path_and_coupling(tmp_path) -> None:
    if not _has_flag("train", "--path"):
        pytest.skip("--path/--ot-coupling not in this cli.py")
    out = tmp_path / "vp"
    assert (
        main(
            ["train", "--model", "fm", "--path", "vp", "--no-ot-coupling", "--out", str(out), *TINY]
        )
        == 0
    )
    cfg = json.loads((out / "config.json").read_text())["model_config"]
    assert cfg["path"] == "vp" and cfg["ot_coupling"] is False


def test_eval_reports_the_exact_nll_and_sample_writes_points(run_dir, capsys) -> None:
    assert main(["eval", str(run_dir), "--n", "32", "--json", "--threads", "1"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(report["nll_nats"]) and report["gap_nats"] == pytest.approx(
        report["nll_nats"] - report["entropy_nats"]
    )
    out = run_dir / "x.npy"
    assert main(["sample", str(run_dir), "--n", "8", "--out", str(out), "--threads", "1"]) == 0
    assert np.load(out).shape == (8, 2)


@pytest.mark.skipif(not _has_flag("sample", "--sampler"), reason="no --sampler plumbing yet")
def test_sample_with_a_fixed_step_ode_sampler(run_dir, capsys) -> None:
    out = run_dir / "euler.npy"
    cmd = ["sample", str(run_dir), "--n", "8", "--out", str(out), "--json", "--threads", "1"]
    assert main([*cmd, "--sampler", "euler", "--steps", "5"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert report["nfe"] == 5 and np.load(out).shape == (8, 2)
