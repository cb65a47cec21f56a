"""Figure for docs/score_matching.md: one small MLP score trained by each objective on a
2-D Gaussian mixture whose score is known in closed form.

Panels: the true score field, then the fields learned by implicit (ISM), sliced (SSM-VR)
and denoising (DSM, sigma = 0.3) score matching, each titled with its Fisher divergence
to its own target on held-out samples (ISM/SSM: grad log p; DSM: grad log p_sigma).

Run: ``python benchmarks/make_score_matching_figure.py`` (about a minute on one core);
writes docs/figures/score_matching.png and prints the numbers quoted in the docs.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch
from torch import Tensor

from probpath.losses import (
    denoising_score_matching,
    fisher_divergence,
    implicit_score_matching,
    sliced_score_matching,
)

W = torch.tensor([0.2, 0.8])
MUS = torch.tensor([[-1.5, -1.5], [1.5, 1.5]])
STD = 0.5
SIGMA = 0.3


def sample(n: int, gen: torch.Generator) -> Tensor:
    k = torch.multinomial(W, n, replacement=True, generator=gen)
    return MUS[k] + STD * torch.randn(n, 2, generator=gen)


def mixture_score(noise: float) -> Callable[[Tensor], Tensor]:
    var = STD**2 + noise**2

    def score(x: Tensor) -> Tensor:
        d = x[:, None, :] - MUS
        r = torch.softmax(W.log() - 0.5 * (d**2).sum(-1) / var, dim=1)
        return -(r[..., None] * d).sum(1) / var

    return score


def train(objective: str, gen: torch.Generator, steps: int = 1500) -> torch.nn.Module:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Linear(2, 64), torch.nn.SiLU(), torch.nn.Linear(64, 64), torch.nn.SiLU(),
        torch.nn.Linear(64, 2),
    )  # fmt: skip
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(steps):
        x = sample(512, gen)
        if objective == "ISM":
            loss = implicit_score_matching(net, x)
        elif objective == "SSM-VR":
            loss = sliced_score_matching(net, x, variance_reduction=True, generator=gen)
        else:
            loss = denoising_score_matching(net, x, SIGMA, generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return net


def main() -> None:
    gen = torch.Generator().manual_seed(0)
    test = sample(4000, torch.Generator().manual_seed(123))
    test_noisy = test + SIGMA * torch.randn(test.shape, generator=torch.Generator().manual_seed(7))
    fields: list[tuple[str, Callable[[Tensor], Tensor]]] = [("true score", mixture_score(0.0))]
    for objective in ["ISM", "SSM-VR", "DSM"]:
        net = train(objective, gen)
        target = mixture_score(SIGMA if objective == "DSM" else 0.0)
        pts = test_noisy if objective == "DSM" else test
        with torch.no_grad():
            fd = fisher_divergence(net, target, pts).item()
            ref = fisher_divergence(lambda x: torch.zeros_like(x), target, pts).item()
        print(f"{objective}: Fisher divergence {fd:.4f} (zero score: {ref:.2f})")
        fields.append((f"{objective}: Fisher div. {fd:.3f}", net))

    grid = torch.linspace(-3.5, 3.5, 21)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    fig, axes = plt.subplots(1, 4, figsize=(16, 4.2))
    for ax, (title, field) in zip(axes, fields, strict=True):
        with torch.no_grad():
            v = field(pts)
        ax.scatter(test[:1000, 0], test[:1000, 1], s=2, alpha=0.2, color="tab:blue")
        ax.quiver(
            pts[:, 0], pts[:, 1], v[:, 0], v[:, 1], color="k", angles="xy", scale=200, width=0.003
        )
        ax.set_title(title, fontsize=10)
        ax.set_aspect("equal")
    fig.tight_layout()
    out = Path(__file__).resolve().parents[1] / "docs" / "figures" / "score_matching.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
