"""Exact trace against Hutchinson's estimate in a CNF: the cost of one evaluation of the
augmented field as the dimension grows, which sets ``CNF(trace="auto")``'s threshold.

For each dimension d, the CNF's default field (an MLP 3 x 128, tanh, time by concatenation)
on a batch of 512 standard-normal points at t = 0.5:

- ``eval``: the field and its divergence under ``torch.no_grad()`` (a likelihood solve);
- ``train``: the field and its divergence with the graph kept, then the backward pass of
  their sum to the parameters (one evaluation of a maximum-likelihood training solve).

The exact trace costs d vector-Jacobian products, Hutchinson's one. The two sides of each
ratio run round-robin and ratios are medians of within-round ratios (the machine is shared:
the load moves both sides of a round alike).

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        .venv/bin/python -m benchmarks.bench_cnf_trace [--quick] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
from collections.abc import Callable

import torch
from torch import Tensor

from benchmarks._timing import interleave, setup, write_results
from probpath.divergence import exact_divergence, hutchinson_divergence, sample_probe
from probpath.nets import MLP

DIMS = (1, 2, 3, 4, 6, 8, 16, 32, 64, 128)


def _step(net: MLP, x: Tensor, trace: str, train: bool) -> Callable[[], None]:
    probe = sample_probe(x, generator=torch.Generator().manual_seed(0))

    def fn(y: Tensor) -> Tensor:
        return net(y, 0.5)

    def run() -> None:
        with torch.set_grad_enabled(train):
            if trace == "exact":
                v, div = exact_divergence(fn, x, create_graph=train)
            else:
                v, div = hutchinson_divergence(fn, x, probe, create_graph=train)
            if train:
                net.zero_grad(set_to_none=True)
                (v.sum() + div.sum()).backward()

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--quick", action="store_true", help="5 rounds instead of 15")
    args = parser.parse_args()
    env = setup(args.threads)
    repeats = 5 if args.quick else 15
    rows = []
    for d in DIMS:
        torch.manual_seed(0)
        net = MLP(d, (128, 128, 128), "tanh", "concat")
        x = torch.randn(args.batch, d)
        row: dict[str, float | int] = {"dim": d}
        for mode in ("eval", "train"):
            fns = {t: _step(net, x, t, mode == "train") for t in ("exact", "hutchinson")}
            times = interleave(fns, repeats=repeats, min_time=0.05)
            ratio = statistics.median(
                a / b for a, b in zip(times["exact"], times["hutchinson"], strict=True)
            )
            row[f"{mode}_exact_s"] = statistics.median(times["exact"])
            row[f"{mode}_hutchinson_s"] = statistics.median(times["hutchinson"])
            row[f"{mode}_ratio"] = ratio
        rows.append(row)
        print(
            f"d={d:4d}  eval {row['eval_exact_s'] * 1e3:7.2f} / "
            f"{row['eval_hutchinson_s'] * 1e3:6.2f}"
            f" ms = {row['eval_ratio']:5.2f}x   train {row['train_exact_s'] * 1e3:7.2f} / "
            f"{row['train_hutchinson_s'] * 1e3:6.2f} ms = {row['train_ratio']:5.2f}x",
            flush=True,
        )
    path = write_results(  # --quick (a smoke test) must not overwrite the real results
        "cnf_trace_quick" if args.quick else "cnf_trace",
        {"env": env, "batch": args.batch, "repeats": repeats, "rows": rows},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
