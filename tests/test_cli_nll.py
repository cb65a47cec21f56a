"""The NLL the CLI reports is that of the data space: scaling the data by c shifts it by
exactly D ln c.

Two runs train on a file X and on the file c X (c = 4) with the same flags. The
standardisation makes both see the same model-space rows: with c a power of two every
operation of the fit and of the map (sums, means, square roots, divisions) commutes with
the scaling exactly, so the two models are the same bit for bit. Everything a run reports
in data space must then move by the change of variables: log p_{cX}(c x) = log p_X(x) -
D ln c, so the held-out NLL of training, ``eval``'s NLL and its ELBO bound all grow by
D ln c, samples scale by c, and so does the energy distance. The tolerance is float32
rounding of numbers of order 10 (1e-5); dropping the log-determinant, or flipping its
sign anywhere, moves a number by D ln c = 2.8 nats.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from probpath.cli import main

C = 4.0  # a power of two: the scaled runs are exact copies in model space
D = 2


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    from probpath.data import sample_toy

    root = tmp_path_factory.mktemp("nll_scale")
    x = 3.0 + 2.0 * sample_toy("moons", 96, generator=0).double().numpy()
    families = {
        "cnf": ["--model", "cnf", "--rtol", "1e-3", "--atol", "1e-3"],
        "ddpm": ["--model", "ddpm", "--set", 'schedule_kwargs={"T": 20}'],
    }
    out = {}
    for scale in (1.0, C):
        np.save(root / f"x{scale:g}.npy", scale * x)
        for name, flags in families.items():
            run = root / f"{name}{scale:g}"
            argv = ["train", "--out", str(run), "--data", str(root / f"x{scale:g}.npy")]
            argv += ["--threads", "1", "--n-train", "64", "--n-eval", "32", "--batch", "32"]
            argv += ["--hidden", "8", "--steps", "3", "--quiet", *flags]
            assert main(argv) == 0
            out[name, scale] = run
    return out


def _eval(run, capsys, *flags):
    capsys.readouterr()
    assert main(["eval", str(run), "--json", "--n", "32", *flags]) == 0
    return json.loads(capsys.readouterr().out)


def _held_out_nll(run):
    recs = [json.loads(s) for s in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in recs if r["split"] == "eval"][-1]["eval_nll"]


@pytest.mark.parametrize("name", ["cnf", "ddpm"])
def test_scaling_the_data_by_c_shifts_every_nll_by_d_ln_c(runs, capsys, name):
    shift = D * math.log(C)
    a, b = runs[name, 1.0], runs[name, C]
    assert _held_out_nll(b) == pytest.approx(_held_out_nll(a) + shift, abs=1e-5)
    flags = ["--rtol", "1e-3", "--atol", "1e-3"] if name == "ddpm" else []
    ra, rb = _eval(a, capsys, *flags), _eval(b, capsys, *flags)
    assert rb["nll_nats"] == pytest.approx(ra["nll_nats"] + shift, abs=1e-5)
    assert rb["bits_per_dim"] == pytest.approx(
        ra["bits_per_dim"] + shift / (D * math.log(2)), abs=1e-5
    )
    if name == "ddpm":  # the ELBO's bound moves with the NLL it bounds
        assert rb["nll_bound_nats"] == pytest.approx(ra["nll_bound_nats"] + shift, abs=1e-5)
    # samples live in data space: scaled by c, and so is their energy distance to the data
    assert rb["energy_distance"] == pytest.approx(C * ra["energy_distance"], rel=1e-5)


def test_samples_of_the_scaled_run_are_the_scaled_samples(runs, tmp_path):
    for scale in (1.0, C):
        out = tmp_path / f"s{scale:g}.npy"
        assert main(["sample", str(runs["cnf", scale]), "--n", "16", "--out", str(out)]) == 0
    a, b = np.load(tmp_path / "s1.npy"), np.load(tmp_path / f"s{C:g}.npy")
    np.testing.assert_allclose(b, C * a, rtol=1e-6, atol=1e-6)
