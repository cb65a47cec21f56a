"""Markdown tables of ``bench_defaults`` results (``bench_defaults --report NAME ...``)."""

from __future__ import annotations

import json
from typing import Any

from benchmarks._timing import RESULTS

TARGET = {2: 0.10, 5: 0.20}
"""The issue's target gap (nats) per dimension."""


def _row(r: dict[str, Any]) -> str:
    p, ev = r["problem"], r["eval"]
    est = r.get("quiet_estimate")
    quiet = f"{est['train_wall_s']:.0f}" if est else ""
    target = TARGET.get(p["dim"])
    met = "" if target is None else (" ✓" if r["gap"] < target else " ✗")
    return (
        f"| {r['family']} | {p['dim']} | {p['seed']} (K={p['K']})"
        f" | **{r['gap']:.3f}** ± {r['gap_se']:.3f}{met}"
        f" | {r['nll_minus_H']:+.3f} ± {r['nll_minus_H_se']:.3f}"
        f" | {ev['energy_distance']:.4f} ({ev['noise_floor']:.4f} ± {ev['noise_floor_std']:.4f})"
        f" | {r['train_wall_s']:.0f} ({r['final_eval_s']:.0f}) | {r['eval_wall_s']:.0f}"
        f" | {r['steps_per_s']:.0f} | {r['load'][0]:.1f}–{max(r['load']):.1f} | {quiet} |"
    )


def _time_to_gap(r: dict[str, Any]) -> str:
    dim = r["problem"]["dim"]
    target = TARGET.get(dim, 0.20)
    hit = next((c for c in r["curve"] if c["gap"] < target), None)
    est = r.get("quiet_estimate")
    if hit is None:
        return f"| {r['family']} | {dim} | {target:.2f} | not reached | | | {r['gap']:.3f} |"
    quiet = f"{hit['step'] * est['step_s']:.0f}" if est else ""
    return (
        f"| {r['family']} | {dim} | {target:.2f} | {hit['step']} | {hit['fit_s']:.0f} | {quiet}"
        f" | {r['curve'][-1]['gap']:.3f} |"
    )


def report(names: list[str]) -> None:
    """Print the results table of every run and the time-to-gap table of traced runs."""
    runs = [r for n in names for r in json.loads((RESULTS / f"{n}.json").read_text())["results"]]
    print(
        "| family | d | seed | gap ± s.e. | NLL − H ± s.e. | energy distance (floor ± sd) "
        "| train s (final eval) | eval s | steps/s | load | quiet 2-core s |"
    )
    print("|---" * 11 + "|")
    for r in runs:
        if "gap" in r:
            print(_row(r))
    print()
    print("| family | dim | target | first step under it | training s | quiet 2-core s | end gap |")
    print("|---" * 7 + "|")
    for r in runs:
        if "curve" in r and "fit_s" in r["curve"][0]:
            print(_time_to_gap(r))
