"""probpath.solvers.odeint_adjoint against torchdiffeq.odeint_adjoint, side by side in one run.

Reference problem: f(t, y) = MLP(concat(y, t)), 3 -> 64 -> 64 -> 2 with tanh, batch 1024,
float32, t from 0 to 1, loss = sum of y(1)^2, dopri5 at rtol = atol = 1e-5, 2 threads.
Reports forward and backward NFE (a counter around f, the same for both libraries), the
median wall time of one forward + backward over interleaved runs and the median ratio;
then backprop through the solver (wall and memory), and the memory of both methods as a
fixed-step rk4 takes 1x..16x the steps: peak bytes held by autograd's saved tensors
(deterministic) and, without --quick, peak RSS of a fresh subprocess.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \
        .venv/bin/python -m benchmarks.bench_adjoint [--quick]
"""

from __future__ import annotations

import argparse
import copy
import statistics
import subprocess
import sys
import time
import weakref
from collections.abc import Callable
from typing import Any

import torch
import torchdiffeq

from benchmarks._timing import interleaved, setup, write_results
from benchmarks.bench_ode import Field
from probpath.solvers import odeint, odeint_adjoint

TOL = dict(rtol=1e-5, atol=1e-5)
BASE_STEPS = 5  # rk4 steps of the memory sweep at 1x


class Counted(torch.nn.Module):
    """``field`` with a call counter: NFE measured the same way for every solver."""

    def __init__(self, field: torch.nn.Module) -> None:
        super().__init__()
        self.field = field
        self.calls = 0

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        return self.field(t, y)


def _step(solver: Callable[..., Any], f: Counted, y0: torch.Tensor, **kw: Any) -> tuple[int, int]:
    """One forward + backward; returns (forward NFE, backward NFE)."""
    for p in f.parameters():
        p.grad = None
    y = y0.detach().requires_grad_(True)
    start = f.calls
    ys = solver(f, y, torch.tensor([0.0, 1.0]), **kw)
    mid = f.calls
    ys[-1].square().sum().backward()
    return mid - start, f.calls - mid


def _gradient(solver: Callable[..., Any], f: Counted, y0: torch.Tensor, **kw: Any) -> torch.Tensor:
    """d(loss)/d(y0, θ) as one float64 vector."""
    y = y0.detach().requires_grad_(True)
    ys = solver(f, y, torch.tensor([0.0, 1.0], dtype=y0.dtype), **kw)
    grads = torch.autograd.grad(ys[-1].square().sum(), (y, *f.parameters()))
    return torch.cat([g.reshape(-1).double() for g in grads])


def cpu_time(fn: Callable[[], Any], samples: int = 7) -> float:
    """Median process CPU time of one call (ms): insensitive to waiting for a core."""
    fn()
    times = []
    for _ in range(samples):
        start = time.process_time()
        fn()
        times.append(1e3 * (time.process_time() - start))
    return statistics.median(times)


def gradient_errors(f: Counted, y0: torch.Tensor, semi: dict[str, Any]) -> dict[str, float]:
    """Relative error ||g - g_ref|| / ||g_ref|| of float32 gradients at rtol = atol = 1e-5;
    g_ref: torchdiffeq's adjoint in float64 at rtol = atol = 1e-9 (full norm), a neutral
    reference for the gradient of the exact ODE solution."""
    ref_f = Counted(copy.deepcopy(f.field).double())
    ref = _gradient(torchdiffeq.odeint_adjoint, ref_f, y0.double(), rtol=1e-9, atol=1e-9)
    cases = {
        "probpath_adjoint_seminorm": (odeint_adjoint, semi),
        "torchdiffeq_adjoint_seminorm": (torchdiffeq.odeint_adjoint, semi),
        "probpath_adjoint_fullnorm": (odeint_adjoint, TOL),
        "probpath_backprop": (odeint, TOL),
    }
    return {
        k: float((_gradient(s, f, y0, **kw) - ref).norm() / ref.norm())
        for k, (s, kw) in cases.items()
    }


class _Box:
    def __init__(self, x: torch.Tensor) -> None:
        self.x = x


class SavedBytes:
    """Peak bytes held by autograd's saved tensors over a forward + backward."""

    def __init__(self) -> None:
        self.live = self.peak = 0

    def _free(self, n: int) -> None:
        self.live -= n

    def pack(self, x: torch.Tensor) -> _Box:
        box, n = _Box(x), x.numel() * x.element_size()
        self.live += n
        self.peak = max(self.peak, self.live)
        weakref.finalize(box, self._free, n)
        return box

    @staticmethod
    def unpack(box: _Box) -> torch.Tensor:
        return box.x


SOLVERS: dict[str, Callable[..., Any]] = {
    "probpath_adjoint": odeint_adjoint,
    "torchdiffeq_adjoint": torchdiffeq.odeint_adjoint,
    "probpath_backprop": odeint,
}


def _fixed(name: str, steps: int) -> dict[str, Any]:
    return dict(method="rk4", options={"step_size": 1.0 / steps})


def saved_bytes(name: str, f: Counted, y0: torch.Tensor, steps: int) -> int:
    meter = SavedBytes()
    with torch.autograd.graph.saved_tensors_hooks(meter.pack, meter.unpack):
        _step(SOLVERS[name], f, y0, **_fixed(name, steps))
    return meter.peak


def _peak_rss_kib() -> int:
    """This process's peak resident set (KiB): Linux's VmHWM, which unlike ru_maxrss is
    not inherited from the parent process across fork and exec."""
    for line in open("/proc/self/status").read().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("peak RSS needs Linux's /proc/self/status")


_RSS_SCRIPT = """
import sys, torch
from benchmarks.bench_adjoint import SOLVERS, Counted, Field, _fixed, _peak_rss_kib, _step
torch.set_num_threads(2)
torch.manual_seed(0)
name, steps, batch = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
f, y0 = Counted(Field()), torch.randn(batch, 2)
_step(SOLVERS[name], f, y0, **_fixed(name, 1))  # warm-up: allocator, lazy init
base = _peak_rss_kib()
_step(SOLVERS[name], f, y0, **_fixed(name, steps))
print(_peak_rss_kib() - base)
"""


def peak_rss_kib(name: str, steps: int, batch: int) -> int:
    """Growth of peak RSS (KiB) over a warmed-up baseline, in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", _RSS_SCRIPT, name, str(steps), str(batch)],
        check=True,
        capture_output=True,
        text=True,
    )
    return int(out.stdout.split()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="few repeats, small sweep")
    args = parser.parse_args()
    env = setup(threads=2)
    repeats = 3 if args.quick else 15
    torch.manual_seed(0)
    f, y0 = Counted(Field()), torch.randn(1024, 2)
    semi = dict(adjoint_options={"norm": "seminorm"}, **TOL)
    results: dict[str, Any] = {"env": env, "problem": "MLP 3-64-64-2 tanh, batch 1024, float32"}

    nfe = {
        "probpath_adjoint_seminorm": _step(odeint_adjoint, f, y0, **semi),
        "torchdiffeq_adjoint_seminorm": _step(torchdiffeq.odeint_adjoint, f, y0, **semi),
        "probpath_adjoint_fullnorm": _step(odeint_adjoint, f, y0, **TOL),
        "torchdiffeq_adjoint_fullnorm": _step(torchdiffeq.odeint_adjoint, f, y0, **TOL),
        "probpath_backprop": _step(odeint, f, y0, **TOL),
    }
    results["nfe"] = {k: {"forward": a, "backward": b} for k, (a, b) in nfe.items()}
    print(f"{'dopri5 1e-5, batch 1024':32s} {'fwd NFE':>8s} {'bwd NFE':>8s}")
    for k, (a, b) in nfe.items():
        print(f"{k:32s} {a:8d} {b:8d}")

    timing = {
        "adjoint_seminorm_vs_torchdiffeq": interleaved(
            lambda: _step(odeint_adjoint, f, y0, **semi),
            lambda: _step(torchdiffeq.odeint_adjoint, f, y0, **semi),
            repeats=repeats,
        ),
        "adjoint_fullnorm_vs_torchdiffeq": interleaved(
            lambda: _step(odeint_adjoint, f, y0, **TOL),
            lambda: _step(torchdiffeq.odeint_adjoint, f, y0, **TOL),
            repeats=repeats,
        ),
        "adjoint_seminorm_vs_backprop": interleaved(
            lambda: _step(odeint_adjoint, f, y0, **semi),
            lambda: _step(odeint, f, y0, **TOL),
            repeats=repeats,
        ),
    }
    results["timing"] = timing
    print("\nwall of forward + backward (median ms), ratio = median of per-run ratios")
    for k, r in timing.items():
        a, b = 1e3 * r["median_a"], 1e3 * r["median_b"]
        print(f"{k:34s} {a:8.1f} {b:8.1f}  ratio {r['ratio']:.3f}")

    torch.set_num_threads(1)  # a steadier cross-check on a loaded machine: CPU time
    cpu = {
        "probpath_adjoint_seminorm": cpu_time(lambda: _step(odeint_adjoint, f, y0, **semi)),
        "torchdiffeq_adjoint_seminorm": cpu_time(
            lambda: _step(torchdiffeq.odeint_adjoint, f, y0, **semi)
        ),
        "probpath_backprop": cpu_time(lambda: _step(odeint, f, y0, **TOL)),
    }
    torch.set_num_threads(2)
    results["cpu_time_1_thread_ms"] = cpu
    print("\nCPU time of forward + backward at 1 thread (median ms)")
    for k, v in cpu.items():
        print(f"{k:32s} {v:8.1f}")

    errors = gradient_errors(f, y0, semi)
    results["gradient_relative_error"] = errors
    print("\nrelative gradient error vs float64 reference at 1e-9")
    for k, v in errors.items():
        print(f"{k:32s} {v:.2e}")

    mults = (1, 4) if args.quick else (1, 2, 4, 8, 16)
    memory: dict[str, Any] = {"method": "rk4", "base_steps": BASE_STEPS, "saved_bytes": {}}
    for name in SOLVERS:
        memory["saved_bytes"][name] = {m: saved_bytes(name, f, y0, m * BASE_STEPS) for m in mults}
    if not args.quick:
        memory["peak_rss_kib"] = {
            name: {m: peak_rss_kib(name, m * BASE_STEPS, 1024) for m in (1, 16)}
            for name in ("probpath_adjoint", "probpath_backprop")
        }
    results["memory"] = memory
    print(f"\npeak saved-tensor MiB, rk4 with {BASE_STEPS} x m steps")
    print(f"{'':22s}" + "".join(f"{f'{m}x':>9s}" for m in mults))
    for name, row in memory["saved_bytes"].items():
        print(f"{name:22s}" + "".join(f"{row[m] / 2**20:9.2f}" for m in mults))
    for name, row in memory.get("peak_rss_kib", {}).items():
        print(
            f"peak RSS growth {name}: "
            + ", ".join(f"{m}x {v / 1024:.0f} MiB" for m, v in row.items())
        )
    # --quick (a smoke test) must not overwrite the real results
    name = "adjoint_quick" if args.quick else "adjoint"
    print(f"\nwrote {write_results(name, results)}")


if __name__ == "__main__":
    main()
