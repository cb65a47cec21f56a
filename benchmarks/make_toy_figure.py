"""Figures for docs/data.md and docs/metrics.md: every toy set (samples), every
exact/quadrature density, and the noise floors of the two-sample statistics.

Run from the repository root:  .venv/bin/python -m benchmarks.make_toy_figure
Writes docs/figures/toy_sets.png, toy_densities.png and noise_floors.png.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from probpath.data import TOY_ENTROPY, TOY_NAMES, sample_toy, toy_log_prob
from probpath.metrics import energy_distance, mmd2, noise_floor, sliced_wasserstein

LIM = 4.5


def _grid(nrows: int, ncols: int) -> tuple[Figure, list]:
    fig = Figure(figsize=(3 * ncols, 3 * nrows), dpi=100)
    if nrows == 1:
        fig.set_size_inches(4 * ncols, 3.5)
    FigureCanvasAgg(fig)
    return fig, list(fig.subplots(nrows, ncols).ravel())


def toy_sets(path: Path, n: int, seed: int) -> Path:
    fig, axes = _grid(2, 4)
    for ax, name in zip(axes, TOY_NAMES, strict=True):
        x = sample_toy(name, n, generator=seed)
        ax.scatter(x[:, 0], x[:, 1], s=1, alpha=0.4, linewidths=0)
        ax.set_title(f"{name}  (H = {TOY_ENTROPY[name]:.3f} nats)", fontsize=9)
        ax.set_xlim(-LIM, LIM)
        ax.set_ylim(-LIM, LIM)
        ax.set_aspect("equal")
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    return path


def toy_densities(path: Path, resolution: int) -> Path:
    names = TOY_NAMES
    fig, axes = _grid(2, 4)
    g = torch.linspace(-LIM, LIM, resolution, dtype=torch.float64)
    pts = torch.stack(torch.meshgrid(g, g, indexing="xy"), dim=-1).reshape(-1, 2)
    for ax, name in zip(axes, names, strict=True):
        p = toy_log_prob(name, pts).exp().reshape(resolution, resolution)
        ax.imshow(p.numpy(), origin="lower", extent=(-LIM, LIM, -LIM, LIM), cmap="viridis")
        how = {"moons": "quadrature", "swissroll": "quadrature", "2spirals": "quadrature"}.get(
            name, "numerical inverse" if name == "pinwheel" else "exact"
        )
        ax.set_title(f"{name}: p(x), {how}", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path)
    return path


def _sw(x: torch.Tensor, y: torch.Tensor) -> float:
    return sliced_wasserstein(x, y, generator=0)


def noise_floors(path: Path, sizes: tuple[int, ...], repeats: int) -> Path:
    """Noise floor (mean + 2 std over independent 8gaussians pairs) against n, beside the
    value between 8gaussians and moons samples of the same size."""
    stats = {"energy distance": energy_distance, "MMD^2 (median h)": mmd2, "sliced W2": _sw}
    fig, axes = _grid(1, 3)
    for ax, (label, stat) in zip(axes, stats.items(), strict=False):
        floor, other = [], []
        for n in sizes:
            nf = noise_floor(
                stat,
                lambda k, g: sample_toy("8gaussians", k, generator=g),
                n,
                repeats=repeats,
                generator=n,
            )
            floor.append(nf.mean + 2 * nf.std)
            g = torch.Generator().manual_seed(n + 1)
            other.append(
                stat(sample_toy("8gaussians", n, generator=g), sample_toy("moons", n, generator=g))
            )
        ax.loglog(sizes, floor, "o-", label="noise floor: mean + 2 std")
        ax.loglog(sizes, other, "s--", label="8gaussians vs moons")
        ax.set_title(label, fontsize=10)
        ax.set_xlabel("n per sample")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("docs/figures"))
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--resolution", type=int, default=200)
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(toy_sets(args.out / "toy_sets.png", args.n, args.seed))
    print(toy_densities(args.out / "toy_densities.png", args.resolution))
    print(noise_floors(args.out / "noise_floors.png", (100, 300, 1000, 3000), repeats=20))


if __name__ == "__main__":
    main()
