"""Bad input ends in one line ``probpath: error: ...`` naming the problem, never a traceback:
data files holding pickled objects or complex numbers, a run folder whose config.json no
longer matches its checkpoint, a budget asked of an adaptive sampler."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch

from probpath.cli import main

TINY = ["--threads", "1", "--n-train", "32", "--n-eval", "16", "--batch", "16", "--quiet"]
TINY += ["--hidden", "8", "--steps", "1"]


def _one_line_error(capsys, pattern: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("probpath: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err and re.search(pattern, err), err
    return err


class Thing:  # a pickled object in a .pt file
    pass


@pytest.mark.parametrize(
    ("name", "write", "message"),
    [
        ("objects.pt", lambda p: torch.save({"rows": Thing()}, p), "holds pickled Python objects"),
        ("array.pt", lambda p: torch.save(np.ones((40, 2)), p), "holds pickled Python objects"),
        ("junk.pt", lambda p: p.write_bytes(b"not an archive"), "not a file written by torch.save"),
        ("c.npy", lambda p: np.save(p, np.ones((40, 2)) * (1 + 2j)), r"complex values \(complex"),
        ("c.pt", lambda p: torch.save(torch.ones(40, 2, dtype=torch.cfloat), p), "complex values"),
        (
            "o.npy",
            lambda p: np.save(p, np.array([[1, "a"]] * 40, dtype=object), allow_pickle=True),
            "not a numeric .npy array",
        ),
    ],
)
def test_data_files_that_cannot_be_read_safely(tmp_path, capsys, name, write, message):
    path = tmp_path / name
    write(path)
    assert main(["train", "--out", str(tmp_path / "run"), "--data", str(path), *TINY]) == 1
    err = _one_line_error(capsys, message)
    assert str(path) in err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("mismatch") / "run"
    assert main(["train", "--out", str(out), "--model", "fm", *TINY]) == 0
    return out


@pytest.mark.parametrize(
    ("key", "value"),
    [("hidden", [16]), ("dim", 3), ("time_embedding", "sinusoidal")],
)
def test_a_config_that_no_longer_matches_its_checkpoint(run_dir, tmp_path, capsys, key, value):
    import shutil

    run = tmp_path / "edited"
    shutil.copytree(run_dir, run)
    cfg = json.loads((run / "config.json").read_text())
    trained = cfg["model_config"][key]
    cfg["model_config"][key] = value
    (run / "config.json").write_text(json.dumps(cfg))
    commands = (
        ["sample", str(run), "--out", str(tmp_path / "x.npy")],
        ["eval", str(run)],
        ["plot", str(run)],
        ["train", "--out", str(run), "--resume", "--steps", "2", "--quiet"],
    )
    for argv in commands:
        assert main(argv) == 1, argv
        err = _one_line_error(capsys, "no longer matches the checkpoint")
        assert f"{key}={value!r} (trained with {trained!r})" in err, err


def test_a_budget_for_an_adaptive_sampler_says_what_to_use(run_dir, tmp_path, capsys):
    argv = ["sample", str(run_dir), "--out", str(tmp_path / "x.npy")]
    assert main([*argv, "--sampler", "dopri5", "--nfe", "20"]) == 1
    err = _one_line_error(
        capsys,
        r"sampler 'dopri5' is adaptive: rtol/atol set its NFE \(--rtol/--atol on the command "
        r"line\), not an NFE budget",
    )
    assert re.search(r"fixed-step sampler: .*euler", err) and "dopri5," not in err
    assert main([*argv, "--sampler", "pf-ode", "--solver", "dopri5", "--nfe", "20"]) == 1
    _one_line_error(capsys, r"'pf-ode' with method='dopri5' is adaptive.*--rtol/--atol")
    assert main([*argv, "--sampler", "rk4", "--nfe", "0"]) == 1
    _one_line_error(capsys, "--nfe must be a positive number")
