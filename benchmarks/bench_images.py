"""Bits/dim of every family on image data by its default command (issue 11, "Benchmark").

Per family, the real CLI with no training flag but the thread count:

    probpath train --model F --data DATA --out runs/bench_images/DATA/F --quiet --no-plot
    probpath eval RUN --json [--judge JUDGE]
    probpath sample RUN --n 64 --out docs/figures/images_DATA_F.npy   (and its PNG grid)

``train`` ends with the held-out bound on -log P(x) of the test images (the fixed,
stratified 20% split); ``eval`` reports the test bits/dim with its standard error and the
NFE (the DDPM's ELBO with its discretized decoder beside its PF-ODE bound) and, with
``--judge``, the Frechet classifier distance of samples and its floor. Results go to
``benchmarks/results/`` (with the wall times and the
load average: the machine is shared), ``images_DATA_F.json`` per family, so families can run
side by side.

    .venv/bin/python -m benchmarks.bench_images --data digits --families fm ddpm sde cnf

``--sweep RUN --judge JUDGE`` scores a trained image run's samples instead, by the judge,
at each of ``--nfes`` network evaluations (the ``--sampler``, fixed steps) and, for a
conditional run, each guidance scale of ``--scales`` (the judge's accuracy on
classifier-free-guided samples): ``results/images_sweep_DATA.json``.

    .venv/bin/python -m benchmarks.bench_images --sweep runs/bench_images/mnist5k/fm \
        --judge runs/bench_images/mnist5k/judge --nfes 10 20 50 --scales 1 2 3

``--nfe-vs RUN`` counts the network evaluations of the PF-ODE likelihood of ``--n`` test
images (one dequantization draw, Hutchinson's trace with one Rademacher probe, dopri5 at
rtol = atol = 1e-5) by probpath's ``log_prob`` and by an FFJORD-style torchdiffeq solve of
the same field (the state (x, ∫ div), the divergence by one vector-Jacobian product
with a probe fixed per solve): ``results/images_nfe_DATA.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks._timing import env_info, write_results

WORK = Path("runs/bench_images")
FIGURES = Path("docs/figures")
FAMILIES = ("fm", "ddpm", "sde", "ncsn", "cnf")


def _cli(args: list[str]) -> tuple[float, str]:
    """Run ``probpath ARGS``; its wall time and stdout (stderr passes through)."""
    t0 = time.perf_counter()
    out = subprocess.run(
        [sys.executable, "-m", "probpath.cli", *args], check=True, stdout=subprocess.PIPE, text=True
    )
    return time.perf_counter() - t0, out.stdout


def run_family(family: str, a: argparse.Namespace) -> dict[str, Any]:
    """Train, evaluate and sample one family by its default command."""
    run = WORK / Path(a.data).name / family
    threads = ["--threads", str(a.threads)]
    train = ["train", "--model", family, "--data", a.data, "--out", str(run), *shlex.split(a.flags)]
    shutil.rmtree(run, ignore_errors=True)
    load0 = os.getloadavg()[0]
    train_s, _ = _cli([*train, "--quiet", "--no-plot", *threads])
    judge = ["--judge", a.judge] if a.judge else []
    judge += ["--n", str(a.eval_n)] if a.eval_n else []
    eval_s, out = _cli(["eval", str(run), "--json", *judge, *threads])
    grid = FIGURES / f"images_{Path(a.data).name}_{family}.npy"
    _cli(["sample", str(run), "--n", "64", "--out", str(grid), *threads])
    grid.unlink()  # the PNG grid beside it is the figure
    records = [json.loads(r) for r in (run / "metrics.jsonl").read_text().splitlines()]
    return {
        "family": family,
        "command": "probpath " + " ".join(train),
        "train_wall_s": round(train_s, 1),
        "eval_wall_s": round(eval_s, 1),
        "load": [round(load0, 2), round(os.getloadavg()[0], 2)],
        "final_train_eval": [r for r in records if r.get("split") == "eval"][-1],
        "eval": json.loads(out),
    }


def sweep(a: argparse.Namespace) -> dict[str, Any]:
    """Judge scores of ``a.sweep``'s samples at each NFE and guidance scale."""
    import torch

    from probpath.train import load_run
    from probpath.train.judge import judge_scores, load_judge

    torch.set_num_threads(a.threads)
    run = load_run(a.sweep)
    judge = load_judge(a.judge, run)
    images = run.rows().eval[: a.n]
    rows = []
    for nfe in a.nfes:
        sampling = {"sampler": a.sampler, "steps": run.model.steps_for_nfe(a.sampler, nfe)}
        for scale in a.scales if run.classes else [1.0]:
            t0 = time.perf_counter()
            scores = judge_scores(run, judge, images, scale=scale, sampling=sampling)
            rows.append({"nfe": nfe, **scores, "seconds": round(time.perf_counter() - t0, 1)})
            print(json.dumps(rows[-1]))
    return {"run": a.sweep, "sampler": a.sampler, "n_images": len(images), "rows": rows}


def nfe_vs_torchdiffeq(a: argparse.Namespace) -> dict[str, Any]:
    """NFE and bits/dim of one batch of test images: probpath against torchdiffeq."""
    import torch
    import torchdiffeq

    from probpath.metrics import bits_per_dim
    from probpath.train import load_run
    from probpath.train.evaluate import count_nfe

    torch.set_num_threads(a.threads)
    run = load_run(a.nfe_vs)
    model: Any = run.model
    gen = torch.Generator().manual_seed(0)
    x = run.rows().eval[: a.n]
    z = run.space.dequantize(x, generator=gen)
    d, log_det = z[0].numel(), run.space.dequantizer.log_det(z)  # type: ignore[union-attr]
    with count_nfe(model) as ours, torch.no_grad():
        lp = model.log_prob(z, trace="hutchinson", generator=gen)
    probe = torch.randint(0, 2, z.shape, generator=gen).to(z.dtype) * 2 - 1  # Rademacher, as ours
    calls = [0]

    def augmented(
        t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        calls[0] += 1
        with torch.enable_grad():
            y = state[0].detach().requires_grad_(True)
            v = model.velocity(y, t.expand(len(y)))
            (vjp,) = torch.autograd.grad(v, y, probe)
        return v.detach(), -(vjp * probe).flatten(1).sum(1)

    ts = torch.tensor([model.t_min, model.t_max])
    with torch.no_grad():
        zs, neg_div = torchdiffeq.odeint(
            augmented, (z, torch.zeros(len(z))), ts, method="dopri5", rtol=1e-5, atol=1e-5
        )
    lp_tdq = model.prior_log_prob(zs[-1]) - neg_div[-1]

    def bpd(log_p: torch.Tensor) -> float:
        """The dequantized bound (:func:`probpath.dequantization.discrete_nll`) in bits/dim."""
        return float(bits_per_dim(-(log_p + log_det).mean(), d))

    return {
        "run": a.nfe_vs,
        "n_images": len(z),
        "nfe_probpath": ours["nfe"],
        "nfe_torchdiffeq": calls[0],
        "bits_per_dim_probpath": bpd(lp),
        "bits_per_dim_torchdiffeq": bpd(lp_tdq),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--judge", help="an image-classifier run for the Frechet distance")
    p.add_argument("--flags", default="", help='extra train flags, e.g. "--conditional"')
    p.add_argument("--eval-n", type=int, help="eval's test images (default: eval's)")
    p.add_argument("--sweep", metavar="RUN", help="score RUN's samples by --judge instead")
    p.add_argument("--nfes", type=int, nargs="+", default=[10, 20, 50])
    p.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 3.0])
    p.add_argument("--sampler", default="heun", help="--sweep's fixed-step sampler")
    p.add_argument("--n", type=int, default=1000, help="--sweep's held-out images (n/2 each)")
    p.add_argument("--nfe-vs", metavar="RUN", help="likelihood NFE against torchdiffeq")
    a = p.parse_args()
    if a.nfe_vs:
        result = nfe_vs_torchdiffeq(a)
        print(json.dumps(result))
        name = f"images_nfe_{Path(a.nfe_vs).parent.name}"
        write_results(name, {"env": env_info(), "argv": sys.argv[1:], **result})
        return
    if a.sweep:
        result = sweep(a)
        name = f"images_sweep_{Path(a.sweep).parent.name}"
        write_results(name, {"env": env_info(), "argv": sys.argv[1:], **result})
        return
    for family in a.families:
        result = run_family(family, a)
        print(json.dumps({k: result[k] for k in ("family", "train_wall_s", "eval_wall_s")}))
        name = f"images_{Path(a.data).name}_{family}"
        write_results(name, {"env": env_info(), "argv": sys.argv[1:], **result})


if __name__ == "__main__":
    main()
