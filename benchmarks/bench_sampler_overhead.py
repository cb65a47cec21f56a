"""Sampler overhead on a small network, before/after a change, and shared_time's worth.

1. Every sampler of a VP ``ScoreSDE`` and of a ``DDPM`` (MLP 3 x ``--width``, untrained:
   the time does not depend on the weights) draws ``--n`` samples on 1 thread; reported:
   the median time and the overhead ``time / (NFE x one network call)`` (1.0 is the
   physical limit), the network call timed in the same rounds. Times are the thread's CPU
   time (one thread; robust to the load of a shared machine), round-robin, medians of
   ratios.
2. ``--compare-with SRC``: the same samplers, same weights and draws, from another
   checkout's ``src/`` (e.g. the commit before a change, ``git worktree add``), loaded
   as a renamed package and interleaved with this one: ratio = this / other.
3. ``--tricks``: ``shared_time`` (a batch of one repeated time, the samplers'
   ``t.expand(batch)``, taken as one time) switched off at each of its uses — the MLP's
   one-row conditioning, and the schedule evaluations of the conversions to score, eps,
   x0 and velocity (``parametrize.convert_model``, ``DiffusionModel.velocity``) —
   interleaved with it on: ratio = on / off (MLP 3 x 128).

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        .venv/bin/python -m benchmarks.bench_sampler_overhead [--compare-with OLD/src] [--tricks]
"""

from __future__ import annotations

import argparse
import importlib
import re
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import torch

import probpath
import probpath._time
import probpath.models._predictions
import probpath.nets.mlp
import probpath.parametrize
from benchmarks._timing import setup, write_results


def interleave(fns: dict[str, Callable[[], Any]], repeats: int) -> dict[str, list[float]]:
    """``repeats`` round-robin rounds of one call each (after a warm-up), timed in this
    thread's CPU time: the samplers run on one thread, and on a machine shared with other
    jobs CPU time counts the work done, not the waits for a core."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            start = time.thread_time()
            fn()
            times[k].append(time.thread_time() - start)
    return times


CASES: dict[str, tuple[str, str, dict[str, Any]]] = {
    "euler-maruyama 200": ("sde", "euler-maruyama", dict(steps=200)),
    "pc 100": ("sde", "pc", dict(steps=100)),
    "pf-ode euler 200": ("sde", "pf-ode", dict(steps=200, method="euler")),
    "pf-ode dopri5 1e-3": ("sde", "pf-ode", dict(rtol=1e-3, atol=1e-3)),
    "heun 50": ("sde", "heun", dict(steps=50)),
    "dpm++(2m) 50": ("sde", "dpm", dict(steps=50)),
    "ancestral 200": ("ddpm", "ancestral", dict(steps=200)),
    "ddim 50": ("ddpm", "ddim", dict(steps=50)),
}


def load_other(src: Path) -> ModuleType:
    """The ``probpath`` package under ``src`` imported as ``probpath_other``."""
    root = Path(tempfile.mkdtemp())
    shutil.copytree(src / "probpath", root / "probpath_other")
    for f in (root / "probpath_other").rglob("*.py"):
        f.write_text(re.sub(r"\bprobpath\b", "probpath_other", f.read_text()))
    sys.path.insert(0, str(root))
    return importlib.import_module("probpath_other")


def models(pkg: ModuleType, width: int, weights: dict | None) -> dict[str, Any]:
    models = importlib.import_module(f"{pkg.__name__}.models")
    torch.manual_seed(0)
    out = {
        "sde": models.ScoreSDE(dim=2, sde="vp", hidden=[width] * 3),
        "ddpm": models.DDPM(dim=2, hidden=[width] * 3),
    }
    for m in out.values():
        m.load_state_dict(weights or out["sde"].state_dict())
        m.eval()
    return out


def sampler(model: Any, name: str, n: int, opts: dict[str, Any]) -> Callable[[], int]:
    def run() -> int:
        with torch.no_grad():
            g = torch.Generator().manual_seed(0)
            return model.sample_with_nfe(n, generator=g, sampler=name, **opts)[1]

    return run


NET_CALLS = 50


def net_call(model: Any, n: int) -> Callable[[], None]:
    """``NET_CALLS`` network calls as the samplers make them (one shared time)."""
    x, t = torch.randn(n, 2), torch.tensor(0.5).expand(n)

    def run() -> None:
        with torch.no_grad():
            for _ in range(NET_CALLS):
                model.predict(x, t)

    return run


def median_ratio(a: list[float], b: list[float]) -> float:
    return statistics.median(x / y for x, y in zip(a, b, strict=True))


def overhead(width: int, n: int, other: ModuleType | None, repeats: int) -> dict[str, Any]:
    ours = models(probpath, width, None)
    theirs = models(other, width, ours["sde"].state_dict()) if other is not None else None
    rows: dict[str, Any] = {}
    for label, (family, name, opts) in CASES.items():
        fns = {"ours": sampler(ours[family], name, n, opts), "net": net_call(ours["sde"], n)}
        if theirs is not None:
            fns["other"] = sampler(theirs[family], name, n, opts)
        nfe = fns["ours"]()
        times = interleave(fns, repeats)
        row = {
            "nfe": nfe,
            "seconds": statistics.median(times["ours"]),
            "overhead": median_ratio(times["ours"], [nfe * t / NET_CALLS for t in times["net"]]),
        }
        if theirs is not None:
            row["seconds_other"] = statistics.median(times["other"])
            row["ratio_to_other"] = median_ratio(times["ours"], times["other"])
        rows[label] = row
        print(f"{label:20s} " + "  ".join(f"{k} {v:.4g}" for k, v in row.items()), flush=True)
    return rows


def tricks(width: int, n: int, repeats: int) -> dict[str, Any]:
    """``shared_time`` switched off at each of its uses, against on."""
    shared = probpath._time.shared_time
    sites = {  # the modules whose shared_time is switched off
        "mlp": [probpath.nets.mlp],
        "conversions": [probpath.parametrize, probpath.models._predictions],
    }
    ours = models(probpath, width, None)

    def off(modules: list[ModuleType], fn: Callable[[], Any]) -> Callable[[], Any]:
        def run() -> Any:
            for m in modules:
                m.shared_time = lambda t: t  # type: ignore[attr-defined]
            try:
                return fn()
            finally:
                for m in modules:
                    m.shared_time = shared  # type: ignore[attr-defined]

        return run

    out: dict[str, Any] = {}
    for site, modules in sites.items():
        for label in ("euler-maruyama 200", "pf-ode euler 200", "ancestral 200"):
            family, name, opts = CASES[label]
            fn = sampler(ours[family], name, n, opts)
            times = interleave({"on": fn, "off": off(modules, fn)}, repeats)
            ratio = out[f"{site}: {label}"] = median_ratio(times["on"], times["off"])
            print(f"shared_time at {site:11s} {label:20s} on/off {ratio:.3f}", flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=64, help="hidden width of the 3-layer MLP")
    parser.add_argument("--n", type=int, default=1000, help="samples per run (the batch)")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--compare-with", type=Path, help="another checkout's src/ directory")
    parser.add_argument("--tricks", action="store_true", help="shared_time on/off (width 128)")
    args = parser.parse_args()
    env = setup(threads=1)  # the machine is shared: one thread per process
    other = load_other(args.compare_with) if args.compare_with else None
    results: dict[str, Any] = {"env": env, "width": args.width, "n": args.n}
    results["samplers"] = overhead(args.width, args.n, other, args.repeats)
    if args.compare_with:
        results["compared_with"] = str(args.compare_with)
    if args.tricks:
        results["shared_time"] = tricks(128, args.n, args.repeats)
    write_results(f"sampler_overhead_{args.width}", results)


if __name__ == "__main__":
    main()
