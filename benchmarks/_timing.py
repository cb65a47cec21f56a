"""Shared timing helpers for the benchmarks (see docs/benchmarks.md, "Method").

- ``setup(threads=2)``: fix the thread count and report the environment;
- ``interleaved(fa, fb)``: time two callables alternately, so drift and noise on a
  shared machine hit both alike; returns per-run times and the median of ratios;
- ``interleave({name: fn})``: the same round-robin for any number of callables;
- ``median_time(fn)``: the median time of one call (e.g. one evaluation of ``f``);
- ``write_results(name, data)``: JSON to ``benchmarks/results/NAME.json``.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

__all__ = ["env_info", "interleave", "interleaved", "median_time", "setup", "write_results"]

RESULTS = Path(__file__).resolve().parent / "results"
MALLOC_VARS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_")


def setup(threads: int = 2) -> dict[str, Any]:
    """Set torch's thread count and return :func:`env_info`."""
    torch.set_num_threads(threads)
    return env_info()


def env_info() -> dict[str, Any]:
    """Versions, threads and allocator settings, stored with every result."""
    return {
        "torch": torch.__version__,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "malloc": {k: os.environ.get(k) for k in MALLOC_VARS},
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _once(fn: Callable[[], Any], inner: int) -> float:
    _sync()
    start = time.perf_counter()
    for _ in range(inner):
        fn()
    _sync()
    return (time.perf_counter() - start) / inner


def _inner(fn: Callable[[], Any], min_time: float) -> int:
    t = _once(fn, 1)
    return max(1, int(min_time / max(t, 1e-9)))


def median_time(fn: Callable[[], Any], repeats: int = 21, min_time: float = 0.01) -> float:
    """Median over ``repeats`` samples of the time of one call (seconds); each sample
    averages enough calls to last about ``min_time``."""
    fn()
    inner = _inner(fn, min_time)
    return statistics.median(_once(fn, inner) for _ in range(repeats))


def interleave(
    fns: dict[str, Callable[[], Any]], repeats: int = 21, min_time: float = 0.01
) -> dict[str, list[float]]:
    """Time several callables round-robin, ``repeats`` rounds (after one warm-up each);
    returns the seconds per call of each, per round. Quantities of one round (e.g. a
    solve and one evaluation of its ``f``) saw the same machine load, so ratios taken
    within a round, then their median, are robust on a shared machine."""
    for fn in fns.values():
        fn()
    inner = {k: _inner(fn, min_time) for k, fn in fns.items()}
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_once(fn, inner[k]))
    return times


def interleaved(
    fa: Callable[[], Any], fb: Callable[[], Any], repeats: int = 21, min_time: float = 0.01
) -> dict[str, Any]:
    """Time ``fa`` and ``fb`` alternately ``repeats`` times (after one warm-up each).

    Returns ``times_a``, ``times_b`` (seconds per call, per run), their medians and
    ``ratio``: the median over runs of ``time_a / time_b`` (robust to load that
    changes between runs, since both sides of a ratio see the same load).
    """
    times = interleave({"a": fa, "b": fb}, repeats, min_time)
    ta, tb = times["a"], times["b"]
    return {
        "times_a": ta,
        "times_b": tb,
        "median_a": statistics.median(ta),
        "median_b": statistics.median(tb),
        "ratio": statistics.median(a / b for a, b in zip(ta, tb, strict=True)),
    }


def write_results(name: str, data: dict[str, Any]) -> Path:
    """Write ``data`` to ``benchmarks/results/NAME.json`` and return the path."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path
