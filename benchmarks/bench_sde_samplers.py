"""Score-SDE samplers on trained VP models: quality against NFE, exact NLL, peer timings.

One VP score model (``ScoreSDE``, MLP 3×128 SiLU, sinusoidal time, eps-prediction, the
likelihood weight λ = g² with t importance-sampled uniformly in log-SNR, 50 000 steps) is
trained on standardised 8gaussians and one on checkerboard with ``probpath.train``.
Reported for each:

1. sample quality (energy distance to held-out data, in the data's own units, against its
   noise floor: two independent draws of the true law) as a function of NFE for every
   sampler — reverse-SDE Euler–Maruyama, predictor–corrector, PF-ODE Euler, EDM Heun,
   DPM-Solver-2/-3 and DPM-Solver++(2M), PF-ODE dopri5 at several tolerances — plotted in
   docs/figures/score_sde_samplers.png (symlog axis: estimates below the noise floor can be
   negative), and predictor–corrector at each ``snr`` of ``PC_SNR`` (``pc_snr``);
2. the PF-ODE test NLL (dopri5, rtol = atol = 1e-5, exact trace, t_min = 1e-3) and its gap
   to the entropy of the data law, beside the DDPM ELBO of the same network read on the
   T = 1000 DDPM chain (``DDPM.nll_bound``: the VP SDE is that chain's limit);
3. wall time of the same network driven by probpath and by the peers at equal NFE:
   reverse-SDE Euler–Maruyama against ``torchsde.sdeint(method="euler")`` and the PF-ODE
   with dopri5 against ``torchdiffeq.odeint`` at the same error control (torchdiffeq's
   dopri5 error estimate is 2/3 of Hairer's, so its rtol = atol = 1e-5 / 1.5 accepts the
   steps ours does at 1e-5); interleaved runs, median of ratios.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \
        .venv/bin/python -m benchmarks.bench_sde_samplers [--quick]
        .venv/bin/python -m benchmarks.bench_sde_samplers --peers-only 64,64,64 \\
            --train-steps 20000   # part 3 alone, on a smaller network
"""

from __future__ import annotations

import argparse
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
import torchdiffeq
import torchsde
from torch import Tensor

from benchmarks._timing import interleaved, setup, write_results
from probpath import metrics
from probpath.data import TOY_ENTROPY, Standardizer, sample_toy
from probpath.models import DDPM, ScoreSDE
from probpath.samplers import probability_flow, reverse_sde_euler
from probpath.train import TrainConfig, load_checkpoint, train

FIG = Path(__file__).resolve().parent.parent / "docs" / "figures" / "score_sde_samplers.png"
SETS = ("8gaussians", "checkerboard")
GRIDS: dict[str, list[dict[str, Any]]] = {
    "euler-maruyama": [dict(steps=s) for s in (10, 20, 50, 100, 200)],
    "pc": [dict(steps=s, snr=0.05) for s in (5, 10, 25, 50, 100)],
    "pf-ode euler": [
        dict(sampler="pf-ode", method="euler", steps=s) for s in (10, 20, 50, 100, 200)
    ],
    "heun": [dict(steps=s) for s in (3, 5, 10, 20, 50)],
    "dpm-solver-2": [dict(sampler="dpm", method="2", steps=s) for s in (3, 5, 10, 25)],
    "dpm-solver-3": [dict(sampler="dpm", method="3", steps=s) for s in (2, 3, 5, 10)],
    "dpm-solver++(2m)": [dict(sampler="dpm", method="2m", steps=s) for s in (5, 10, 20, 50)],
    "pf-ode dopri5": [dict(sampler="pf-ode", rtol=r, atol=r) for r in (1e-1, 1e-2, 1e-3, 1e-5)],
}
PC_SNR = (0.01, 0.05, 0.1, 0.16)  # predictor-corrector's signal-to-noise ratio, at equal NFE
PC_STEPS = (5, 10, 25, 50)


def train_model(
    name: str, steps: int, seed: int = 0, hidden: tuple[int, ...] = (128, 128, 128)
) -> tuple[ScoreSDE, Standardizer, float]:
    g = torch.Generator().manual_seed(seed)
    x = sample_toy(name, 50_000, generator=g)
    std = Standardizer.fit(x)
    torch.manual_seed(seed)
    model = ScoreSDE(dim=2, sde="vp", weighting="likelihood", hidden=list(hidden))
    cfg = TrainConfig(
        steps=steps, batch_size=512, lr=2e-3, schedule="cosine", warmup_steps=100,
        ema_decay=0.999, log_every=500, checkpoint_every=steps, seed=seed,
    )  # fmt: skip
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as run:
        train(model, std.forward(x), cfg, run, progress=False)
        ck = load_checkpoint(Path(run) / "checkpoints")
    model.load_state_dict(ck.ema if ck.ema is not None else ck.model)
    return model.eval(), std, time.perf_counter() - t0


def nll(model: Any, std: Standardizer, x: Tensor, bound: bool = False) -> tuple[float, float]:
    """Mean NLL in the data's units (nats) and its standard error."""
    z, ladj = std.forward(x), std.log_abs_det_jacobian()
    with torch.no_grad():  # no graph through the solve (log_prob takes its own VJPs)
        if bound:
            per = model.nll_bound(z, generator=torch.Generator().manual_seed(0)) - ladj
        else:
            per = -torch.cat([model.log_prob(c, rtol=1e-5, atol=1e-5) for c in z.split(500)])
            per = per - ladj
    return float(per.mean()), float(per.std() / math.sqrt(len(per)))


def quality_curves(
    model: ScoreSDE, std: Standardizer, test: Tensor, grids: dict[str, list[dict[str, Any]]]
) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for label, grid in grids.items():
        rows = []
        for opts in grid:
            opts = dict(opts)
            sampler = opts.pop("sampler", label)
            with torch.no_grad():
                z, nfe = model.sample_with_nfe(
                    len(test), generator=torch.Generator().manual_seed(3), sampler=sampler, **opts
                )
            ed = float(metrics.energy_distance(std.inverse(z), test))
            rows.append(dict(nfe=nfe, energy_distance=ed, **opts))
        out[label] = rows
    return out


PEER_TOL = 1e-5 / 1.5
"""torchdiffeq's dopri5 weighs the error by c_error = (2/3) (b - b_hat) of Hairer's DOPRI5
(its ``dopri5.py``): at rtol = atol = PEER_TOL it accepts exactly the local errors that
probpath's dopri5 accepts at 1e-5, the same error control, so equal quality at ~equal NFE."""


def peer_timings(model: ScoreSDE, std: Standardizer, test: Tensor, steps: int) -> dict[str, Any]:
    """Same network, same prior draws, equal NFE: probpath against torchsde and torchdiffeq."""
    n = len(test)
    x1 = model.prior_sample(n, generator=torch.Generator().manual_seed(4))
    sch, t_min, t_max = model.schedule, model.t_min, model.t_max
    ts = model.time_grid(steps)
    nfe = {"torchsde": 0, "torchdiffeq": 0}

    def counted_score(x: Tensor, t: Tensor) -> Tensor:
        nfe["torchsde"] += 1
        return model.score(x, t)

    reverse = model.sde.reverse(counted_score)  # torchsde takes the SDE object as it is

    def ours_em() -> Tensor:
        return reverse_sde_euler(model.score, x1, ts, schedule=sch,
                                 generator=torch.Generator().manual_seed(5))[0]  # fmt: skip

    def peer_em() -> Tensor:  # the reverse SDE runs on tau = -t, increasing
        taus = -torch.tensor([t_max, t_min])
        return torchsde.sdeint(reverse, x1, taus, method="euler", dt=(t_max - t_min) / steps)[-1]

    def ours_ode() -> tuple[Tensor, int]:
        ends = torch.tensor([t_max, t_min])
        return probability_flow(model.velocity, x1, ends, rtol=1e-5, atol=1e-5)

    def peer_ode() -> Tensor:
        def f(t: Tensor, y: Tensor) -> Tensor:
            nfe["torchdiffeq"] += 1
            # torchdiffeq's dopri5 may evaluate past the end time: hold t inside the span
            return model.velocity(y, t.clamp(t_min, t_max).expand(len(y)))

        ends = torch.tensor([t_max, t_min])
        return torchdiffeq.odeint(f, x1, ends, rtol=PEER_TOL, atol=PEER_TOL, method="dopri5")[-1]

    result: dict[str, Any] = {"n": n}
    with torch.no_grad():
        torch.manual_seed(6)
        for key, ours, peer in (("em", ours_em, peer_em), ("ode", lambda: ours_ode()[0], peer_ode)):
            ed_ours = float(metrics.energy_distance(std.inverse(ours()), test))
            nfe["torchsde"] = nfe["torchdiffeq"] = 0
            ed_peer = float(metrics.energy_distance(std.inverse(peer()), test))
            peer_nfe = dict(nfe)  # one solve's count, before the timing runs add to it
            t = interleaved(ours, peer, repeats=7, min_time=0.0)
            result[key] = {
                "ratio": t["ratio"], "seconds_probpath": t["median_a"],
                "seconds_peer": t["median_b"], "energy_distance_probpath": ed_ours,
                "energy_distance_peer": ed_peer,
            }  # fmt: skip
        result["em"].update(nfe_probpath=steps, nfe_peer=steps)
        result["ode"].update(
            nfe_probpath=ours_ode()[1], nfe_peer=peer_nfe["torchdiffeq"], tol_probpath=1e-5,
            tol_peer=PEER_TOL,
        )  # fmt: skip
    return result


def plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.2))
    for ax, (name, res) in zip(axes, results.items(), strict=True):
        for label, rows in res["quality"].items():
            ax.plot(
                [r["nfe"] for r in rows], [r["energy_distance"] for r in rows], "o-", label=label
            )
        floor = res["noise_floor"]  # estimates below it (even < 0) are sampling noise
        low = min(
            -floor["std"], *(r["energy_distance"] for c in res["quality"].values() for r in c)
        )
        ax.axhspan(low, floor["mean"] + 2 * floor["std"], color="0.85", label="noise floor (+2 sd)")
        ax.set(xscale="log", xlabel="NFE", ylabel="energy distance", title=name)
        # symlog: logarithmic above the floor's spread, linear through 0 for negative values
        ax.set_yscale("symlog", linthresh=10 ** math.floor(math.log10(max(floor["std"], 1e-4))))
        ax.set_ylim(bottom=2 * low)
        ax.legend(fontsize=8)
    fig.tight_layout()
    FIG.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(FIG, dpi=110)


def peers_only(hidden: tuple[int, ...], train_steps: int, env: dict[str, Any]) -> None:
    """Part 3 alone, for a network of the given widths (``sde_peers_<widths>.json``)."""
    results: dict[str, Any] = {"hidden": list(hidden), "train_steps": train_steps}
    for name in SETS:
        model, std, seconds = train_model(name, train_steps, hidden=hidden)
        test = sample_toy(name, 2000, generator=torch.Generator().manual_seed(1))
        r = results[name] = {"train_seconds": seconds, **peer_timings(model, std, test, 200)}
        print(f"{name} {hidden}: trained {seconds:.0f}s; time ratio vs torchsde EM "
              f"{r['em']['ratio']:.2f}, vs torchdiffeq dopri5 {r['ode']['ratio']:.2f} "
              f"(NFE {r['ode']['nfe_probpath']} / {r['ode']['nfe_peer']})", flush=True)  # fmt: skip
        write_results(f"sde_peers_{'x'.join(map(str, hidden))}", {"env": env, **results})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short training, small sets")
    parser.add_argument(
        "--peers-only", metavar="WIDTHS", type=lambda s: tuple(int(w) for w in s.split(",")),
        help="only the peer timings (part 3), on a model of these hidden widths, e.g. 64,64,64",
    )  # fmt: skip
    parser.add_argument("--train-steps", type=int, default=50_000, help="with --peers-only")
    args = parser.parse_args()
    env = setup(threads=1)  # the machine is shared: one thread per process
    if args.peers_only:
        peers_only(args.peers_only, args.train_steps, env)
        return
    train_steps, n_test = (200, 300) if args.quick else (50_000, 2000)
    results: dict[str, Any] = {}
    for name in SETS:
        model, std, seconds = train_model(name, train_steps)
        test = sample_toy(name, n_test, generator=torch.Generator().manual_seed(1))
        t0 = time.perf_counter()
        ode_nll, ode_se = nll(model, std, test)
        print(f"{name}: PF-ODE NLL in {time.perf_counter() - t0:.0f}s", flush=True)
        ddpm = DDPM(dim=2, hidden=[128, 128, 128])  # the same MLP, read on the T = 1000 chain
        ddpm.load_state_dict(model.state_dict())
        elbo, elbo_se = nll(ddpm, std, test[:1000], bound=True)
        floor = metrics.noise_floor(
            metrics.energy_distance, lambda k, g, s=name: sample_toy(s, k, generator=g), n_test,
            repeats=5,
        )  # fmt: skip
        results[name] = {
            "train_steps": train_steps, "train_seconds": seconds,
            "entropy": TOY_ENTROPY[name], "pf_ode_nll": ode_nll, "pf_ode_nll_se": ode_se,
            "gap": ode_nll - TOY_ENTROPY[name], "ddpm_elbo": elbo, "ddpm_elbo_se": elbo_se,
            "noise_floor": {"mean": floor.mean, "std": floor.std},
            "quality": quality_curves(model, std, test, GRIDS),
            "pc_snr": quality_curves(model, std, test, {
                f"snr {r}": [dict(sampler="pc", snr=r, steps=k) for k in PC_STEPS] for r in PC_SNR
            }),
            "peers": peer_timings(model, std, test, steps=100 if args.quick else 200),
        }  # fmt: skip
        r = results[name]
        em, ode = r["peers"]["em"]["ratio"], r["peers"]["ode"]["ratio"]
        print(f"{name}: trained {seconds:.0f}s, PF-ODE NLL {ode_nll:.3f} ± {ode_se:.3f} "
              f"(entropy {r['entropy']:.3f}, gap {r['gap']:+.3f}), DDPM ELBO {elbo:.3f}; "
              f"time ratio vs torchsde EM {em:.2f}, vs torchdiffeq dopri5 {ode:.2f}")  # fmt: skip
        for label, rows in {**r["quality"], **r["pc_snr"]}.items():
            cells = ", ".join(f"{q['nfe']}:{q['energy_distance']:.4f}" for q in rows)
            print(f"  {label:14s} {cells}")
        print(f"  noise floor {floor.mean:.4f} ± {floor.std:.4f}", flush=True)
        write_results(
            "sde_samplers_quick" if args.quick else "sde_samplers", {"env": env, **results}
        )
    if not args.quick:
        plot(results)


if __name__ == "__main__":
    main()
