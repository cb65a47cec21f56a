"""probpath.solvers.odeint against torchdiffeq.odeint, side by side in one process.

Reference problem: f(t, y) = MLP(concat(y, t)), 3 -> 64 -> 64 -> 2 with tanh, float32,
t from 0 to 1, under torch.no_grad(), 2 threads. Reports the median wall time of
interleaved runs, the median ratio (probpath / torchdiffeq), NFE of both, and the
solver overhead = wall / (NFE x time of one evaluation of f) (physical limit 1.0).
One round times the probpath solve, the torchdiffeq solve and one f evaluation in
turn; ratio and overhead are medians over rounds of the per-round quotients.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \
        .venv/bin/python -m benchmarks.bench_ode [--quick]
"""

from __future__ import annotations

import argparse
from statistics import median
from typing import Any

import torch
import torchdiffeq

from benchmarks._timing import interleave, setup, write_results
from probpath.solvers import SolverStats, odeint

BATCHES = (16, 128, 1024, 8192)


class Field(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Sequential(
            torch.nn.Linear(3, 64),
            torch.nn.Tanh(),
            torch.nn.Linear(64, 64),
            torch.nn.Tanh(),
            torch.nn.Linear(64, 2),
        )

    def forward(self, t: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([y, t.expand(y.shape[0], 1)], dim=1))


def _nfe_torchdiffeq(f: Field, y0: torch.Tensor, t: torch.Tensor, **kw: Any) -> int:
    n = 0

    def counted(s: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        nonlocal n
        n += 1
        return f(s, y)

    torchdiffeq.odeint(counted, y0, t, **kw)
    return n


def case(f: Field, batch: int, method: str, repeats: int, **kw: Any) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(batch)
    y0 = torch.randn(batch, 2, generator=gen)
    t = torch.tensor([0.0, 1.0])
    stats = SolverStats()
    odeint(f, y0, t, method=method, stats=stats, **kw)
    nfe_td = _nfe_torchdiffeq(f, y0, t, method=method, **kw)
    times = interleave(
        {
            "ours": lambda: odeint(f, y0, t, method=method, **kw),
            "td": lambda: torchdiffeq.odeint(f, y0, t, method=method, **kw),
            "f": lambda: f(t[0], y0),
        },
        repeats=repeats,
    )
    ours, td, t_f = times["ours"], times["td"], times["f"]
    return {
        "method": method,
        "batch": batch,
        **kw,
        "nfe": stats.nfe,
        "nfe_torchdiffeq": nfe_td,
        "time_f": median(t_f),
        "wall": median(ours),
        "wall_torchdiffeq": median(td),
        "ratio": median(a / b for a, b in zip(ours, td, strict=True)),
        "overhead": median(a / (stats.nfe * b) for a, b in zip(ours, t_f, strict=True)),
        "overhead_torchdiffeq": median(a / (nfe_td * b) for a, b in zip(td, t_f, strict=True)),
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few repeats (smoke test)")
    args = p.parse_args()
    env = setup(threads=2)
    repeats = 3 if args.quick else 25
    torch.manual_seed(0)
    f = Field()
    rows = []
    with torch.no_grad():
        for tol in (1e-5, 1e-3):
            for b in BATCHES[:2] if args.quick else BATCHES:
                rows.append(case(f, b, "dopri5", repeats, rtol=tol, atol=tol))
        rows.append(case(f, 16, "rk4", repeats, options={"step_size": 0.01}))
    head = "method  tol    batch   NFE (td)    wall ms (td)        ratio  overhead (td)"
    print(head)
    for r in rows:
        tol = f"{r['rtol']:.0e}" if "rtol" in r else "-"
        print(
            f"{r['method']:7s} {tol:6s} {r['batch']:5d} {r['nfe']:4d} ({r['nfe_torchdiffeq']:4d})"
            f"  {1e3 * r['wall']:7.2f} ({1e3 * r['wall_torchdiffeq']:7.2f})  {r['ratio']:5.2f}"
            f"  {r['overhead']:5.2f} ({r['overhead_torchdiffeq']:5.2f})"
        )
    # --quick (smoke test) must not overwrite the real results
    path = write_results("ode_quick" if args.quick else "ode", {"env": env, "rows": rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
