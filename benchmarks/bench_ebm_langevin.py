"""Langevin's step size and step count for EBMs on images, from a closed form.

Unadjusted Langevin ``x <- x + h s(x) + sqrt(2 h) z`` on a Gaussian target N(m, S) is an
affine map, so from N(0, I) every iterate is Gaussian: along an eigenvector of S with
eigenvalue l, with r = 1 - h / l, the mean error is r^n times the initial one and the
variance ``v_n = v_inf + (1 - v_inf) r^(2n)``, ``v_inf = l / (1 - h / (2 l))`` (the chain's
stationary variance: biased upwards by the step). The KL divergence to the target then sums
over the eigenvectors in closed form.

The target is the Gaussian fit of each built-in image set in model space
(``to_centered``), its covariance plus ``0.1^2 I``: 0.1 is the EBM's default DSM noise, the
blur below which a model cannot resolve the data (and the pixels that never change, whose
variance is 0, get a finite one). The table gives KL per dimension after n steps of size h;
``EBM(shape=...)`` takes :data:`probpath.models.ebm.IMAGE_LANGEVIN` from it.

    .venv/bin/python -m benchmarks.bench_ebm_langevin
"""

from __future__ import annotations

import torch

from benchmarks._timing import env_info, write_results
from probpath.data import load_images, to_centered
from probpath.models.ebm import IMAGE_LANGEVIN

STEP_SIZES = (3e-4, 1e-3, 3e-3, 1e-2)
N_STEPS = (500, 1000, 2000, 5000)
NOISE = 0.1


def kl_per_dim(mean: torch.Tensor, cov: torch.Tensor, h: float, n: int) -> float:
    """KL(law of ULA after n steps of h from N(0, I) || N(mean, cov)) / dim."""
    lam, vecs = torch.linalg.eigh(cov)
    if h >= 2 * float(lam.min()):
        return float("inf")  # unstable along the narrowest direction
    r = 1 - h / lam
    v_inf = lam / (1 - h / (2 * lam))
    v = v_inf + (1 - v_inf) * r ** (2 * n)
    err = (vecs.T @ mean) * r**n  # the mean starts at 0
    kl = 0.5 * (v / lam - 1 - torch.log(v / lam) + err**2 / lam).sum()
    return float(kl) / len(lam)


def main() -> None:
    rows = []
    for name in ("digits", "mnist5k"):
        data = load_images(name)
        x = to_centered(data.images, data.levels, torch.float64).flatten(1)
        cov = torch.cov(x.T) + NOISE**2 * torch.eye(x.shape[1], dtype=torch.float64)
        for h in STEP_SIZES:
            kls = {n: kl_per_dim(x.mean(0), cov, h, n) for n in N_STEPS}
            rows.append({"data": name, "step_size": h, "kl_per_dim": kls})
            print(f"{name:8s} h={h:6.0e}  " + "  ".join(f"{n}: {k:.2g}" for n, k in kls.items()))
    path = write_results(
        "ebm_langevin", {"env": env_info(), "noise": NOISE, "chosen": IMAGE_LANGEVIN, "rows": rows}
    )
    print(f"chosen {IMAGE_LANGEVIN}; wrote {path}")


if __name__ == "__main__":
    main()
