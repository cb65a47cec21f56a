"""What bf16 does to likelihoods, and what torch.compile does to a small model, on the CPU.

1. ``precision``: a flow-matching model (MLP) trained in fp32 on 8gaussians (2-D) and on
   digits (64-D), and one trained in bf16; the held-out PF-ODE NLL (dopri5, rtol = atol =
   1e-5, exact trace) evaluated in fp32 and in bf16 (CPU autocast): NLL, its standard
   error, bits/dim, NFE and seconds, and the paired per-row difference bf16 - fp32 with its
   standard error. The claim checked (docs/gpu.md): bits/dim move by less than their
   standard error.
2. ``compile``: the same model's training step and 20-NFE sampling, eager and with
   ``torch.compile`` (mode "default"), interleaved, medians of ratios; the compile seconds.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        .venv/bin/python -m benchmarks.bench_precision

Writes ``benchmarks/results/precision.json``. The machine is shared with other jobs: the
seconds are noisy; the ratios are medians of interleaved runs.
"""

from __future__ import annotations

import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from benchmarks._timing import interleaved, setup, write_results
from probpath import metrics
from probpath.device import autocast, compile_networks
from probpath.models import build
from probpath.train import RunConfig, TrainConfig, count_nfe, fit, load_run

CPU = torch.device("cpu")
RUNS = {  # data, hidden widths, steps, held-out rows
    "8gaussians": ([64, 64, 64], 3000, 2000),
    "digits": ([256, 256, 256], 3000, None),
}


def _fit(data: str, precision: str, root: Path) -> Path:
    hidden, steps, n_eval = RUNS[data]
    sizes = {"n_train": 20_000, "n_eval": n_eval} if n_eval else {}
    cfg = RunConfig(
        model="fm",
        model_config={"hidden": hidden},
        data=data,
        **sizes,
        train=TrainConfig(steps=steps, batch_size=256, lr=2e-3, precision=precision),
    )
    out = root / f"{data}-{precision}"
    fit(cfg, out, progress=False, device="cpu")
    return out


def _evaluate(run_dir: Path, precision: str) -> tuple[dict[str, Any], torch.Tensor]:
    run = load_run(run_dir, device="cpu")
    x = run.rows().eval
    t0 = time.perf_counter()
    with count_nfe(run.model) as c, autocast(CPU, precision):
        lp = run.log_prob(x).double()
    nll, dims = -lp, x[0].numel()
    row = {
        "nll": float(nll.mean()),
        "se": float(nll.std() / math.sqrt(len(nll))),
        "bits_per_dim": float(metrics.bits_per_dim(float(nll.mean()), dims)),
        "nfe": c["nfe"],
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return row, nll


def precision_part(root: Path) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for data in RUNS:
        fp32_run, bf16_run = _fit(data, "fp32", root), _fit(data, "bf16", root)
        rows: dict[str, Any] = {}
        (rows["eval_fp32"], a), (rows["eval_bf16"], b) = (
            _evaluate(fp32_run, p) for p in ("fp32", "bf16")
        )
        d = b - a
        rows["paired_diff_bf16_eval"] = {
            "mean_nats": float(d.mean()),
            "se_nats": float(d.std() / math.sqrt(len(d))),
        }
        rows["trained_bf16_eval_fp32"], _ = _evaluate(bf16_run, "fp32")
        out[data] = rows
    return out


def compile_part() -> dict[str, Any]:
    data = torch.randn(4096, 2)
    models = {}
    for mode in (None, "default"):
        torch.manual_seed(0)
        models[mode] = build("fm", dim=2, hidden=[128, 128, 128])
    t0 = time.perf_counter()
    compile_networks(models["default"])
    opts = {m: torch.optim.Adam(models[m].parameters(), lr=1e-3, fused=True) for m in models}

    def step(mode: str | None) -> None:
        gen = torch.Generator().manual_seed(0)
        opts[mode].zero_grad(set_to_none=True)
        loss, _ = models[mode].loss(data[:256], generator=gen)
        loss.backward()
        opts[mode].step()

    step("default")  # compiles the training graphs
    step("default")
    compile_seconds = time.perf_counter() - t0

    def sample(mode: str | None) -> None:
        with torch.no_grad():
            models[mode].sample(1000, sampler="dpm", steps=20)

    sample("default")  # compiles the inference graph
    train_ratio = interleaved(lambda: step("default"), lambda: step(None), repeats=21)
    sample_ratio = interleaved(lambda: sample("default"), lambda: sample(None), repeats=11)
    return {
        "model": "fm, MLP 3 x 128, batch 256 (train), 1000 samples at 20 NFE (dpm)",
        "compile_seconds": round(compile_seconds, 1),
        "train_step_compiled_over_eager": train_ratio["ratio"],
        "train_step_eager_seconds": train_ratio["median_b"],
        "sample_compiled_over_eager": sample_ratio["ratio"],
        "sample_eager_seconds": sample_ratio["median_b"],
    }


def main() -> None:
    env = setup(threads=2)
    with tempfile.TemporaryDirectory() as root:
        precision = precision_part(Path(root))
    result = {"env": env, "precision": precision, "compile": compile_part()}
    print(write_results("precision", result))


if __name__ == "__main__":
    main()
