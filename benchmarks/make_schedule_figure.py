"""Plot alpha(t), sigma(t) and the log-SNR of every schedule into docs/figures/schedules.png.

    .venv/bin/python -m benchmarks.make_schedule_figure

A deterministic figure, no timing: each schedule is evaluated on a grid of t in [0, 1]
(the DDPM chains through their continuous interpolation, linear in log abar).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import torch

from probpath.paths import (
    CondOTSchedule,
    DiscreteSchedule,
    SubVPSchedule,
    VESchedule,
    VPCosineSchedule,
    VPSchedule,
    cosine_betas,
    linear_betas,
)

OUT = Path(__file__).resolve().parents[1] / "docs" / "figures" / "schedules.png"

SCHEDULES = {
    "CondOT (sigma_min=0)": CondOTSchedule(),
    "VP linear (0.1, 20)": VPSchedule(),
    "VP cosine (s=0.008)": VPCosineSchedule(),
    "sub-VP (0.1, 20)": SubVPSchedule(),
    "VE (0.01, 50)": VESchedule(0.01, 50.0),
    "DDPM linear, T=1000": DiscreteSchedule(linear_betas(1000)),
    "DDPM cosine, T=1000": DiscreteSchedule(cosine_betas(1000)),
}


def main() -> None:
    t = torch.linspace(0, 1, 1001, dtype=torch.float64)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for name, schedule in SCHEDULES.items():
        s = schedule(t)
        style = "--" if name.startswith("DDPM") else "-"
        axes[0].plot(t, s.alpha, style, label=name)
        axes[1].plot(t, s.sigma, style, label=name)
        axes[2].plot(t[1:-1], s.log_snr[1:-1], style, label=name)
    axes[1].set_yscale("log")
    titles = ("alpha(t)", "sigma(t) (log scale)", "log-SNR log(alpha^2 / sigma^2)")
    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel("t (0 = data, 1 = noise)")
        ax.grid(alpha=0.3)
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=110)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
