"""Guidance: accuracy against diversity as the guidance scale grows, CFG and classifier.

Two labelled sets: ``8gaussians`` labelled by mixture component (K = 8, standardised as
the CLI does) and sklearn's ``digits`` (8 x 8 images in [-1, 1], K = 10; 1438 training
and 359 held-out images, the CLI's 80/20 split with seed 0). On each:

- a conditional DDPM (eps-MLP, linear betas, T = 1000, label embedding, p_uncond = 0.15)
  trained with label dropout (Ho & Salimans 2022); classifier-free guidance mixes its
  conditional and null-label predictions;
- a noisy classifier p(y | x_t) on the DDPM's own chain (``NoisyClassifier(**
  ddpm.schedule_config)``); classifier guidance corrects the **null-label branch of the
  same conditional DDPM** (its unconditional model), eps - gamma sqrt(1 - abar_t) grad log
  p(y | x_t), so the two methods share one network and differ only in the guidance;
- a separately trained *clean* classifier (``noisy=False``), used only for scoring.

For gamma in GAMMAS and both methods, samples are drawn with DDIM (eta = 0, 50 steps) for
every label at once (one label per row), and scored by: the accuracy of the clean
classifier on them (the fraction labelled as asked), and the energy distance to the true
class-conditional law, averaged over labels (8gaussians: 500 samples against 500 fresh
draws of that component; digits: as many samples as training images of the label against
the held-out images of the label), and the mean absolute coordinate of the samples in
data space (``mean_abs``, against the references' ``data_mean_abs``: on digits, how far
the pixels saturate). Beside it, the noise floor: the energy distance between two true
samples of the same sizes (8gaussians: fresh draws, 5 repeats; digits: the
training images of the label against its held-out images). gamma = 0 is the
unconditional model for both methods (the same samples), gamma = 1 the learnt p(x | y).

Writes ``benchmarks/results/guidance.json`` (``guidance_quick.json`` with ``--quick``), and
in full mode ``docs/figures/guidance_tradeoff.png`` and ``docs/figures/guidance_digits.png``
(rows = digits 0-9, 8 samples each, CFG left and classifier guidance right, at
``GRID_GAMMA``). One thread (``--threads``).

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        nice .venv/bin/python -m benchmarks.bench_guidance [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks._timing import setup, write_results
from probpath.data import DIGITS_SHAPE, Standardizer, load_labelled, sample_toy
from probpath.guidance import guide
from probpath.metrics import energy_distance, noise_floor
from probpath.models import DDPM, NoisyClassifier
from probpath.train import TrainConfig, load_checkpoint, train

FIGURES = Path(__file__).resolve().parents[1] / "docs" / "figures"
GAMMAS = (0.0, 0.5, 1.0, 2.0, 3.0, 5.0, 8.0)
GRID_GAMMA = 3.0
SAMPLER = {"sampler": "ddim", "steps": 50}
P_UNCOND = 0.15


@dataclass(frozen=True)
class Budget:
    """Hidden widths and optimiser steps of the three networks of one data set."""

    hidden: tuple[int, ...]
    steps: int  # the DDPM
    clf_steps: int  # the noisy classifier
    clean_steps: int  # the scoring classifier
    batch: int
    lr: float


BUDGETS = {
    "8gaussians": Budget((128, 128, 128), 2500, 1500, 800, 256, 2e-3),
    "digits": Budget((256, 256, 256), 10000, 3000, 1000, 128, 2e-3),
}
QUICK = {
    "8gaussians": Budget((64, 64), 300, 200, 200, 256, 2e-3),
    "digits": Budget((64, 64), 300, 200, 200, 128, 1e-3),
}


def fit(model: nn.Module, x: Tensor, y: Tensor, steps: int, b: Budget, seed: int) -> nn.Module:
    """Train with labels (``probpath.train.train``) and load the EMA weights."""
    cfg = TrainConfig(
        steps=steps,
        batch_size=b.batch,
        lr=b.lr,
        schedule="cosine",
        warmup_steps=min(100, steps // 10),
        ema_decay=0.999 if steps >= 1000 else 0.99,
        checkpoint_every=steps,
        log_every=max(1, steps // 10),
        seed=seed,
    )
    with tempfile.TemporaryDirectory() as run_dir:
        train(model, x, cfg, run_dir, labels=y, progress=False)
        ck = load_checkpoint(Path(run_dir) / "checkpoints")
    model.load_state_dict(ck.ema if ck.ema is not None else ck.model)
    return model.eval()


@dataclass
class DataSet:
    """Training rows and labels in model space, and per label: the reference rows (data
    space) the samples are compared with, the rows giving the noise floor's second
    sample, and the number of samples to draw."""

    name: str
    x: Tensor
    y: Tensor
    k: int
    std: Standardizer | None
    refs: list[Tensor]
    floor_rows: list[Tensor] | None  # None: fresh draws (a toy set)
    counts: list[int]
    test_x: Tensor
    test_y: Tensor


def gaussians(quick: bool) -> DataSet:
    d = load_labelled("8gaussians", 20_000, seed=0)
    std = Standardizer.fit(d.x)
    x_test, y_test = sample_toy("8gaussians", 5000, generator=1, labels=True)
    n = 200 if quick else 500
    g = torch.Generator().manual_seed(2)
    pool_x, pool_y = sample_toy("8gaussians", 40 * n, generator=g, labels=True)
    refs = [pool_x[pool_y == c][:n] for c in range(8)]
    return DataSet(
        "8gaussians",
        std.forward(d.x),
        d.y,
        8,
        std,
        refs,
        None,
        [n] * 8,
        std.forward(x_test),
        y_test,
    )


def digits() -> DataSet:
    d = load_labelled("digits", None, seed=0)  # the CLI's seeded shuffle and 80/20 split
    n_train = 1438
    x, y, test_x, test_y = d.x[:n_train], d.y[:n_train], d.x[n_train:], d.y[n_train:]
    refs = [test_x[test_y == c] for c in range(10)]
    floor_rows = [x[y == c] for c in range(10)]
    counts = [len(r) for r in floor_rows]
    return DataSet("digits", x, y, 10, None, refs, floor_rows, counts, test_x, test_y)


def to_data(ds: DataSet, z: Tensor) -> Tensor:
    return ds.std.inverse(z) if ds.std is not None else z


def floors(ds: DataSet) -> list[float]:
    """Energy distance between two true samples of the sizes used, per label."""
    if ds.floor_rows is not None:
        return [energy_distance(f, r) for f, r in zip(ds.floor_rows, ds.refs, strict=True)]
    out = []
    for c, n in enumerate(ds.counts):

        def draw(m: int, g: torch.Generator, c: int = c) -> Tensor:
            x, y = sample_toy(ds.name, 12 * m, generator=g, labels=True)
            return x[y == c][:m]

        out.append(noise_floor(energy_distance, draw, n, repeats=5).mean)
    return out


def run_set(ds: DataSet, b: Budget, gammas: tuple[float, ...]) -> dict[str, Any]:
    dim = ds.x.shape[1]
    t0 = time.perf_counter()
    torch.manual_seed(0)
    ddpm = DDPM(dim=dim, hidden=b.hidden, n_classes=ds.k, p_uncond=P_UNCOND)
    fit(ddpm, ds.x, ds.y, b.steps, b, seed=0)
    t_ddpm = time.perf_counter() - t0
    noisy = NoisyClassifier(dim=dim, n_classes=ds.k, hidden=b.hidden, **ddpm.schedule_config)
    fit(noisy, ds.x, ds.y, b.clf_steps, b, seed=1)
    clean = NoisyClassifier(dim=dim, n_classes=ds.k, hidden=b.hidden, noisy=False)
    fit(clean, ds.x, ds.y, b.clean_steps, b, seed=2)
    t_train = time.perf_counter() - t0
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(ds.counts)])
    clean_acc = clean.accuracy(ds.test_x, ds.test_y)
    noisy_acc = noisy.accuracy(ds.test_x, ds.test_y)
    floor = floors(ds)
    rows = []
    grid: dict[str, Tensor] = {}
    for method in ("cfg", "classifier"):
        for gamma in gammas:
            clf = noisy if method == "classifier" else None
            guided = guide(ddpm, labels, gamma, method=method, classifier=clf)
            g = torch.Generator().manual_seed(3)
            s0 = time.perf_counter()
            with torch.no_grad():
                z = guided.sample(len(labels), generator=g, **SAMPLER)
            seconds = time.perf_counter() - s0
            acc = clean.accuracy(z, labels)
            x = to_data(ds, z)
            eds = [energy_distance(x[labels == c], ds.refs[c]) for c in range(ds.k)]
            ed = sum(eds) / ds.k
            rows.append(
                {
                    "method": method,
                    "gamma": gamma,
                    "accuracy": acc,
                    "energy_distance": ed,
                    "energy_distance_per_label": eds,
                    "mean_abs": float(x.abs().mean()),  # saturation: compare data_mean_abs
                    "sample_seconds": round(seconds, 2),
                }
            )
            print(f"{ds.name:10s} {method:10s} gamma={gamma:<4} acc={acc:.3f} ed={ed:.4f}")
            if gamma == GRID_GAMMA:
                grid[method] = x
    out = {
        "dim": dim,
        "n_classes": ds.k,
        "n_train": len(ds.x),
        "samples_per_label": ds.counts,
        "clean_classifier_test_accuracy": clean_acc,
        "noisy_classifier_clean_test_accuracy": noisy_acc,
        "noise_floor": sum(floor) / ds.k,
        "data_mean_abs": float(torch.cat(ds.refs).abs().mean()),
        "noise_floor_per_label": floor,
        "train_seconds": {"ddpm": round(t_ddpm, 1), "all": round(t_train, 1)},
        "rows": rows,
    }
    return {"result": out, "grid": grid, "labels": labels}


def tradeoff_figure(results: dict[str, Any], path: Path) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12.0, 7.0), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(len(results), 3)
    style = {
        "cfg": ("tab:blue", "o", "classifier-free"),
        "classifier": ("tab:red", "s", "classifier"),
    }
    for row, (name, res) in zip(axes, results.items(), strict=True):
        for method, (colour, marker, label) in style.items():
            r = [x for x in res["rows"] if x["method"] == method]
            g = [x["gamma"] for x in r]
            acc = [x["accuracy"] for x in r]
            ed = [x["energy_distance"] for x in r]
            kw = {"color": colour, "marker": marker, "label": label, "markersize": 4}
            row[0].plot(g, acc, **kw)
            row[1].plot(g, ed, **kw)
            row[2].plot(acc, ed, **kw)
            for a, e, gm in zip(acc, ed, g, strict=True):
                row[2].annotate(f"{gm:g}", (a, e), fontsize=7, color=colour)
        floor = res["noise_floor"]
        for ax in row[1:]:
            if floor > 0:  # the unbiased estimate can be <= 0 (digits): then only the legend
                ax.axhline(floor, color="grey", ls="--", lw=1, label=f"noise floor {floor:.2g}")
            else:
                ax.plot([], [], color="grey", ls="--", lw=1, label=f"noise floor {floor:.2g}")
            ax.set_yscale("log")
        row[0].axhline(
            res["clean_classifier_test_accuracy"],
            color="grey",
            ls=":",
            lw=1,
            label="clean classifier on test data",
        )
        row[0].set(xlabel="guidance scale γ", ylabel="accuracy (clean classifier)", title=name)
        row[1].set(xlabel="guidance scale γ", ylabel="energy distance to p(x | y)", title=name)
        row[2].set(
            xlabel="accuracy", ylabel="energy distance", title=f"{name}: trade-off (labels: γ)"
        )
        row[0].legend(fontsize=7)
        row[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")


def digits_figure(run: dict[str, Any], path: Path, per: int = 8) -> None:
    """Rows = digits 0..9; ``per`` CFG samples, a blank column, ``per`` classifier-guided."""
    from probpath.plots import plot_image_grid

    labels = run["labels"]
    rows = []
    for c in range(10):
        blank = torch.full((1, 64), float("nan"))
        cfg, clf = (run["grid"][m][labels == c][:per] for m in ("cfg", "classifier"))
        rows.append(torch.cat([cfg, blank, clf]))
    images = torch.cat(rows).reshape(-1, *DIGITS_SHAPE)
    plot_image_grid(
        images,
        path,
        nrow=2 * per + 1,
        vmin=-1,
        vmax=1,
        figsize=(8.5, 5.0),
        title=f"digits 0-9, γ = {GRID_GAMMA:g}: classifier-free (left), classifier (right)",
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="tiny budgets, a smoke test")
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    env = setup(args.threads)
    budgets = QUICK if args.quick else BUDGETS
    gammas = (0.0, 1.0, 3.0) if args.quick else GAMMAS
    t0 = time.perf_counter()
    runs = {
        "8gaussians": run_set(gaussians(args.quick), budgets["8gaussians"], gammas),
        "digits": run_set(digits(), budgets["digits"], gammas),
    }
    results = {k: v["result"] for k, v in runs.items()}
    data = {
        "env": env,
        "sampler": SAMPLER,
        "p_uncond": P_UNCOND,
        "budgets": {k: vars(v) for k, v in budgets.items()},
        "total_seconds": round(time.perf_counter() - t0, 1),
        "results": results,
    }
    print(write_results("guidance_quick" if args.quick else "guidance", data))
    if not args.quick:
        tradeoff_figure(results, FIGURES / "guidance_tradeoff.png")
        digits_figure(runs["digits"], FIGURES / "guidance_digits.png")


if __name__ == "__main__":
    main()
