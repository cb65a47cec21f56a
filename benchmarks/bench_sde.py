"""probpath.solvers.sdeint against torchsde.sdeint, and the divergence estimators.

SDE: Euler--Maruyama, 1000 steps (dt = 1e-3 on [0, 1]), batch 1024, dimension 2, float32,
under torch.no_grad(), 2 threads; torchsde with method="euler" on the same f and g:
(a) Ornstein--Uhlenbeck drift -y with constant diagonal diffusion 0.5, (b) an MLP drift
MLP(concat(y, t)) 3 -> 64 -> 64 -> 2 with the same diffusion. Reports the median wall time
of interleaved runs, the median ratio (probpath / torchsde) and the solver overhead
wall / (steps x time of one f + g evaluation) (physical limit 1.0).

Divergence: an MLP d -> 64 -> 64 -> d (tanh), batch 1024, d = 2 and 64, float32; time of one
call with create_graph=True followed by a backward pass (CNF training) and without graph
(evaluation), for exact_divergence (d VJPs), hutchinson_divergence (one VJP) and, as the
alternatives exact_divergence was chosen against, one batched VJP (is_grads_batched) and
torch.func.vmap(jacrev).

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \
        .venv/bin/python -m benchmarks.bench_sde [--quick] [--threads 2]
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

import torch
import torchsde
from torch import Tensor, nn

from benchmarks._timing import interleaved, median_time, setup, write_results
from probpath.divergence import exact_divergence, hutchinson_divergence, sample_probe
from probpath.solvers import sdeint

Fn = Callable[[Tensor, Tensor], Tensor]


class Drift(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(3, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
        self.out = nn.Linear(64, 2)

    def forward(self, t: Tensor, y: Tensor) -> Tensor:
        return self.out(self.net(torch.cat([y, t.expand(y.shape[0], 1)], dim=1)))


class TorchsdeSDE(nn.Module):
    """torchsde's SDE protocol, which probpath.solvers.sdeint reads too."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, f: Fn, g: Fn) -> None:
        super().__init__()
        self._f, self._g = f, g

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        return self._f(t, y)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return self._g(t, y)


def sde_case(name: str, f: Fn, repeats: int) -> dict[str, Any]:
    def g(t: Tensor, y: Tensor) -> Tensor:
        return torch.full_like(y, 0.5)

    y0 = torch.randn(1024, 2, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([0.0, 1.0])
    steps, dt = 1000, 1e-3
    sde = TorchsdeSDE(f, g)
    gen = torch.Generator().manual_seed(1)
    t_fg = median_time(lambda: (f(t[0], y0), g(t[0], y0)), repeats=repeats)
    r = interleaved(
        lambda: sdeint(sde, y0, t, dt=dt, method="euler", generator=gen),
        lambda: torchsde.sdeint(sde, y0, t, dt=dt, method="euler"),  # the same object
        repeats=repeats,
        min_time=0.0,
    )
    return {
        "case": name,
        "method": "euler",
        "batch": 1024,
        "dim": 2,
        "steps": steps,
        "time_f_plus_g": t_fg,
        "wall": r["median_a"],
        "wall_torchsde": r["median_b"],
        "ratio": r["ratio"],
        "overhead": r["median_a"] / (steps * t_fg),
        "overhead_torchsde": r["median_b"] / (steps * t_fg),
    }


def _mlp(d: int) -> nn.Module:
    return nn.Sequential(
        nn.Linear(d, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh(), nn.Linear(64, d)
    )


def _exact_batched_vjp(fn: nn.Module, x: Tensor, create_graph: bool) -> Tensor:
    x = x.detach().requires_grad_(True)
    out = fn(x)
    d = x.shape[1]
    eye = torch.eye(d, dtype=x.dtype)[:, None, :].expand(d, *x.shape)
    (jac,) = torch.autograd.grad(out, x, eye, is_grads_batched=True, create_graph=create_graph)
    return jac.diagonal(dim1=0, dim2=2).sum(-1)


def _exact_vmap_jacrev(fn: nn.Module, x: Tensor, create_graph: bool) -> Tensor:
    jac = torch.func.vmap(torch.func.jacrev(lambda r: fn(r[None])[0]))(x)
    return jac.diagonal(dim1=1, dim2=2).sum(-1)


def divergence_case(d: int, repeats: int) -> list[dict[str, Any]]:
    torch.manual_seed(d)
    fn = _mlp(d)
    x = torch.randn(1024, d)
    probe = sample_probe(x)
    variants: dict[str, Callable[[bool], Tensor]] = {
        "exact (d VJPs, chosen)": lambda cg: exact_divergence(fn, x, create_graph=cg)[1],
        "hutchinson (1 VJP)": lambda cg: hutchinson_divergence(fn, x, probe, create_graph=cg)[1],
        "exact, batched VJP": lambda cg: _exact_batched_vjp(fn, x, cg),
        "exact, vmap(jacrev)": lambda cg: _exact_vmap_jacrev(fn, x, cg),
    }
    rows = []
    for name, run in variants.items():
        rows.append(
            {
                "d": d,
                "batch": 1024,
                "estimator": name,
                "train_s": median_time(lambda run=run: run(True).sum().backward(), repeats),
                "eval_s": median_time(lambda run=run: run(False), repeats),
            }
        )
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="few repeats (smoke test)")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    args = p.parse_args()
    env = setup(threads=args.threads)
    repeats = 3 if args.quick else 9
    torch.manual_seed(0)
    drift = Drift()
    with torch.no_grad():
        sde_rows = [
            sde_case("OU drift", lambda t, y: -y, repeats),
            sde_case("MLP drift", drift, repeats),
        ]
    print("case        wall ms (torchsde)      ratio  overhead (torchsde)")
    for r in sde_rows:
        print(
            f"{r['case']:10s} {1e3 * r['wall']:8.1f} ({1e3 * r['wall_torchsde']:8.1f})"
            f"  {r['ratio']:5.3f}  {r['overhead']:5.2f} ({r['overhead_torchsde']:6.2f})"
        )
    div_rows = [row for d in (2, 64) for row in divergence_case(d, repeats)]
    print("\n d  estimator                 train ms   eval ms")
    for r in div_rows:
        print(
            f"{r['d']:2d}  {r['estimator']:24s} {1e3 * r['train_s']:8.2f}  {1e3 * r['eval_s']:8.2f}"
        )
    path = write_results(  # --quick (a smoke test) must not overwrite the real results
        "sde_quick" if args.quick else "sde",
        {"env": env, "quick": args.quick, "sde": sde_rows, "divergence": div_rows},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
