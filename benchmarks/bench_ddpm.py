"""DDPM samplers (ancestral, DDIM) and NCSN annealed Langevin on 2-D toys, side by side
with diffusers' DDPMScheduler and DDIMScheduler driving the same network.

For 8gaussians and checkerboard (standardised; all metrics in the standardised space): a
DDPM (eps-MLP 128x3 or --hidden, linear betas, T = 1000, L_simple) and an NCSN (10 geometric
levels, eps/sigma parametrisation, weighted DSM) are trained with probpath.train. On 1024
samples: the energy distance to 1024 held-out points beside its noise floor (mean, std over
5 pairs of true samples), for ancestral (1000 steps), DDIM (50, 20, 10) and annealed
Langevin; the DDPM NLL bound (ELBO, nats in data space) beside the true entropy. diffusers
drives the same network on the same starting batch x_T (1024 x 2): sample statistics must
agree within noise; per-step overhead = (loop wall - steps x network time) / steps, the
network time and both loops timed in interleaved rounds under torch.no_grad().

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \
        .venv/bin/python -m benchmarks.bench_ddpm [--quick] [--threads 2] [--hidden 64,64,64]
"""

from __future__ import annotations

import argparse
import math
import statistics
import tempfile
import time
from typing import Any

import torch
from diffusers import DDIMScheduler, DDPMScheduler
from torch import Tensor

from benchmarks._timing import interleave, setup, write_results
from probpath import metrics
from probpath.data import TOY_ENTROPY, Standardizer, sample_toy
from probpath.models import DDPM, NCSN
from probpath.samplers import ancestral, ddim, ddpm_timesteps
from probpath.train import TrainConfig, train

N = 1024


def fit(model: Any, x: Tensor, steps: int, seed: int) -> float:
    cfg = TrainConfig(steps=steps, batch_size=256, lr=2e-3, schedule="cosine", seed=seed)
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run:
        train(model, x, cfg, run, evaluate=lambda m, d: {}, progress=False)
    return time.perf_counter() - t0


def diffusers_loop(sched: Any, eps: Any, x: Tensor, times: Tensor, g: torch.Generator) -> Tensor:
    """The canonical diffusers loop; ``times`` maps its index k (0..T-1) to our t = (k+1)/T."""
    for k in sched.timesteps:
        x = sched.step(eps(x, times[int(k)]), k, x, generator=g).prev_sample
    return x


def energy(x: Tensor, ref: Tensor) -> float:
    return metrics.energy_distance(x.double(), ref.double())


def run_dataset(name: str, quick: bool, repeats: int, hidden: tuple[int, ...]) -> dict[str, Any]:
    raw = sample_toy(name, 20000 + N, generator=0)
    std = Standardizer.fit(raw[:20000])
    train_x, held = std.forward(raw[:20000]), std.forward(raw[20000:])

    def truth(n: int, g: torch.Generator) -> Tensor:
        return std.forward(sample_toy(name, n, generator=g))

    floor = metrics.noise_floor(metrics.energy_distance, truth, N, repeats=5)
    torch.manual_seed(0)
    ddpm = DDPM(dim=2, hidden=hidden)
    ncsn = NCSN(dim=2, hidden=hidden, sigma_max=5.0)
    steps = 400 if quick else 4000
    t_ddpm, t_ncsn = fit(ddpm, train_x, steps, 0), fit(ncsn, train_x, steps, 1)
    ddpm.eval()
    ncsn.eval()
    T = ddpm.chain.T
    x_T = torch.randn(N, 2, generator=torch.Generator().manual_seed(7))
    net = ddpm.predict
    times = (torch.arange(1, T + 1, dtype=torch.float32) / T)[:, None].expand(T, N)

    def ours_anc(eps: Any = net) -> Tensor:
        g = torch.Generator().manual_seed(3)
        return ancestral(eps, x_T, ddpm_timesteps(T), schedule=ddpm.chain, generator=g)[0]

    def ours_ddim(steps: int, eps: Any = net) -> Tensor:  # DDIMScheduler's default grid
        ts = ddpm_timesteps(T, steps, spacing="leading")
        return ddim(eps, x_T, ts, schedule=ddpm.chain)[0]

    common = dict(
        num_train_timesteps=T, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
        clip_sample=False,
    )  # fmt: skip
    d_ddpm = DDPMScheduler(**common, variance_type="fixed_small")
    d_ddpm.set_timesteps(T)
    d_ddim = DDIMScheduler(**common, set_alpha_to_one=True)

    def their_anc(eps: Any = net) -> Tensor:
        return diffusers_loop(d_ddpm, eps, x_T, times, torch.Generator().manual_seed(3))

    def their_ddim(steps: int, eps: Any = net) -> Tensor:
        d_ddim.set_timesteps(steps)
        return diffusers_loop(d_ddim, eps, x_T, times, torch.Generator().manual_seed(3))

    # a near-free stand-in network isolates the sampler's own per-step cost
    lin = torch.nn.Linear(2, 2)

    def cheap(x: Tensor, t: Tensor) -> Tensor:
        return lin(x)

    rows: list[dict[str, Any]] = []
    with torch.no_grad():
        samples = {"ancestral 1000": (ours_anc(), their_anc())}
        for s in (50, 20, 10):
            samples[f"ddim {s}"] = (ours_ddim(s), their_ddim(s))
        for label, (a, b) in samples.items():
            rows.append(
                {
                    "sampler": label,
                    "energy_probpath": energy(a, held),
                    "energy_diffusers": energy(b, held),
                    "energy_probpath_vs_diffusers": energy(a, b),
                    "mean_probpath": a.mean(0).tolist(),
                    "mean_diffusers": b.mean(0).tolist(),
                }
            )
        x_nc, nfe_nc = ncsn.sample_with_nfe(N, generator=torch.Generator().manual_seed(4))
        rows.append(
            {
                "sampler": f"ncsn annealed langevin ({nfe_nc} NFE)",
                "energy_probpath": energy(x_nc, held),
            }
        )
        bound = ddpm.nll_bound(held, generator=torch.Generator().manual_seed(5))
        bound_data = float(bound.mean()) - std.log_abs_det_jacobian()
        # timing: the network alone and both 1000-step loops, interleaved; then the same
        # loops (and DDIM-50) around the near-free network, for the per-step overhead
        t_mid = times[T // 2]
        timed = interleave(
            {"net": lambda: net(x_T, t_mid), "ours_anc": ours_anc, "theirs_anc": their_anc},
            repeats=repeats,
            min_time=0.0,
        )
        timed_cheap = interleave(
            {
                "net": lambda: cheap(x_T, t_mid),
                "ours_anc": lambda: ours_anc(cheap),
                "theirs_anc": lambda: their_anc(cheap),
                "ours_ddim50": lambda: ours_ddim(50, cheap),
                "theirs_ddim50": lambda: their_ddim(50, cheap),
            },
            repeats=2 * repeats + 1,
            min_time=0.0,
        )

    def per_step(key: str, steps: int, t: dict[str, list[float]] = timed_cheap) -> float:
        return statistics.median(
            (w - steps * n) / steps for w, n in zip(t[key], t["net"], strict=True)
        )

    ratio = statistics.median(
        a / b for a, b in zip(timed["ours_anc"], timed["theirs_anc"], strict=True)
    )
    return {
        "dataset": name,
        "train_seconds": {"ddpm": t_ddpm, "ncsn": t_ncsn, "steps": steps},
        "noise_floor": {"mean": floor.mean, "std": floor.std},
        "samplers": rows,
        "nll_bound_nats": bound_data,
        "nll_bound_se": float(bound.std()) / math.sqrt(N),
        "entropy_nats": TOY_ENTROPY.get(name),
        "net_seconds": statistics.median(timed["net"]),
        "overhead_real_net_us": {
            "probpath ancestral": 1e6 * per_step("ours_anc", T, timed),
            "diffusers DDPMScheduler": 1e6 * per_step("theirs_anc", T, timed),
        },
        "overhead_us": {
            "probpath ancestral": 1e6 * per_step("ours_anc", T),
            "diffusers DDPMScheduler": 1e6 * per_step("theirs_anc", T),
            "probpath ddim50": 1e6 * per_step("ours_ddim50", 50),
            "diffusers DDIMScheduler 50": 1e6 * per_step("theirs_ddim50", 50),
        },
        "wall_1000": {
            "probpath": statistics.median(timed["ours_anc"]),
            "diffusers": statistics.median(timed["theirs_anc"]),
            "ratio": ratio,
        },
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="short training, 3 timing rounds")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument(
        "--hidden", default="128,128,128", help="widths of both eps-MLPs (default 128,128,128)"
    )
    args = p.parse_args()
    hidden = tuple(int(w) for w in args.hidden.split(","))
    env = setup(threads=args.threads)
    repeats = 3 if args.quick else 7
    results = [
        run_dataset(name, args.quick, repeats, hidden) for name in ("8gaussians", "checkerboard")
    ]
    for r in results:
        f = r["noise_floor"]
        print(f"\n{r['dataset']}: noise floor {f['mean']:.4f} +- {f['std']:.4f}")
        for row in r["samplers"]:
            other = row.get("energy_diffusers")
            tail = f"  diffusers {other:.4f}" if other is not None else ""
            print(f"  {row['sampler']:34s} energy {row['energy_probpath']:.4f}{tail}")
        print(f"  DDPM NLL bound {r['nll_bound_nats']:.3f} nats (entropy {r['entropy_nats']})")
        print(f"  network {1e6 * r['net_seconds']:.0f} us; overhead per step (us, cheap net):")
        for k, v in r["overhead_us"].items():
            print(f"    {k:28s} {v:7.1f}")
        w = r["wall_1000"]
        print(
            f"  1000-step wall {w['probpath']:.2f} s vs {w['diffusers']:.2f} s: x{w['ratio']:.2f}"
        )
    name = ("ddpm_quick" if args.quick else "ddpm") + (
        "" if hidden == (128, 128, 128) else "_h" + "x".join(map(str, hidden))
    )
    path = write_results(name, {"env": env, "hidden": list(hidden), "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
