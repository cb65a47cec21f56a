"""The CLI with the DDPM, NCSN and EBM families, end to end on tiny budgets.

Plumbing only (quality is the benchmarks' job): each family trains through the registry,
samples with its own samplers and step counts, and `eval` reports the DDPM ELBO bound.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from probpath.cli import main


def tiny(model: str, *sets: str) -> list[str]:
    args = ["--threads", "1", "--model", model, "--data", "8gaussians", "--n-train", "64"]
    args += ["--n-eval", "32", "--batch", "32", "--hidden", "8", "--quiet", "--steps", "2"]
    for s in sets:
        args += ["--set", s]
    return args


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_diffusion")
    families = {
        "ddpm": ['schedule_kwargs={"T": 20}'],
        "ncsn": ["n_levels=4", "n_steps_per_level=3"],
        "ebm": ["objective=ssm", "n_steps=5", "grid_size=32"],
    }
    for name, sets in families.items():
        assert main(["train", "--out", str(root / name), *tiny(name, *sets)]) == 0
        cfg = json.loads((root / name / "config.json").read_text())
        assert cfg["model"] == name
    return root


@pytest.mark.parametrize(
    ("name", "sampler", "steps", "nfe"),
    [
        ("ddpm", "ancestral", None, 20),  # the full chain by default
        ("ddpm", "ddim", 5, 5),
        ("ncsn", "annealed-langevin", 8, 4 * 2 + 1),  # 8 steps over 4 levels + denoising
        ("ncsn", "pf-ode", 3, None),  # the inherited samplers work on the VE path
        ("ebm", "langevin", 7, 7),
    ],
)
def test_sample_with_each_family_sampler(runs, tmp_path, capsys, name, sampler, steps, nfe):
    out = tmp_path / "x.npy"
    argv = ["sample", str(runs / name), "--n", "6", "--out", str(out), "--json"]
    argv += ["--sampler", sampler] + (["--steps", str(steps)] if steps else [])
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert rows["sampler"] == sampler
    if nfe is not None:
        assert rows["nfe"] == nfe
    x = np.load(out)
    assert x.shape == (6, 2) and np.isfinite(x).all()


def test_unknown_sampler_is_a_one_line_error(runs, tmp_path, capsys):
    code = main(["sample", str(runs / "ebm"), "--sampler", "ddim", "--out", str(tmp_path / "x")])
    assert code != 0
    assert "langevin" in capsys.readouterr().err


def test_eval_reports_the_ddpm_nll_bound(runs, capsys):
    argv = ["eval", str(runs / "ddpm"), "--n", "16", "--json", "--rtol", "1e-3", "--atol", "1e-3"]
    assert main(argv) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # the ELBO bounds the model's NLL from above (up to the ODE's and the MC estimate's error)
    assert rows["nll_bound_nats"] > rows["nll_nats"] - 0.5
    # both reverse variances give a bound; the tighter one is reported and named
    each = {v: rows[f"nll_bound_nats_{v}"] for v in ("beta", "beta_tilde")}
    assert rows["nll_bound_variance"] == min(each, key=each.__getitem__)
    assert rows["nll_bound_nats"] == min(each.values()) and rows["nll_bound_se"] > 0
    assert main(["eval", str(runs / "ebm"), "--n", "16", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert np.isfinite(rows["nll_nats"])  # the grid-normalised density of the EBM
