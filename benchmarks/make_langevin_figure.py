"""Figure for docs/langevin.md: Langevin chains on a 2-D Gaussian mixture.

Left: unadjusted Langevin at the data level, started from broad noise (red: the first
150 steps of 8 chains): every chain falls
into the nearest mode and the split between the modes stays near 1/2, not 1/5 : 4/5.
Middle: annealed Langevin (Song & Ermon 2019's setup) recovers the weights (the final
Tweedie step pulls the samples to the posterior means, hence the tighter clouds).
Right: ULA's stationary variance on N(0, s^2) against the step, with the closed form
s^2 / (1 - eta / (4 s^2)), and MALA at the same steps (exact).

Run: ``python benchmarks/make_langevin_figure.py`` (about 10 s on one CPU core); writes
docs/figures/langevin.png and prints the numbers quoted in the docs.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from probpath.samplers import annealed_langevin, langevin, mala

W = torch.tensor([0.2, 0.8], dtype=torch.float64)
MUS = torch.tensor([[-5.0, -5.0], [5.0, 5.0]], dtype=torch.float64)


def mixture_score(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Score of (1/5 N(mu_1, I) + 4/5 N(mu_2, I)) * N(0, sigma^2 I)."""
    var = 1.0 + sigma[:, None] ** 2
    d = x[:, None, :] - MUS
    r = torch.softmax(W.log() - 0.5 * (d**2).sum(-1) / var, dim=1)
    return -(r[..., None] * d).sum(1) / var


def main() -> None:
    torch.manual_seed(0)
    n = 2000
    sigmas = torch.logspace(math.log10(20.0), 0.0, 10, dtype=torch.float64)
    x0 = sigmas[0] * torch.randn(n, 2, dtype=torch.float64)
    gen = torch.Generator().manual_seed(1)

    trajectories: list[torch.Tensor] = []
    x_ula, _ = langevin(
        mixture_score,
        x0,
        torch.ones(1000, dtype=torch.float64),  # the data level sigma = 1 of the mixture
        step_size=0.1,
        generator=gen,
        callback=lambda k, x: trajectories.append(x[:8].clone()) if k < 150 else None,
    )
    x_ann, nfe = annealed_langevin(
        mixture_score, x0, sigmas, step_size=0.1, n_steps_per_level=100, generator=gen
    )
    left_ula = (x_ula.sum(1) < 0).double().mean().item()
    left_ann = (x_ann.sum(1) < 0).double().mean().item()
    print(f"fraction near the weight-0.2 mode: ULA {left_ula:.3f}, annealed {left_ann:.3f}")
    print(f"annealed NFE {nfe}")

    etas = [0.1, 0.2, 0.4, 0.8, 1.2, 1.6]
    ula_var, mala_var = [], []
    for eta in etas:
        z0 = torch.randn(20000, 1, dtype=torch.float64)
        xu, _ = langevin(lambda x, t: -x, z0, torch.zeros(300), step_size=eta, generator=gen)
        xm, _, acc = mala(
            lambda x, t: -0.5 * (x**2).sum(1), z0, torch.zeros(300), step_size=eta, generator=gen
        )
        ula_var.append(xu.var().item())
        mala_var.append(xm.var().item())
        print(f"eta {eta}: ULA var {ula_var[-1]:.3f} (theory {1 / (1 - eta / 4):.3f}), "
              f"MALA var {mala_var[-1]:.3f}, acceptance {acc.mean().item():.2f}")  # fmt: skip

    fig, axes = plt.subplots(1, 3, figsize=(13, 4.2))
    grid = torch.linspace(-10, 10, 200, dtype=torch.float64)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    pts = torch.stack([gx.reshape(-1), gy.reshape(-1)], 1)
    logp = torch.logsumexp(W.log() - 0.5 * ((pts[:, None] - MUS) ** 2).sum(-1), dim=1)
    for ax, x, title in [
        (axes[0], x_ula, f"Langevin at the data level: {left_ula:.2f} near the 1/5 mode"),
        (axes[1], x_ann, f"annealed + denoising: {left_ann:.2f} near the 1/5 mode"),
    ]:
        ax.contour(gx, gy, logp.reshape(200, 200).exp(), levels=8, cmap="Greys", linewidths=0.7)
        ax.scatter(x[:, 0], x[:, 1], s=2, alpha=0.3, color="tab:blue")
        ax.set_title(title, fontsize=10)
        ax.set_xlim(-10, 10)
        ax.set_ylim(-10, 10)
        ax.set_aspect("equal")
    traj = torch.stack(trajectories)  # (steps, 8, 2)
    for i in range(traj.shape[1]):
        axes[0].plot(traj[:, i, 0], traj[:, i, 1], lw=0.6, color="tab:red", alpha=0.8)
    fine = torch.linspace(0.01, 1.7, 100)
    axes[2].plot(fine, 1 / (1 - fine / 4), color="k", lw=1, label=r"$1/(1-\eta/4)$ (ULA theory)")
    axes[2].plot(etas, ula_var, "o", color="tab:red", label="ULA")
    axes[2].plot(etas, mala_var, "s", color="tab:green", label="MALA")
    axes[2].axhline(1.0, color="tab:green", lw=0.7, ls="--")
    axes[2].set_xlabel(r"step size $\eta$")
    axes[2].set_ylabel("stationary variance, target N(0, 1)")
    axes[2].legend(fontsize=9)
    axes[2].set_title("ULA's O(eta) bias; MALA is exact", fontsize=10)
    fig.tight_layout()
    out = Path(__file__).resolve().parents[1] / "docs" / "figures" / "langevin.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
