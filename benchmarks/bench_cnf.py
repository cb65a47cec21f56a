"""probpath's CNF against an FFJORD-style torchdiffeq CNF on 8gaussians, side by side.

Both sides use the same network (``probpath.nets.MLP``, 3×64 tanh, time concatenated at
every layer), the same data (8gaussians, standardised), dopri5 at rtol = atol = 1e-5, the
exact trace, batch 256 and Adam. The reference is written here the way FFJORD trains
(``torchdiffeq.odeint_adjoint`` on the state (z, Δlog p), brute-force divergence with
``create_graph=True``, default adjoint norm). Reported:

1. seconds per training iteration (loss + backward) at a mid-training field, interleaved
   runs and the median of ratios, for probpath with backprop through the solver and with
   the adjoint, against the reference; forward and backward NFE of each;
2. the test NLL (nats, in the data's own units) after equal wall-clock training budgets,
   and its gap to the entropy of 8gaussians (2.834 nats).

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \
        .venv/bin/python -m benchmarks.bench_cnf [--quick]
        .venv/bin/python -m benchmarks.bench_cnf --budget 60 --skip-speed --threads 1
            # the equal-budget part alone at another budget: results/cnf_budget60.json
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torchdiffeq
from torch import Tensor, nn

from benchmarks._timing import RESULTS, interleaved, setup, write_results
from probpath.data import TOY_ENTROPY, sample_toy
from probpath.likelihood import ode_log_prob, standard_normal_log_prob
from probpath.models import CNF
from probpath.nets import MLP

TOL = dict(rtol=1e-5, atol=1e-5)
BATCH, LR = 256, 2e-3


class FFJORDFunc(nn.Module):
    """FFJORD's ODEfunc for (z, Δlog p) with the brute-force exact divergence."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.nfe = 0

    def forward(self, t: Tensor, states: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        z = states[0]
        self.nfe += 1
        with torch.enable_grad():
            z.requires_grad_(True)
            dz = self.net(z, t)
            div = torch.zeros(z.shape[0], dtype=z.dtype)
            for i in range(z.shape[1]):
                div += torch.autograd.grad(dz[:, i].sum(), z, create_graph=True)[0][:, i]
        return dz, -div


class FFJORDReference(nn.Module):
    """log p(x) = log N(z(1)) - Δlog p(1), trained with ``torchdiffeq.odeint_adjoint``."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.func = FFJORDFunc(net)

    def loss(self, x: Tensor) -> Tensor:
        zero = x.new_zeros(x.shape[0])
        ts = torch.tensor([0.0, 1.0])
        z, dlogp = torchdiffeq.odeint_adjoint(self.func, (x, zero), ts, method="dopri5", **TOL)
        return -(standard_normal_log_prob(z[-1]) - dlogp[-1]).mean()


class Counted(nn.Module):
    """The shared network with a call counter (NFE measured alike on both sides)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.calls = 0

    def forward(self, x: Tensor, t: Tensor) -> Tensor:
        self.calls += 1
        return self.net(x, t)


def make_data(n: int, seed: int) -> tuple[Tensor, Tensor, float]:
    """Standardised 8gaussians (train, test) and log|det| of the standardisation per point."""
    train = sample_toy("8gaussians", n, generator=seed)
    test = sample_toy("8gaussians", 20_000, generator=seed + 1)
    mean, std = train.mean(0), train.std(0)
    return (train - mean) / std, (test - mean) / std, -float(std.log().sum())


def ours(net: nn.Module, adjoint: bool) -> CNF:
    # FFJORD's plain NLL, trained at the evaluation tolerance as FFJORD does
    model = CNF(dim=2, adjoint=adjoint, train_rtol=1e-5, train_atol=1e-5, kinetic_reg=0.0, **TOL)
    model.net = net  # type: ignore[assignment]
    return model


def nfe_of(step: Callable[[], Any], counter: Counted) -> tuple[int, int]:
    """(forward, backward) calls of the network in one training step."""
    start = counter.calls
    loss = step()
    mid = counter.calls
    loss.backward()
    return mid - start, counter.calls - mid


def speed(field: MLP, x: Tensor, repeats: int) -> dict[str, Any]:
    cb, ca, cr = (Counted(copy.deepcopy(field)) for _ in range(3))
    backprop, adjoint, ref = ours(cb, False), ours(ca, True), FFJORDReference(cr)

    def step_b() -> Tensor:
        return backprop.loss(x)[0]

    def step_a() -> Tensor:
        return adjoint.loss(x)[0]

    def step_r() -> Tensor:
        return ref.loss(x)

    out: dict[str, Any] = {
        "nfe": {
            "probpath_backprop": nfe_of(step_b, cb),
            "probpath_adjoint": nfe_of(step_a, ca),
            "ffjord_torchdiffeq_adjoint": nfe_of(step_r, cr),
        }
    }
    for name, fn in (("probpath_backprop", step_b), ("probpath_adjoint", step_a)):
        r = interleaved(lambda fn=fn: fn().backward(), lambda: step_r().backward(), repeats, 0.0)
        out[name] = {
            "s_per_iter": r["median_a"],
            "ffjord_s_per_iter": r["median_b"],
            "ratio_to_ffjord": r["ratio"],
        }
    return out


def train_for(
    loss_fns: dict[str, Callable[[Tensor], Tensor]],
    params: dict[str, list[nn.Parameter]],
    train: Tensor,
    budget: float,
    max_iters: int | None = None,
    history: dict[str, list[tuple[float, float]]] | None = None,
) -> dict[str, int]:
    """Interleave one Adam step of each side until each has used ``budget`` seconds
    (or ``max_iters`` steps); ``history`` collects (seconds used, batch NLL) per side.

    Each side's learning rate follows a cosine decay over its own clock,
    ``LR (1 + cos(π used / budget)) / 2``, so both end the budget annealed and the final
    NLL measures the progress made, not the last constant-rate iterate's noise."""
    opts = {k: torch.optim.Adam(p, lr=LR) for k, p in params.items()}
    used = dict.fromkeys(loss_fns, 0.0)
    iters = dict.fromkeys(loss_fns, 0)
    g = torch.Generator().manual_seed(0)
    while any(u < budget for u in used.values()):
        if max_iters is not None and min(iters.values()) >= max_iters:
            break
        idx = torch.randint(len(train), (BATCH,), generator=g)
        for k, fn in loss_fns.items():
            if used[k] >= budget:
                continue
            start = time.perf_counter()
            for group in opts[k].param_groups:
                group["lr"] = LR * 0.5 * (1.0 + math.cos(math.pi * min(used[k] / budget, 1.0)))
            opts[k].zero_grad()
            loss = fn(train[idx])
            loss.backward()
            opts[k].step()
            used[k] += time.perf_counter() - start
            iters[k] += 1
            if history is not None:
                history.setdefault(k, []).append((used[k], float(loss.detach())))
    return iters


def test_nll(net: nn.Module, test: Tensor, logdet: float) -> tuple[float, float]:
    """Mean and standard error of the test NLL in the data's units (one evaluator)."""
    with torch.no_grad():
        lp = torch.cat([ode_log_prob(net, xb, **TOL) for xb in test.split(5000)]) + logdet
    return float(-lp.mean()), float(lp.std() / math.sqrt(len(lp)))


def figure(
    model: CNF, history: dict[str, list[tuple[float, float]]], logdet: float, budget: float
) -> None:
    """docs/figures/cnf.png: learned density, trajectories, training NLL vs wall clock."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(13, 4))
    u = torch.linspace(-2.2, 2.2, 120)
    xx, yy = torch.meshgrid(u, u, indexing="xy")
    with torch.no_grad():
        lp = model.log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1))
        paths = model.trajectories(300, 30, generator=torch.Generator().manual_seed(0))
    ax[0].imshow(lp.exp().view(120, 120), extent=(-2.2, 2.2, -2.2, 2.2), origin="lower")
    ax[0].set_title("learned density p(x) (standardised units)")
    for k in range(paths.shape[1]):
        ax[1].plot(paths[:, k, 0], paths[:, k, 1], lw=0.4, alpha=0.4, color="tab:blue")
    ax[1].scatter(paths[-1, :, 0], paths[-1, :, 1], s=3, color="k", zorder=3)
    ax[1].set(xlim=(-2.5, 2.5), ylim=(-2.5, 2.5), title="paths from N(0, I) (t=1) to data (t=0)")
    for name, pts in history.items():
        t, nll = zip(*pts, strict=True)
        k = max(1, len(nll) // 30)  # running mean over ~1/30 of the run
        smooth = [
            sum(nll[max(0, i - k) : i + 1]) / len(nll[max(0, i - k) : i + 1])
            for i in range(len(nll))
        ]
        ax[2].plot(t, [v - logdet for v in smooth], label=name)  # data units
    ax[2].axhline(TOY_ENTROPY["8gaussians"], color="k", ls="--", lw=0.8, label="entropy")
    ax[2].set(xlabel="training seconds", ylabel="batch NLL (nats)", xlim=(0, budget))
    ax[2].set_ylim(top=TOY_ENTROPY["8gaussians"] + 1.0)
    ax[2].legend()
    fig.tight_layout()
    fig.savefig(Path(__file__).resolve().parents[1] / "docs" / "figures" / "cnf.png", dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short warm-up and budget")
    parser.add_argument("--budget", type=float, help="training seconds per side")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--skip-speed", action="store_true", help="only the equal-budget part")
    args = parser.parse_args()
    env = setup(threads=args.threads)
    budget = args.budget or (20.0 if args.quick else 240.0)
    # the 240 s run owns cnf.json and the figure; other budgets and --quick write their own
    out = "cnf_quick" if args.quick else "cnf" if budget == 240.0 else f"cnf_budget{budget:g}"
    warm, repeats = (30, 3) if args.quick else (200, 9)
    train, test, logdet = make_data(20_000, seed=0)
    torch.manual_seed(0)
    init = MLP(2)
    results: dict[str, Any] = {
        "env": env,
        "problem": "8gaussians standardised, MLP 3x64 tanh (concat t), batch 256, "
        "dopri5 rtol=atol=1e-5, exact trace, Adam lr 2e-3 (cosine over the budget), float32",
        "entropy": TOY_ENTROPY["8gaussians"],
    }
    old = RESULTS / f"{out}.json"
    if args.skip_speed and old.exists():  # a skipped part keeps its previous result
        results["speed"] = json.loads(old.read_text()).get("speed")
    if not args.skip_speed:  # 1. speed at a mid-training field (NFE grows with training)
        warmed = copy.deepcopy(init)
        warm_model = ours(warmed, False)
        train_for(
            {"w": lambda x: warm_model.loss(x)[0]},
            {"w": list(warmed.parameters())},
            train,
            1e9,
            warm,
        )
        results["speed"] = {"warmup_iters": warm, **speed(warmed, train[:BATCH], repeats)}
        print("speed", results["speed"])
    # 2. NLL after equal wall-clock budgets from the same initialisation
    net_ours, net_ref = copy.deepcopy(init), copy.deepcopy(init)
    model, ref = ours(net_ours, False), FFJORDReference(net_ref)
    history: dict[str, list[tuple[float, float]]] = {}
    iters = train_for(
        {"probpath_backprop": lambda x: model.loss(x)[0], "ffjord_torchdiffeq_adjoint": ref.loss},
        {
            "probpath_backprop": list(net_ours.parameters()),
            "ffjord_torchdiffeq_adjoint": list(net_ref.parameters()),
        },
        train,
        budget,
        history=history,
    )
    nll: dict[str, Any] = {"budget_s": budget}
    for name, net in (("probpath_backprop", net_ours), ("ffjord_torchdiffeq_adjoint", net_ref)):
        m, se = test_nll(net, test, logdet)
        nll[name] = {"iters": iters[name], "test_nll": m, "se": se, "gap": m - results["entropy"]}
    results["equal_budget"] = nll
    results["history"] = {k: v[:: max(1, len(v) // 200)] for k, v in history.items()}
    print("equal budget", nll)
    results["quick"] = args.quick
    if out == "cnf":
        figure(model, history, logdet, budget)
    path = write_results(out, results)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
