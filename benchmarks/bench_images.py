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
"""

from __future__ import annotations

import argparse
import json
import os
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
    train = ["train", "--model", family, "--data", a.data, "--out", str(run), *a.flags]
    shutil.rmtree(run, ignore_errors=True)
    load0 = os.getloadavg()[0]
    train_s, _ = _cli([*train, "--quiet", "--no-plot", *threads])
    judge = ["--judge", a.judge] if a.judge else []
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


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="digits")
    p.add_argument("--families", nargs="+", default=list(FAMILIES), choices=FAMILIES)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--judge", help="an image-classifier run for the Frechet distance")
    p.add_argument("--flags", nargs="*", default=[], help="extra train flags (not the default)")
    a = p.parse_args()
    for family in a.families:
        result = run_family(family, a)
        print(json.dumps({k: result[k] for k in ("family", "train_wall_s", "eval_wall_s")}))
        name = f"images_{Path(a.data).name}_{family}"
        write_results(name, {"env": env_info(), "argv": sys.argv[1:], **result})


if __name__ == "__main__":
    main()
