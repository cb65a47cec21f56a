"""Every family's training defaults on held-out Gaussian mixtures (issue 13, section 2).

Problems (:func:`make_mixture`): seeded Gaussian mixtures with known density, K in 3..10
components, Dirichlet(2) weights, means ~ N(0, 2^2 I), each covariance a Haar rotation of
eigenvalues spread geometrically over a condition number in [3, 30] (geometric-mean
standard deviation 0.1-0.7); d = 2, 5 and 10. Two disjoint seed sets: ``tune`` (the
defaults were chosen on these) and ``test`` (held out: the reported numbers). Each
problem is a .npy file of 20 000 rows; its entropy H = -E log p is a Monte Carlo mean over
200 000 fresh samples (standard error stored).

Per family and problem, the real CLI with no other flag:

    probpath train --model F --data FILE --out RUN --quiet
    probpath eval RUN --json

``train`` splits the file 80/20 (16 000 / 4000 rows) and ends with the held-out NLL of the
4000 rows (``eval_nll`` in RUN/metrics.jsonl). The gap is the paired estimate
``eval_nll - mean(-log p)`` over those same rows: the KL divergence from the data to the
model, free of the sampling noise of H; its standard error comes from the per-row
differences ``log p - log q`` on the first ``--se-rows`` rows (the model's likelihood
recomputed as ``probpath eval`` does). ``eval`` adds the energy distance of 2000 samples
to the held-out rows, its noise floor, the NFE and its own wall time.

``--curve N`` runs the same training again (same seed: the same run) evaluating N times
(``--eval-every`` the default steps / N, on all held-out rows); the gap at each
evaluation against the training seconds spent to reach it (the plain run's seconds per
step, or, with ``--tune``, this run's own clock without its evaluations) gives the time
to a gap. ``--tune`` runs only this traced training, with ``--flags`` appended (how the
defaults were chosen).

``--estimate`` adds to every run of the results file the seconds per training step and of
the final held-out evaluation at 2 threads, from the trained weights (so at the field's
final NFE: an upper bound for the ODE-trained CNF), for the wall time on a quiet 2-core
machine. The machine is shared: the load average is stored with every measurement.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        .venv/bin/python -m benchmarks.bench_defaults --split test --dims 2 5 --curve 10
    .venv/bin/python -m benchmarks.bench_defaults --estimate     # when the machine is quiet
    .venv/bin/python -m benchmarks.bench_defaults --report defaults  # markdown tables
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks._timing import RESULTS, env_info, write_results
from probpath.analytic import GaussianMixture
from probpath.paths import CondOTSchedule

FAMILIES = ("cnf", "fm", "ddpm", "sde", "ncsn", "ebm")
SEEDS = {"tune": (0, 1), "test": (100, 101)}
N_ROWS = 20_000
N_ENTROPY = 200_000
WORK = Path("runs/bench_defaults")


def make_mixture(dim: int, seed: int) -> GaussianMixture:
    """A random rotated, anisotropic Gaussian mixture in ``dim`` dimensions (float64; its
    data law is ``log_prob(x, 0.0)``: the CondOT path is the identity at t = 0).

    >>> gm = make_mixture(2, 0)
    >>> gm.dim, 3 <= len(gm.weights) <= 10
    (2, True)
    """
    g = torch.Generator().manual_seed(1000 * dim + seed)
    k = int(torch.randint(3, 11, (1,), generator=g))
    weights = torch._standard_gamma(torch.full((k,), 2.0, dtype=torch.float64), generator=g)
    means = 2.0 * torch.randn(k, dim, generator=g, dtype=torch.float64)
    covs = []
    for _ in range(k):
        q, r = torch.linalg.qr(torch.randn(dim, dim, generator=g, dtype=torch.float64))
        q = q * torch.sign(torch.diagonal(r))  # Haar-distributed rotation
        cond = 3.0 + 27.0 * float(torch.rand((), generator=g))
        scale = 0.1 + 0.6 * float(torch.rand((), generator=g))  # geometric-mean std
        u = torch.rand(dim, generator=g, dtype=torch.float64)
        u[0], u[-1] = 0.0, 1.0  # the extreme eigenvalues are exactly cond apart
        eig = scale**2 * cond ** (u - 0.5)
        covs.append(q @ torch.diag(eig) @ q.T)
    return GaussianMixture(weights, means, torch.stack(covs), CondOTSchedule())


def write_problem(dim: int, seed: int, folder: Path) -> dict[str, Any]:
    """Write ``N_ROWS`` samples to ``folder/gmm_d{dim}_s{seed}.npy``; its entropy by MC."""
    gm = make_mixture(dim, seed)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"gmm_d{dim}_s{seed}.npy"
    g = torch.Generator().manual_seed(7 + seed)
    rows = gm.sample(N_ROWS, generator=g).numpy()
    if not path.is_file():  # the same seeded rows every time; concurrent runs read it
        tmp = path.with_suffix(f".{os.getpid()}.npy")
        np.save(tmp, rows, allow_pickle=False)
        tmp.rename(path)
    nlp = -gm.log_prob(gm.sample(N_ENTROPY, generator=g), 0.0)
    cond = gm.eigvals.max(-1).values / gm.eigvals.min(-1).values
    return {
        "file": str(path),
        "dim": dim,
        "seed": seed,
        "K": len(gm.weights),
        "max_condition": float(cond.max()),
        "entropy": float(nlp.mean()),
        "entropy_se": float(nlp.std() / math.sqrt(N_ENTROPY)),
    }


def _cli(args: list[str]) -> tuple[float, str]:
    """Run ``probpath ARGS`` in a subprocess; its wall seconds and stdout."""
    cmd = [sys.executable, "-m", "probpath.cli", *args]
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if out.returncode:
        raise RuntimeError(f"{shlex.join(args)} failed:\n{out.stderr[-3000:]}")
    return seconds, out.stdout


def _records(run: Path, split: str) -> list[dict[str, Any]]:
    lines = (run / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r.get("split") == split]


def _test_rows(run: Path) -> torch.Tensor:
    """The held-out rows of a run, as ``probpath train`` split them."""
    from probpath.train import RunConfig
    from probpath.train.rows import load_rows

    return load_rows(RunConfig.load(run)).eval


def _threads(threads: int | None) -> list[str]:
    return [] if threads is None else ["--threads", str(threads)]


def run_case(
    family: str, problem: dict[str, Any], a: argparse.Namespace, flags: list[str]
) -> dict[str, Any]:
    """Train, evaluate and (with ``a.curve``) trace the gap of one family on one problem."""
    run = WORK / "runs" / a.name / f"{family}_d{problem['dim']}_s{problem['seed']}"
    train_args = ["train", "--model", family, "--data", problem["file"], "--out", str(run)]
    result: dict[str, Any] = {
        "family": family,
        "problem": problem,
        "flags": flags,
        "threads": a.threads,
        "command": "probpath " + shlex.join(train_args),
        "run": str(run),
    }
    if not a.tune:
        result.update(_plain(problem, run, train_args, a.threads, a.se_rows))
    if a.curve:
        s_per_step = None if a.tune else result["fit_s"] / result["steps"]
        extra = [*_threads(a.threads), *flags]
        every = max(1, _default_steps(family, flags) // a.curve)
        result["curve"] = _curve(problem, run, train_args, extra, every)
        for point in result["curve"]:
            if s_per_step is not None:
                point["fit_s"] = point["step"] * s_per_step
    keys = ("steps", "fit_s", "final_eval_s", "gap", "gap_se", "eval_wall_s", "load")
    summary = {k: result[k] for k in keys if k in result}
    if a.curve:
        summary["curve"] = [(c["step"], round(c["gap"], 3)) for c in result["curve"]]
    print(json.dumps({"family": family, "dim": problem["dim"], "seed": problem["seed"], **summary}))
    return result


def _plain(
    problem: dict[str, Any], run: Path, train_args: list[str], threads: int | None, se_rows: int
) -> dict[str, Any]:
    """The timed run: ``probpath train`` then ``probpath eval --json``; the paired gap."""
    from probpath.train import load_run

    subprocess.run(["rm", "-rf", str(run)], check=True)
    load0 = os.getloadavg()[0]
    train_s, _ = _cli([*train_args, "--quiet", *_threads(threads)])
    load1 = os.getloadavg()[0]
    eval_s, out = _cli(["eval", str(run), "--json", *_threads(threads)])
    gm = make_mixture(problem["dim"], problem["seed"])
    last = _records(run, "train")[-1]
    x = _test_rows(run)
    exact = gm.log_prob(x.double(), 0.0)
    nll = _records(run, "eval")[-1]["eval_nll"]
    diff = exact[:se_rows] - load_run(run).log_prob(x[:se_rows]).double()
    return {
        "steps": last["step"],
        "train_wall_s": round(train_s, 1),
        "fit_s": round(last["time"], 1),  # the last training record: before the final eval
        "final_eval_s": round(train_s - last["time"], 1),
        "steps_per_s": round(last["step"] / last["time"], 1),
        "eval_wall_s": round(eval_s, 1),
        "load": [round(load0, 2), round(load1, 2), round(os.getloadavg()[0], 2)],
        "test_nll": nll,
        "n_test": len(x),
        "gap": nll + float(exact.mean()),
        "gap_se": float(diff.std()) / math.sqrt(len(x)),
        "nll_minus_H": nll - problem["entropy"],
        "nll_minus_H_se": math.hypot(float(exact.std()) / math.sqrt(len(x)), problem["entropy_se"]),
        "eval": json.loads(out),
    }


def _default_steps(family: str, flags: list[str]) -> int:
    """The steps a ``probpath train --model family`` run takes (``--steps`` in ``flags``)."""
    from probpath.models import MODELS
    from probpath.train import TrainConfig

    if "--steps" in flags:
        return int(flags[flags.index("--steps") + 1])
    return int(getattr(MODELS[family], "train_defaults", {}).get("steps", TrainConfig.steps))


def _curve(
    problem: dict[str, Any], run: Path, train_args: list[str], flags: list[str], every: int
) -> list[dict[str, float]]:
    """The same training with ``--eval-every``: the gap at every ``every`` steps and this
    run's training seconds to reach it (its evaluations excluded)."""
    curve_run = run.with_name(run.name + "_curve")
    subprocess.run(["rm", "-rf", str(curve_run)], check=True)
    every_rows = ["--eval-every", str(every), "--eval-rows", str(N_ROWS), "--eval-budget", "0"]
    _cli([*train_args[:-1], str(curve_run), "--quiet", *every_rows, *flags])
    gm = make_mixture(problem["dim"], problem["seed"])
    mean_logp = float(gm.log_prob(_test_rows(curve_run).double(), 0.0).mean())
    evals = _records(curve_run, "eval")
    clock = {r["step"]: r["time"] for r in _records(curve_run, "train")}
    points = []
    for r in evals:  # this run's training seconds: its clock less the evaluations before
        own = clock[r["step"]] - sum(e["seconds"] for e in evals if e["step"] < r["step"])
        points.append({"step": r["step"], "gap": r["eval_nll"] + mean_logp, "own_fit_s": own})
    return points


def estimate(name: str, repeats: int) -> None:
    """Seconds per training step and of the final evaluation at 2 threads, per run."""
    from probpath.train import default_evaluate, load_run

    torch.set_num_threads(2)
    path = RESULTS / f"{name}.json"
    data = json.loads(path.read_text())
    for r in data["results"]:
        if "steps" not in r:
            continue
        run = Path(r["run"])
        loaded = load_run(run, ema=False)
        model: Any = loaded.model.train()
        opt = torch.optim.Adam(model.parameters(), 1e-4, fused=True)
        x, log_det = loaded.to_model_space(_test_rows(run))
        batch = loaded.config.train.batch_size
        gen = torch.Generator().manual_seed(0)
        times, load0 = [], os.getloadavg()[0]
        for _ in range(repeats + 1):
            xb = x[torch.randint(len(x), (batch,), generator=gen)]
            t0 = time.perf_counter()
            loss, _ = model.loss(xb, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            times.append(time.perf_counter() - t0)
        step_s = statistics.median(times[1:])
        ema = load_run(run).model
        t0 = time.perf_counter()
        default_evaluate(ema, x, log_det=float(log_det.mean()))
        eval_s = time.perf_counter() - t0
        r["quiet_estimate"] = {
            "step_s": step_s,
            "final_eval_s": eval_s,
            "train_wall_s": r["steps"] * step_s + eval_s,
            "load": [round(load0, 2), round(os.getloadavg()[0], 2)],
        }
        print(r["family"], r["problem"]["dim"], r["problem"]["seed"], r["quiet_estimate"])
        path.write_text(json.dumps(data, indent=2) + "\n")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--split", choices=sorted(SEEDS), default="test")
    p.add_argument("--dims", type=int, nargs="+", default=[2, 5])
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--seeds", type=int, nargs="+", help="problem seeds (default: the split's)")
    p.add_argument("--threads", type=int, help="--threads of both commands (default: unset)")
    p.add_argument("--se-rows", type=int, default=500, help="rows for the paired s.e.")
    p.add_argument("--curve", type=int, default=0, help="N evaluations in a second run")
    p.add_argument("--curve-seeds", type=int, nargs="+", help="seeds traced (default: all)")
    p.add_argument("--tune", action="store_true", help="the --curve run only, with --flags")
    p.add_argument("--flags", default="", help="extra train flags (with --tune)")
    p.add_argument("--estimate", action="store_true", help="2-thread timing of --name's runs")
    p.add_argument("--repeats", type=int, default=20, help="training steps timed (--estimate)")
    p.add_argument("--name", default="defaults", help="results/NAME.json")
    p.add_argument("--report", nargs="+", metavar="NAME", help="print tables of results")
    a = p.parse_args()
    if a.report:
        from benchmarks._defaults_report import report

        report(a.report)
        return
    if a.estimate:
        estimate(a.name, a.repeats)
        return
    flags = shlex.split(a.flags)
    if flags and not a.tune:
        raise SystemExit("--flags only with --tune: the reported runs take no flag")
    if "--threads" in flags:  # the old spelling of --threads, inside --flags
        i = flags.index("--threads")
        a.threads, flags = int(flags[i + 1]), flags[:i] + flags[i + 2 :]
    torch.set_num_threads(a.threads or 2)
    results: list[dict[str, Any]] = []
    curve = a.curve
    for dim in a.dims:
        for seed in a.seeds or SEEDS[a.split]:
            problem = write_problem(dim, seed, WORK / "data")
            a.curve = curve if a.curve_seeds is None or seed in a.curve_seeds else 0
            for family in a.families:
                if family == "ebm" and dim != 2:
                    continue  # its log_prob is a 2-D grid quadrature
                results.append(run_case(family, problem, a, flags))
                info = {"env": env_info(), "split": a.split, "argv": sys.argv[1:]}
                write_results(a.name, {**info, "results": results})


if __name__ == "__main__":
    main()
