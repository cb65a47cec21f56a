"""Flow matching: probpath against torchcfm and facebookresearch/flow_matching.

1. Training speed. One network for every side (torchcfm's ``MLP(dim=2, w=64,
   time_varying=True)``: [x, t] → 64 → 64 → 64 → 2, SELU), batch 256 drawn from a pool of
   toy data, Adam. One step = draw the batch, noise and t, the path, the loss, backward and
   the optimiser step. Sides: probpath ``FlowMatching`` (I-CFM, and OT-CFM with the exact
   minibatch assignment) with ``torch.optim.Adam`` and with ``Adam(fused=True)``; torchcfm's
   ``ConditionalFlowMatcher`` and ``ExactOptimalTransportConditionalFlowMatcher`` (sigma=0,
   POT's exact EMD plan); flow_matching's ``AffineProbPath(CondOTScheduler())``. Timed
   round-robin (``interleave``); ratios are medians of within-round ratios. Beside it, the
   exact pairing alone (``bench_coupling``): ``ot_coupling`` with the POT and scipy
   backends against torchcfm's ``OTPlanSampler("exact")``, milliseconds per batch.
2. Test NLL. probpath ``FlowMatching`` (default network, I-CFM) trained for a wall-clock
   budget on 8gaussians, moons, pinwheel and checkerboard in the data's own units; the
   exact NLL (dopri5, exact trace) of held-out points against the entropy (TOY_ENTROPY).
3. Energy distance against NFE on 8gaussians: Euler with 2..100 steps and dopri5, in
   ``docs/figures/fm_nfe.png`` (with the diffusion samplers' curve when
   ``benchmarks/results/diffusion.json`` has one).

Threads: 1 by default (``--threads``). On the shared, overloaded 2-core machine these
numbers were taken on, two intra-op threads made every side several times slower and
noisier (threads spin-waiting on busy cores); the small 2-D networks gain nothing from a
second thread. The NLL runs use probpath's defaults: batch 256, Adam(lr 2e-3, fused) with
a cosine decay over the wall-clock budget, EMA 0.999 of the weights; test NLL on 50 000
held-out points by dopri5 (rtol = atol = 1e-6) with the exact trace; besides NLL - H the
paired estimate KL = mean(log p - log p_model) over the same points is reported (the
same quantity with a far smaller standard error, since the toy densities are known).

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \
        .venv/bin/python -m benchmarks.bench_fm [--quick] [--skip-speed] [--skip-nll]
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks._timing import RESULTS, interleave, setup, write_results
from probpath.coupling import ot_coupling
from probpath.data import TOY_ENTROPY, sample_toy, toy_log_prob
from probpath.metrics import energy_distance, noise_floor
from probpath.models import FlowMatching
from probpath.train import EMA

warnings.filterwarnings("ignore")  # torchcfm/torchdyn import-time warnings
BATCH = 256
FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"


class CatNet(nn.Module):
    """``net(x, t) = mlp([x, t])``: torchcfm's time-varying MLP in probpath's call order."""

    def __init__(self, mlp: nn.Module) -> None:
        super().__init__()
        self.mlp = mlp

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        return self.mlp(torch.cat([x, t[:, None]], -1))


def _peer_mlp() -> nn.Module:
    from torchcfm.models import MLP

    return MLP(dim=2, w=64, time_varying=True)


def _batch_fn(pool: Tensor) -> Callable[[], Tensor]:
    def draw() -> Tensor:
        return pool[torch.randint(0, pool.shape[0], (BATCH,))]

    return draw


def _probpath_step(pool: Tensor, ot: bool, fused: bool) -> Callable[[], None]:
    model = FlowMatching(dim=2, path="ot", ot_coupling=ot, net=CatNet(_peer_mlp()))
    opt = torch.optim.Adam(model.parameters(), 1e-3, fused=fused or None)
    draw = _batch_fn(pool)

    def step() -> None:
        loss, _ = model.loss(draw())
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _torchcfm_step(pool: Tensor, ot: bool) -> Callable[[], None]:
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
    )

    fm = ExactOptimalTransportConditionalFlowMatcher(0.0) if ot else ConditionalFlowMatcher(0.0)
    net = _peer_mlp()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    draw = _batch_fn(pool)

    def step() -> None:  # torchcfm's convention: x0 noise at t = 0, x1 data at t = 1
        x1 = draw()
        t, xt, ut = fm.sample_location_and_conditional_flow(torch.randn_like(x1), x1)
        loss = torch.mean((net(torch.cat([xt, t[:, None]], -1)) - ut) ** 2)
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _flow_matching_step(pool: Tensor) -> Callable[[], None]:
    from flow_matching.path import AffineProbPath
    from flow_matching.path.scheduler import CondOTScheduler

    path = AffineProbPath(scheduler=CondOTScheduler())
    net = _peer_mlp()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    draw = _batch_fn(pool)

    def step() -> None:
        x1 = draw()
        t = torch.rand(x1.shape[0])
        ps = path.sample(t=t, x_0=torch.randn_like(x1), x_1=x1)
        loss = torch.pow(net(torch.cat([ps.x_t, ps.t[:, None]], -1)) - ps.dx_t, 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def bench_speed(data: str, repeats: int) -> dict[str, Any]:
    pool = sample_toy(data, 100_000, generator=0)
    fns = {
        "probpath_icfm": _probpath_step(pool, ot=False, fused=False),
        "probpath_icfm_fused": _probpath_step(pool, ot=False, fused=True),
        "torchcfm_icfm": _torchcfm_step(pool, ot=False),
        "flow_matching": _flow_matching_step(pool),
        "probpath_otcfm": _probpath_step(pool, ot=True, fused=False),
        "probpath_otcfm_fused": _probpath_step(pool, ot=True, fused=True),
        "torchcfm_otcfm": _torchcfm_step(pool, ot=True),
    }
    times = interleave(fns, repeats=repeats, min_time=0.2)
    its = {k: 1 / statistics.median(v) for k, v in times.items()}

    def speedup(a: str, b: str) -> float:  # median over rounds of time(b) / time(a)
        return statistics.median(tb / ta for ta, tb in zip(times[a], times[b], strict=True))

    out: dict[str, Any] = {"it_per_s": its, "speedup": {}}
    for ours, peer in [
        ("probpath_icfm", "torchcfm_icfm"),
        ("probpath_icfm_fused", "torchcfm_icfm"),
        ("probpath_icfm", "flow_matching"),
        ("probpath_icfm_fused", "flow_matching"),
        ("probpath_otcfm", "torchcfm_otcfm"),
        ("probpath_otcfm_fused", "torchcfm_otcfm"),
    ]:
        out["speedup"][f"{ours}/{peer}"] = speedup(ours, peer)
    return out


def bench_coupling(data: str, repeats: int) -> dict[str, Any]:
    """Milliseconds per exact minibatch OT pairing (batch 256, data against noise):
    probpath's ``ot_coupling`` by backend, and torchcfm's ``OTPlanSampler("exact")``
    (cdist, POT's ``ot.emd``, drawing the pairs from the plan)."""
    from torchcfm.optimal_transport import OTPlanSampler

    draw, plan = _batch_fn(sample_toy(data, 100_000, generator=0)), OTPlanSampler("exact")
    fns: dict[str, Callable[[], Any]] = {
        f"probpath_{b}": lambda b=b: ot_coupling(draw(), torch.randn(BATCH, 2), backend=b)
        for b in ("pot", "scipy")
    }
    fns["torchcfm"] = lambda: plan.sample_plan(torch.randn(BATCH, 2), draw())
    times = interleave(fns, repeats=repeats, min_time=0.2)
    out: dict[str, Any] = {"ms": {k: 1e3 * statistics.median(v) for k, v in times.items()}}
    out["speedup_pot/torchcfm"] = statistics.median(
        b / a for a, b in zip(times["probpath_pot"], times["torchcfm"], strict=True)
    )
    return out


def train_fm(
    data: str, seconds: float, *, seed: int = 0, lr: float = 2e-3, batch: int = BATCH
) -> tuple[Any, int]:
    """FlowMatching (default net, I-CFM) for ``seconds`` of wall time; returns (EMA model, its)."""
    torch.manual_seed(seed)
    pool = sample_toy(data, 200_000, generator=seed)
    model = FlowMatching(dim=2, path="ot")
    opt = torch.optim.Adam(model.parameters(), lr, fused=True)
    ema = EMA(model, 0.999)
    g = torch.Generator().manual_seed(seed)
    start, it = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < seconds:
        for group in opt.param_groups:  # cosine decay over the wall-clock budget
            group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(elapsed / seconds, 1.0)))
        x = pool[torch.randint(0, pool.shape[0], (batch,), generator=g)]
        loss, _ = model.loss(x, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        ema.update(model)
        it += 1
    model.load_state_dict(ema.state_dict())
    return model, it


def test_nll(model: FlowMatching, data: str, n: int) -> dict[str, float]:
    """Test NLL (nats) and the paired estimate of KL(p || p_model) = E_p[log p - log p_model]
    with its standard error (the same points on both sides: far less noisy than NLL - H)."""
    x = sample_toy(data, n, generator=12345)
    with torch.no_grad():
        lp = torch.cat([model.log_prob(c, rtol=1e-6, atol=1e-6) for c in x.split(2000)])
    diff = toy_log_prob(data, x.double()).float() - lp
    return {
        "nll": float(-lp.mean()),
        "nll_se": float(lp.std() / math.sqrt(n)),
        "kl": float(diff.mean()),
        "kl_se": float(diff.std() / math.sqrt(n)),
    }


def nfe_curve(model: FlowMatching, data: str, n: int) -> list[dict[str, float]]:
    ref = sample_toy(data, n, generator=999)
    rows = []
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for steps in (2, 3, 4, 6, 8, 12, 16, 25, 50, 100):
            x, nfe = model.sample_with_nfe(n, sampler="euler", steps=steps, generator=g)
            rows.append({"sampler": "euler", "nfe": nfe, "energy": energy_distance(x, ref)})
        for tol in (1e-2, 1e-3, 1e-5):
            x, nfe = model.sample_with_nfe(n, sampler="dopri5", generator=g, rtol=tol, atol=tol)
            rows.append({"sampler": "dopri5", "nfe": nfe, "energy": energy_distance(x, ref)})
    return rows


def energy_floor(data: str, n: int) -> dict[str, float]:
    """Energy distance between independent samples of the true law (5 pairs of size n)."""
    nf = noise_floor(energy_distance, lambda k, g: sample_toy(data, k, generator=g), n)
    return {"mean": nf.mean, "std": nf.std}


def plot_nfe(rows: list[dict[str, float]], floor: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for name, style in (("euler", "o-"), ("dopri5", "s--")):
        pts = [(r["nfe"], max(r["energy"], 1e-5)) for r in rows if r["sampler"] == name]
        ax.plot(*zip(*pts, strict=True), style, label=f"flow matching, {name}")
    diffusion = RESULTS / "sde_samplers.json"  # bench_sde_samplers (VP score model), if run
    if diffusion.exists():
        quality = json.loads(diffusion.read_text()).get("8gaussians", {}).get("quality", {})
        for name, curve in quality.items():
            pts = sorted((r["nfe"], max(r["energy_distance"], 1e-5)) for r in curve)
            ax.plot(*zip(*pts, strict=True), ".:", lw=0.8, label=f"VP score SDE, {name}")
    top = floor["mean"] + 2 * floor["std"]
    ax.axhspan(1e-5, top, color="0.85", label="noise floor (+2 sd)")
    ax.set(xscale="log", yscale="log", xlabel="NFE", ylabel="energy distance (8gaussians)")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--skip-speed", action="store_true")
    parser.add_argument("--skip-nll", action="store_true")
    parser.add_argument("--plot-only", action="store_true", help="redraw the NFE figure")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=BATCH, help="training batch of the NLL runs")
    args = parser.parse_args()
    if args.plot_only:
        stored = json.loads((RESULTS / "fm.json").read_text())
        if not isinstance(stored["noise_floor"], dict):  # older files: one draw only
            stored["noise_floor"] = energy_floor("8gaussians", 5000)
            write_results("fm", stored)
        plot_nfe(stored["nfe_curve"], stored["noise_floor"], FIGURES / "fm_nfe.png")
        return
    env = setup(threads=args.threads)
    quick = args.quick
    seconds = 10.0 if quick else 120.0
    sets = ("8gaussians", "moons") if quick else ("8gaussians", "moons", "pinwheel", "checkerboard")
    name = "fm_quick" if quick else "fm"
    old = RESULTS / f"{name}.json"  # a skipped part keeps its previous result
    result: dict[str, Any] = json.loads(old.read_text()) if old.exists() else {}
    result.update(env=env, batch=BATCH, train_seconds=seconds)
    if not args.skip_speed:
        result["speed"] = {d: bench_speed(d, 3 if quick else 15) for d in ("8gaussians", "moons")}
        result["coupling"] = {d: bench_coupling(d, 3 if quick else 15) for d in sets}
        print(json.dumps({k: result[k] for k in ("speed", "coupling")}, indent=1))
    if not args.skip_nll:
        result["nll"] = {}
    for d in () if args.skip_nll else sets:
        model, its = train_fm(d, seconds, batch=args.batch)
        row = test_nll(model, d, 2000 if quick else 50_000)
        row.update(iterations=its, gap=row["nll"] - TOY_ENTROPY[d])
        result["nll"][d] = row
        print(f"{d}: {its} its, " + ", ".join(f"{k} {v:.4f}" for k, v in row.items()), flush=True)
        if d == "8gaussians":
            n = 1000 if quick else 5000
            rows = nfe_curve(model, d, n)
            floor = energy_floor(d, n)
            result["nfe_curve"], result["noise_floor"] = rows, floor
            if not quick:
                plot_nfe(rows, floor, FIGURES / "fm_nfe.png")
    path = write_results(name, result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
