"""What ``probpath eval`` and ``probpath plot`` compute from a trained run.

:func:`evaluate_run` scores a generative run in data space (test NLL, its bound where the
family has one, the gap to a toy set's entropy, the energy distance of samples to
held-out rows against its noise floor; for discrete data the dequantized bound on
-log P(x) in bits/dim, and for images the Fréchet distance in a judge's features,
:mod:`.judge`); :func:`evaluate_classifier` scores a classifier run; :func:`plot_run`
writes the PNGs of a run.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from .. import metrics
from ..data import TOY_ENTROPY, TOY_NAMES, data_kind
from .evaluate import count_nfe, default_evaluate, has_likelihood, map_chunks
from .judge import judge_scores, load_judge, sample_per_label
from .rows import load_features, true_sampler
from .run import LoadedRun

__all__ = ["evaluate_classifier", "evaluate_run", "plot_run"]


def _eval_rows(run: LoadedRun, data: str | None, n: int, seed: int) -> Tensor:
    """``n`` rows of ``data`` (a toy name, file or images; drawn with ``seed + 1``), of the
    run's kind and shape, or the first ``n`` of the run's held-out rows."""
    if not data:
        return run.rows().eval[:n]
    levels = None if data in TOY_NAMES else run.config.levels
    kind = data_kind(data, levels=levels).kind
    x = None
    if kind == run.kind:
        dtype = torch.get_default_dtype()
        x = load_features(data, n, run.config.label_column, seed=seed + 1, dtype=dtype,
                          levels=levels)  # fmt: skip
    if x is None or (run.shape is not None and tuple(x.shape[1:]) != run.shape):
        what = "" if x is None else f" of shape {tuple(x.shape[1:])}"
        raise ValueError(
            f"--data {data} holds {kind} data{what}; {run.run_dir} models {run.kind} data "
            f"of shape {run.shape}"
        )
    return x


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


def _likelihood(
    run: LoadedRun, x: Tensor, k: int, seed: int, kwargs: dict[str, Any], progress: bool
) -> dict[str, Any]:
    """The test NLL in nats of the data space, its standard error over the rows, bits/dim
    and the NFE: of continuous rows their density; of discrete data the dequantized bound
    on -log P(x) with ``k`` draws per example (the levels K and the bound named).
    ``progress``: bars over the rows and over the network's evaluations."""
    with count_nfe(run.model, progress=progress, desc="likelihood") as c:
        if run.dequantizer is None:
            if k != 1:
                raise ValueError(f"k (--k) dequantizes discrete data; {run.run_dir} is continuous")
            nll = -run.log_prob(x, progress=progress, **kwargs)
        else:
            nll = run.nll(x, k=k, seed=seed, progress=progress, **kwargs)
    mean, se, dim = float(nll.mean()), float(nll.std() / math.sqrt(len(nll))), int(x[0].numel())
    rows: dict[str, Any] = {
        "nll_nats": mean,
        "nll_se": se,
        "bits_per_dim": float(metrics.bits_per_dim(mean, dim)),
    }
    if run.dequantizer is not None:
        what = "uniform" if k == 1 else f"importance-weighted, k={k}"
        rows["bits_per_dim_se"] = float(metrics.bits_per_dim(se, dim))
        rows["bound"] = f"dequantized ({what}) bound on -log P(x), {run.config.levels} levels"
    rows["nfe_log_prob"] = c["nfe"]
    return rows


def _elbo(run: LoadedRun, x: Tensor, seed: int, progress: bool) -> dict[str, Any]:
    """The ELBO's bound (:func:`_tightest_bound`) in data space, with its NFE. Discrete
    data: with a discretized decoder of the data's levels, on the pixels themselves (a
    bound on -log P(x), no dequantization term); otherwise at one dequantized draw per
    example (a bound on the dequantized bound)."""
    model: Any = run.model
    dq, mc = run.dequantizer, run.config.model_config
    if dq is None:
        z, log_det = run.to_model_space(x)
    elif mc.get("decoder") == "discretized":
        same_grid = dq.transform == "centered" and (mc.get("levels") or 256) == dq.levels
        if not same_grid:
            return {}  # its bins are not the data's levels: no bound to report
        z = run.to_model_space(x)[0]
        log_det = torch.zeros(len(x), dtype=z.dtype, device=z.device)
    else:
        p = next(model.parameters())
        gen = torch.Generator(device=p.device).manual_seed(seed)
        z = run.space.dequantize(x.to(p.device), gen, dtype=p.dtype)
        log_det = dq.log_det(z)
    with count_nfe(model, progress=progress, desc="ELBO") as c:
        rows = _tightest_bound(model, z, log_det, seed)
    rows["nfe_nll_bound"] = c["nfe"]
    if dq is not None:
        rows["nll_bound_bits_per_dim"] = float(
            metrics.bits_per_dim(rows["nll_bound_nats"], int(x[0].numel()))
        )
        rows["nll_bound_decoder"] = mc.get("decoder")
    return rows


def _energy(run: LoadedRun, name: str, x: Tensor, seed: int, sampling: dict[str, Any],
            progress: bool) -> dict[str, Any]:  # fmt: skip
    """The energy distance between ``len(x)`` samples and the rows ``x``, its noise floor
    (two draws of the data law) and the sampling's NFE."""
    samples, nfe = run.sample(len(x), seed=seed, progress=progress, **sampling)
    sampler = true_sampler(name, run.config.label_column, run.config.levels)
    floor = metrics.noise_floor(metrics.energy_distance, sampler, len(x), repeats=3)
    return {
        "energy_distance": float(metrics.energy_distance(samples, x)),
        "noise_floor": floor.mean,
        "noise_floor_std": floor.std,
        "nfe_sample": nfe,
    }


def evaluate_run(
    run: LoadedRun,
    *,
    data: str | None = None,
    n: int = 2000,
    seed: int = 0,
    log_prob_kwargs: dict[str, Any] | None = None,
    sampling: dict[str, Any] | None = None,
    progress: bool = False,
    k: int = 1,
    judge: str | os.PathLike[str] | LoadedRun | None = None,
    scale: float = 1.0,
) -> dict[str, Any]:
    """Test NLL in nats of the data space (``nll_nats``, its standard error ``nll_se``,
    ``bits_per_dim``; for discrete data the dequantized bound with ``k`` draws, and
    ``bits_per_dim_se``), ``nll_bound_nats`` where the model has ``nll_bounds`` (its
    tightest ELBO, :func:`_elbo`), the ``entropy_nats`` and ``gap_nats`` of a toy set,
    and the NFE of each. Samples: for vectors, the energy distance between ``n`` samples
    and the rows with its noise floor; for images, with a ``judge`` (an image-classifier
    run), the Fréchet distance in its features against its floor, and the accuracy of
    guided samples at ``scale`` for a conditional run (:func:`.judge.judge_scores`).
    ``log_prob_kwargs`` go to ``model.log_prob``, ``sampling`` to the sampler;
    ``progress`` shows bars over the likelihood's rows and the sampler's evaluations.
    """
    if n < 2:
        raise ValueError(f"n (--n) must be at least 2 (a mean and its standard error), got {n}")
    judge_run = None if judge is None else load_judge(judge, run)
    name = data or run.config.data
    x = _eval_rows(run, data, n, seed)
    t0 = time.perf_counter()
    rows: dict[str, Any] = {"step": run.step, "data": name, "n": len(x)}
    if run.dequantizer is not None:
        rows.update(kind=run.kind, shape=list(x.shape[1:]), levels=run.config.levels)
    if has_likelihood(run.model):
        rows.update(_likelihood(run, x, k, seed, log_prob_kwargs or {}, progress))
    else:  # e.g. an EBM beyond 2-D: no normaliser; its held-out training loss instead
        rows["loss"] = default_evaluate(run.model, run.to_model_space(x)[0])["loss"]
    if hasattr(run.model, "nll_bounds"):  # DDPM's ELBO: an upper bound of the NLL
        rows.update(_elbo(run, x, seed, progress))
    if name in TOY_ENTROPY:
        rows["entropy_nats"] = float(TOY_ENTROPY[name])
        rows["gap_nats"] = rows["nll_nats"] - float(TOY_ENTROPY[name])
    if judge_run is not None:
        scores = judge_scores(
            run, judge_run, x, seed=seed, scale=scale, progress=progress, sampling=sampling
        )
        rows.update(scores)
    elif run.kind != "images":
        rows.update(_energy(run, name, x, seed, sampling or {}, progress))
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


def _samples_png(run: LoadedRun, x: Tensor, x_labels: Tensor | None, seed: int) -> Path:
    """``samples.png``: a grid of 10 x 10 images (a row per label for a conditional run),
    or 2-D samples beside the held-out rows."""
    from .. import plots  # matplotlib: imported when a plot is drawn

    out = run.run_dir / "samples.png"
    conditional = bool(run.classes)
    if run.kind == "images":
        if conditional:
            images = sample_per_label(run, 10 * len(run.classes), seed=seed)[0]
        else:
            images = run.sample(100, seed=seed)[0]
        top = run.config.levels - 1  # type: ignore[operator]
        return plots.plot_image_grid(images, out, nrow=10, vmin=0, vmax=top)
    if conditional:
        samples, labels = sample_per_label(run, len(x), seed=seed)
    else:
        samples, labels = run.sample(len(x), seed=seed)[0], None
    return plots.plot_samples(samples, x, out, labels=labels, data_labels=x_labels)


def _denoising_png(run: LoadedRun, n: int, n_times: int, seed: int) -> Path:
    """``trajectories.png`` of an image run: ``n`` images (rows) at ``n_times`` times from
    noise (left) to data (right), on the pixel scale (unrounded, clipped to the levels)."""
    from .. import plots  # matplotlib: imported when a plot is drawn

    assert run.dequantizer is not None and run.shape is not None
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        states = run.model.trajectories(n, n_times, generator=gen)  # type: ignore[operator]
    top = run.config.levels - 1  # type: ignore[operator]
    v = run.dequantizer.inverse(states.reshape(-1, *run.shape)).clamp(0, top)
    frames = v.reshape(n_times, n, *run.shape).transpose(0, 1).reshape(-1, *run.shape)
    return plots.plot_image_grid(
        frames, run.run_dir / "trajectories.png", nrow=n_times, vmin=0, vmax=top,
        title="denoising: noise (left) to data (right)", figsize=(n_times, n),
    )  # fmt: skip


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
    names = (
        "loss", "nfe", "eval_nll", "eval_bits_per_dim", "eval_loss", "eval_accuracy", "grad_norm",
        "lr",
    )  # fmt: skip
    keys = [k for k in names if k in present]
    return plots.plot_training_curves(log, run.run_dir / "training_curves.png", keys=keys)


def plot_run(run: LoadedRun, *, n: int = 2000, seed: int = 0, progress: bool = False) -> list[Path]:
    """Write a run's PNGs into its folder and return their paths: ``samples.png`` (images,
    a row per label for a conditional run, or 2-D data), ``trajectories.png`` (families
    that have them: paths in 2-D, the denoising of 8 images along t for images),
    ``density.png`` (continuous 2-D data), ``training_curves.png``. A classifier run gets
    its curves; ``progress`` shows a bar over the density grid."""
    generative = hasattr(run.model, "sample")
    rows = run.rows(labels=bool(run.classes))
    x = rows.eval[:n]
    x_labels = None if rows.eval_y is None else rows.eval_y[:n]
    two_d = x.ndim == 2 and x.shape[1] == 2
    images = run.kind == "images"
    written = []
    if generative and (two_d or images):
        written.append(_samples_png(run, x, x_labels, seed))
    if generative and two_d and run.kind == "continuous":
        written.append(_density_png(run, x, progress))
    if generative and (two_d or images) and hasattr(run.model, "trajectories"):
        if images:
            written.append(_denoising_png(run, 8, 10, seed))
        else:
            written.append(_trajectories_png(run, min(len(x), 500), seed))
    curves = _curves_png(run)
    return written + ([curves] if curves is not None else [])
