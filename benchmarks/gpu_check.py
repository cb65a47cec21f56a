"""GPU check: the CUDA tests and the GPU numbers of docs/benchmarks.md, as one JSON object.

On one GPU, in under 8 minutes::

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        python -m benchmarks.gpu_check > benchmarks/results/gpu_check.json

It reports

- ``cuda_tests``: ``tests/test_cuda.py`` (every family trains and samples with every sampler
  on the GPU, bf16 and compiled paths, a GPU checkpoint on the CPU, no synchronising call in
  a sampler step), its pytest summary;
- ``train``: training throughput (images/s) of every family on 28x28 images with the
  U-Net (families without image support: the MLP on the flattened images; ``net`` says
  which) in fp32, bf16 and compiled, through :func:`probpath.train.train`, measured
  between two log records after warm-up (and compilation); with the peak GPU memory;
- ``sample``: sampling throughput at 20 NFE (DPM-Solver++(2M)) of the diffusion family,
  fp32 and bf16, and the sampler's overhead per step: wall time / (20 x the network's own
  time at the same batch), whose physical limit is 1.0 (the aim: at most 1.1);
- ``bits_per_dim``: PF-ODE likelihood throughput (Heun, 10 steps, Hutchinson trace) in
  fp32 and bf16, with both bits/dim and their standard error (untrained weights: the
  throughput and the bf16 drift, not the value, are the point).

``--device cpu --quick`` runs every part on 8x8 images with tiny budgets in a few seconds
(tests/test_gpu_check.py runs it, so the script cannot rot); ``--modes`` and
``--families`` restrict the training part.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from benchmarks._timing import env_info, median_time
from probpath import metrics
from probpath.device import autocast, resolve_device
from probpath.models import MODELS, build
from probpath.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent
FAMILIES = ("fm", "ddpm", "ncsn", "sde", "cnf", "ebm", "noisy-classifier")
DIFFUSION = ("fm", "ddpm", "ncsn", "sde")
MODES: dict[str, dict[str, Any]] = {
    "fp32": {},
    "bf16": {"precision": "bf16"},
    "compiled": {"compile": "default"},
}
DOUBLE_BACKWARD = {"cnf", "ebm"}  # their losses differentiate the network: no torch.compile
SIZES = {  # side of the images, batch, timed steps after warm-up, rows to sample / evaluate
    False: {"side": 28, "batch": 128, "warmup": 5, "steps": 20, "n_sample": 256, "n_eval": 64},
    True: {"side": 8, "batch": 8, "warmup": 1, "steps": 2, "n_sample": 8, "n_eval": 4},
}


def image_model(family: str, side: int, device: torch.device) -> Any:
    """``family`` on ``side`` x ``side`` grey images: with the U-Net (or the family's
    convolutional network) where the family takes image shapes, else an MLP on the
    flattened images; a CNF with the Hutchinson trace (the exact one costs a backward pass
    per pixel)."""
    extra: dict[str, Any] = {"n_classes": 10} if family == "noisy-classifier" else {}
    if family == "cnf":
        extra["trace"] = "hutchinson"
    if "shape" in inspect.signature(MODELS[family]).parameters:
        model = build(family, shape=[1, side, side], net="unet", **extra)
    else:
        model = build(family, dim=side * side, **extra)
    return model.to(device)


def rows_for(model: Any, n: int) -> torch.Tensor:
    """``n`` random rows in [-1, 1] shaped like the model's data."""
    shape = tuple(getattr(model, "shape", (model.dim,)))
    return torch.rand(n, *shape, generator=torch.Generator().manual_seed(0)) * 2 - 1


@contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, float | None]]:
    """``{"peak_mb": ...}`` filled in on exit: the GPU's peak allocation in the block."""
    out: dict[str, float | None] = {"peak_mb": None}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    yield out
    if device.type == "cuda":
        out["peak_mb"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)


def train_rate(family: str, mode: str, size: dict[str, int], device: torch.device) -> dict:
    """Images/s of :func:`train` between its first and last log records (after warm-up)."""
    if mode == "compiled" and family in DOUBLE_BACKWARD:
        return {"skipped": "the loss differentiates the network twice (no torch.compile)"}
    model = image_model(family, size["side"], device)
    batch, warmup = size["batch"], size["warmup"]
    steps = warmup + size["steps"]
    data = rows_for(model, 4 * batch)
    labels = torch.arange(len(data)) % 10 if family == "noisy-classifier" else None
    cfg = TrainConfig(
        steps=steps, batch_size=batch, log_every=warmup, checkpoint_every=steps, **MODES[mode]
    )
    with tempfile.TemporaryDirectory() as run, peak_memory(device) as mem:
        train(model, data, cfg, run, progress=False, labels=labels)
        log = [json.loads(s) for s in (Path(run) / "metrics.jsonl").read_text().splitlines()]
    first, last = log[0], log[-1]
    rate = batch * (last["step"] - first["step"]) / (last["time"] - first["time"])
    return {"images_per_s": round(rate, 1), "net": type(model.net).__name__, **mem}


def timed(fn: Callable[[], Any], quick: bool) -> float:
    """Median seconds of one call of ``fn`` (after a warm-up call)."""
    return median_time(fn, repeats=1 if quick else 5, min_time=0.0)


def sample_rate(family: str, size: dict[str, int], device: torch.device, quick: bool) -> dict:
    """Images/s at 20 NFE (DPM-Solver++(2M)) in fp32 and bf16, and the overhead per step."""
    model, n = image_model(family, size["side"], device), size["n_sample"]
    steps = model.steps_for_nfe("dpm", 20)
    x, t = rows_for(model, n).to(device), torch.full((n,), 0.5, device=device)
    out: dict[str, Any] = {"nfe": 20, "net": type(model.net).__name__}
    for precision in ("fp32", "bf16"):

        def sample() -> Any:
            gen = torch.Generator(device).manual_seed(0)
            return model.sample(n, sampler="dpm", steps=steps, generator=gen)

        with torch.no_grad(), autocast(device, precision), peak_memory(device) as mem:
            seconds, net = timed(sample, quick), timed(lambda: model.predict(x, t), quick)
        out[precision] = {
            "images_per_s": round(n / seconds, 1),
            "overhead_per_step": round(seconds / (20 * net), 3),
            **mem,
        }
    return out


def bits_per_dim_rate(size: dict[str, int], device: torch.device, quick: bool) -> dict:
    """PF-ODE bits/dim (Heun, 10 steps = 20 NFE, Hutchinson) of the flow-matching model on
    ``n_eval`` rows, fp32 and bf16 on the same probes: throughput, values and their drift."""
    model, n = image_model("fm", size["side"], device), size["n_eval"]
    x = rows_for(model, n).to(device)
    dims = x[0].numel()
    out: dict[str, Any] = {"nfe": 20}

    def log_prob() -> torch.Tensor:  # the same probes for both precisions
        gen = torch.Generator(device).manual_seed(0)
        lp = model.log_prob(
            x, trace="hutchinson", generator=gen, method="heun", options={"step_size": 0.1}
        )
        return lp.detach()

    for precision in ("fp32", "bf16"):
        with autocast(device, precision), peak_memory(device) as mem:
            seconds = timed(log_prob, quick)
            nll = -log_prob().double()
        out[precision] = {
            "images_per_s": round(n / seconds, 1),
            "bits_per_dim": float(metrics.bits_per_dim(float(nll.mean()), dims)),
            "se": float(nll.std() / math.sqrt(n) / (dims * math.log(2))),
            **mem,
        }
    out["drift_bits_per_dim"] = out["bf16"]["bits_per_dim"] - out["fp32"]["bits_per_dim"]
    return out


def cuda_tests(timeout: float) -> dict:
    """``pytest tests/test_cuda.py``: exit code, summary line, failed tests and seconds."""
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "tests/test_cuda.py", "-o", "addopts=", "-q", "-rfE"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    found = re.findall(r"^=* ?(\d+ (?:passed|skipped|failed|error).*?) ?=*$", proc.stdout, re.M)
    summary = found[-1] if found else proc.stdout[-2000:]
    failures = re.findall(r"^(?:FAILED|ERROR) .*$", proc.stdout, re.M)
    seconds = round(time.perf_counter() - t0, 1)
    return {
        "returncode": proc.returncode,
        "summary": summary,
        "failures": failures,
        "seconds": seconds,
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    p.add_argument("--quick", action="store_true", help="8x8 images, tiny budgets")
    p.add_argument("--modes", default=",".join(MODES), help="training modes to time")
    p.add_argument("--families", default=",".join(FAMILIES), help="families to train")
    p.add_argument("--tests-timeout", type=float, default=240.0, help="seconds for the tests")
    args = p.parse_args(argv)
    device, size = resolve_device(args.device), SIZES[args.quick]
    modes, families = args.modes.split(","), args.families.split(",")
    t0 = time.perf_counter()
    out: dict[str, Any] = {"env": env_info(), "device": str(device), "quick": args.quick}
    out["cuda_tests"] = cuda_tests(args.tests_timeout)
    out["train"] = {f: {m: train_rate(f, m, size, device) for m in modes} for f in families}
    out["sample"] = {f: sample_rate(f, size, device, args.quick) for f in DIFFUSION}
    out["bits_per_dim"] = bits_per_dim_rate(size, device, args.quick)
    out["seconds"] = round(time.perf_counter() - t0, 1)
    return out


if __name__ == "__main__":
    print(json.dumps(main()))
