"""What ``probpath eval`` and ``probpath plot`` compute from a trained run.

:func:`evaluate_run` scores a generative run in data space (test NLL, its bound where the
family has one, the gap to a toy set's entropy, the energy distance of samples to
held-out rows against its noise floor); :func:`evaluate_classifier` scores a classifier
run; :func:`plot_run` writes the PNGs of a run.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import metrics
from ..data import DIGITS, DIGITS_SHAPE, TOY_ENTROPY
from .evaluate import count_nfe, default_evaluate, map_chunks
from .rows import load_features, true_sampler
from .run import LoadedRun

__all__ = ["evaluate_classifier", "evaluate_run", "plot_run"]


def _eval_rows(run: LoadedRun, data: str | None, n: int, seed: int) -> Tensor:
    """``n`` rows of ``data`` (a toy name or file; drawn with ``seed + 1``), or the first
    ``n`` of the run's held-out rows."""
    if data:
        dtype = torch.get_default_dtype()
        return load_features(data, n, run.config.label_column, seed=seed + 1, dtype=dtype)
    return run.rows().eval[:n]


def _tightest_bound(model: Any, z: Tensor, log_det: Tensor, seed: int) -> dict[str, Any]:
    """The ELBO for each fixed reverse variance (one pass over the chain, every one a valid
    bound on the NLL): ``nll_bound_nats`` is the smallest mean, named by
    ``nll_bound_variance``, with its standard error; ``nll_bound_nats_<variance>`` each."""
    device = next(model.parameters()).device
    gen = torch.Generator(device).manual_seed(seed)
    names: list[str] = []

    def bounds(b: Tensor) -> Tensor:
        out = model.nll_bounds(b, generator=gen)
        names[:] = list(out)
        return torch.stack(list(out.values()), dim=1)

    per = map_chunks(bounds, z, device=device) - log_det[:, None]  # (rows, variances), data space
    means = per.mean(0)
    k = int(means.argmin())
    rows: dict[str, Any] = {
        "nll_bound_nats": float(means[k]),
        "nll_bound_se": float(per[:, k].std() / math.sqrt(len(per))),
        "nll_bound_variance": names[k],
    }
    rows.update({f"nll_bound_nats_{v}": float(m) for v, m in zip(names, means, strict=True)})
    return rows


def evaluate_run(
    run: LoadedRun,
    *,
    data: str | None = None,
    n: int = 2000,
    seed: int = 0,
    log_prob_kwargs: dict[str, Any] | None = None,
    sampling: dict[str, Any] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Test NLL in nats of the data space (``nll_nats``, its standard error ``nll_se``,
    ``bits_per_dim``, ``nll_bound_nats`` where the model has ``nll_bounds``: its tightest
    ELBO, :func:`_tightest_bound`), the
    ``entropy_nats`` and ``gap_nats`` of a toy set, the energy distance between ``n``
    samples and the rows with its noise floor, and the NFE of the likelihood and the
    sampling. ``log_prob_kwargs`` go to ``model.log_prob``, ``sampling`` to the sampler;
    ``progress`` shows a bar over the likelihood's rows.
    """
    if n < 2:
        raise ValueError(f"n (--n) must be at least 2 (a mean and its standard error), got {n}")
    model: Any = run.model
    name = data or run.config.data
    x = _eval_rows(run, data, n, seed)
    t0 = time.perf_counter()
    with count_nfe(run.model) as c:
        logp = run.log_prob(x, progress=progress, **(log_prob_kwargs or {}))
    nll = float(-logp.mean())
    rows: dict[str, Any] = {
        "step": run.step,
        "data": name,
        "n": len(x),
        "nll_nats": nll,
        "nll_se": float(logp.std() / math.sqrt(len(logp))),
        "bits_per_dim": float(metrics.bits_per_dim(nll, int(x[0].numel()))),
        "nfe_log_prob": c["nfe"],
    }
    if hasattr(model, "nll_bounds"):  # DDPM's ELBO: an upper bound of the NLL
        rows.update(_tightest_bound(model, *run.to_model_space(x), seed))
    if name in TOY_ENTROPY:
        rows["entropy_nats"] = float(TOY_ENTROPY[name])
        rows["gap_nats"] = nll - float(TOY_ENTROPY[name])
    samples, nfe = run.sample(len(x), seed=seed, **(sampling or {}))
    rows["energy_distance"] = float(metrics.energy_distance(samples, x))
    sampler = true_sampler(name, run.config.label_column)
    floor = metrics.noise_floor(metrics.energy_distance, sampler, len(x), repeats=3)
    rows["noise_floor"], rows["noise_floor_std"] = floor.mean, floor.std
    rows["nfe_sample"] = nfe
    rows["seconds"] = round(time.perf_counter() - t0, 2)
    return rows


def evaluate_classifier(run: LoadedRun, *, n: int = 2000) -> dict[str, Any]:
    """A classifier run on its first ``n`` held-out rows: cross-entropy at random noise
    levels, as trained (``loss``), and accuracy on clean rows (``accuracy``)."""
    rows = run.rows(labels=True)
    z, _ = run.to_model_space(rows.eval[:n])
    y = None if rows.eval_y is None else rows.eval_y[:n]
    scores = default_evaluate(run.model, z, y)
    return {"step": run.step, "data": run.config.data, "n": len(z), **scores}


def _sample_per_label(run: LoadedRun, n: int, seed: int) -> tuple[Tensor, Tensor]:
    """About ``n`` samples of a conditional run, ``n // K`` (at least 1) from each class
    k = 0..K-1 by classifier-free guidance at scale 1 (the learnt p(x | y = k)), and their
    labels."""
    from ..guidance import guide

    per = max(1, n // len(run.classes))
    parts = [
        run.sample(per, seed=seed + k, model=guide(run.model, k, 1.0))[0]  # type: ignore[arg-type]
        for k in range(len(run.classes))
    ]
    return torch.cat(parts), torch.arange(len(parts)).repeat_interleave(per)


def _samples_png(run: LoadedRun, x: Tensor, x_labels: Tensor | None, seed: int) -> Path:
    """``samples.png``: a grid of 8 x 8 digits (a row per label for a conditional run),
    or 2-D samples beside the held-out rows."""
    from .. import plots  # matplotlib: imported when a plot is drawn

    out = run.run_dir / "samples.png"
    conditional = bool(run.classes)
    if run.config.data == DIGITS:
        if conditional:
            images = _sample_per_label(run, 10 * len(run.classes), seed)[0]
        else:
            images = run.sample(100, seed=seed)[0]
        return plots.plot_image_grid(
            images, out, nrow=10, image_shape=DIGITS_SHAPE, vmin=-1, vmax=1
        )
    if conditional:
        samples, labels = _sample_per_label(run, len(x), seed)
    else:
        samples, labels = run.sample(len(x), seed=seed)[0], None
    return plots.plot_samples(samples, x, out, labels=labels, data_labels=x_labels)


def _density_png(run: LoadedRun, x: Tensor, progress: bool) -> Path:
    """``density.png``: the model density in data space on a 100 x 100 grid around ``x``."""
    from .. import plots  # matplotlib: imported when a plot is drawn

    def log_prob(pts: Tensor) -> Tensor:  # chunked, no graph across a solve
        return run.log_prob(pts.to(torch.get_default_dtype()), progress=progress)

    lo, hi = x.min(0).values, x.max(0).values
    (x0, y0), (x1, y1) = (lo - 0.1 * (hi - lo)).tolist(), (hi + 0.1 * (hi - lo)).tolist()
    path, side = run.run_dir / "density.png", 100
    bounds = (x0, x1, y0, y1)  # one call of log_prob: one progress bar over the grid
    return plots.plot_density(log_prob, bounds, path, resolution=side, batch_size=side * side)


def _trajectories_png(run: LoadedRun, n: int, seed: int) -> Path:
    """``trajectories.png``: ``n`` paths from the base to the data, in data space."""
    from .. import plots  # matplotlib: imported when a plot is drawn

    gen = torch.Generator(run.device).manual_seed(seed)
    with torch.no_grad():
        paths = run.model.trajectories(n, generator=gen).cpu()  # type: ignore[operator]
    if run.standardizer is not None:
        paths = run.standardizer.inverse(paths)
    return plots.plot_trajectories(paths, run.run_dir / "trajectories.png")


def _curves_png(run: LoadedRun) -> Path | None:
    """``training_curves.png`` from ``metrics.jsonl`` (``None`` without a log)."""
    from .. import plots  # matplotlib: imported when a plot is drawn

    log = run.run_dir / "metrics.jsonl"
    if not log.is_file():
        return None
    present = set().union(*(json.loads(line) for line in log.read_text().splitlines()))
    names = ("loss", "nfe", "eval_nll", "eval_loss", "eval_accuracy", "grad_norm", "lr")
    keys = [k for k in names if k in present]
    return plots.plot_training_curves(log, run.run_dir / "training_curves.png", keys=keys)


def plot_run(run: LoadedRun, *, n: int = 2000, seed: int = 0, progress: bool = False) -> list[Path]:
    """Write a run's PNGs into its folder and return their paths: ``samples.png`` (digits
    or 2-D data), ``density.png`` and ``trajectories.png`` (2-D data; trajectories for
    families that have them), ``training_curves.png``. A classifier run gets its curves;
    ``progress`` shows a bar over the density grid."""
    generative = hasattr(run.model, "sample")
    rows = run.rows(labels=bool(run.classes))
    x = rows.eval[:n]
    x_labels = None if rows.eval_y is None else rows.eval_y[:n]
    two_d = x.ndim == 2 and x.shape[1] == 2
    written = []
    if generative and (two_d or run.config.data == DIGITS):
        written.append(_samples_png(run, x, x_labels, seed))
    if generative and two_d:
        written.append(_density_png(run, x, progress))
        if hasattr(run.model, "trajectories"):
            written.append(_trajectories_png(run, min(len(x), 500), seed))
    curves = _curves_png(run)
    return written + ([curves] if curves is not None else [])
