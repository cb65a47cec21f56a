"""Sample quality of image runs without downloads: a classifier trained on the data (an
``image-classifier`` run, the *judge*) and the Fréchet distance in its feature space.

``probpath eval RUN --judge JUDGE`` reports, between ``n`` model samples and ``n`` held-out
images, the Fréchet distance of the judge's features (:func:`probpath.metrics.frechet_distance`)
and its floor, the same statistic between two disjoint sets of ``n`` held-out images (what
a model that draws from the data law would score at this n: the statistic is biased
upwards by O(1/n), so compare at equal n); for a conditional run also the judge's accuracy
on classifier-free-guided samples, per label, averaged. This is not the Inception FID:
its numbers are comparable only between runs scored by the same judge at the same n.
"""

from __future__ import annotations

import os
from typing import Any

import torch
from torch import Tensor

from ..metrics import frechet_distance
from .evaluate import map_chunks
from .run import LoadedRun, load_run

__all__ = ["judge_features", "judge_scores", "load_judge", "sample_per_label"]


def load_judge(judge: str | os.PathLike[str] | LoadedRun, run: LoadedRun) -> LoadedRun:
    """The judge run ``judge``, checked to be an image classifier of ``run``'s images
    (their shape and number of levels)."""
    if run.kind != "images":
        raise ValueError(
            f"--judge scores images; {run.run_dir} was trained on {run.kind} data "
            "(its samples are scored by the energy distance)"
        )
    loaded = judge if isinstance(judge, LoadedRun) else load_run(judge)
    if not hasattr(loaded.model, "features"):
        raise ValueError(
            f"--judge {loaded.run_dir} is a {loaded.config.model} run; train a judge with "
            f"probpath train --model image-classifier --data {run.config.data}"
        )
    ours, theirs = (run.shape, run.config.levels), (loaded.shape, loaded.config.levels)
    if ours != theirs:
        raise ValueError(
            f"--judge {loaded.run_dir} was trained on images of shape {theirs[0]} with "
            f"{theirs[1]} levels; {run.run_dir} has shape {ours[0]}, {ours[1]} levels"
        )
    return loaded


def judge_features(judge: LoadedRun, images: Tensor, *, chunk: int = 512) -> Tensor:
    """The judge's features (n, F) of ``images`` (integer levels, n x C x H x W): its
    network's penultimate layer on the images in its model space (the cube centres)."""
    model: Any = judge.model
    return map_chunks(lambda b: model.features(judge.to_model_space(b)[0]), images, chunk=chunk)


def sample_per_label(
    run: LoadedRun, n: int, *, seed: int, scale: float = 1.0, **sampling: Any
) -> tuple[Tensor, Tensor]:
    """About ``n`` samples of a conditional run, ``n // K`` (at least 1) from each class
    k = 0..K-1 by classifier-free guidance at ``scale`` (1: the learnt p(x | y = k)), and
    their labels."""
    from ..guidance import guide

    per = max(1, n // len(run.classes))
    parts = [
        run.sample(per, seed=seed + k, model=guide(run.model, k, scale), **sampling)[0]  # type: ignore[arg-type]
        for k in range(len(run.classes))
    ]
    return torch.cat(parts), torch.arange(len(parts)).repeat_interleave(per)


def judge_scores(
    run: LoadedRun,
    judge: LoadedRun,
    images: Tensor,
    *,
    seed: int = 0,
    scale: float = 1.0,
    progress: bool = False,
    sampling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``frechet_distance`` between n samples of ``run`` and the first n of the held-out
    ``images`` (n = half of them), ``frechet_floor`` between those and the next n,
    ``frechet_n``, ``nfe_sample``; for a conditional run ``judge_accuracy``, the judge's
    accuracy on n guided samples at ``scale`` (``judge_scale``), the mean over labels."""
    n = len(images) // 2
    if n < 2:
        raise ValueError(
            f"the Fréchet distance needs at least 4 held-out images, got {len(images)}"
        )
    real, other = judge_features(judge, images[:n]), judge_features(judge, images[n : 2 * n])
    samples, nfe = run.sample(n, seed=seed, progress=progress, **(sampling or {}))
    out: dict[str, Any] = {
        "judge": str(judge.run_dir),
        "frechet_distance": frechet_distance(judge_features(judge, samples), real),
        "frechet_floor": frechet_distance(other, real),
        "frechet_n": n,
        "nfe_sample": nfe,
    }
    if run.classes:
        if tuple(judge.classes) != tuple(run.classes):
            raise ValueError(
                f"--judge {judge.run_dir} tells the classes {judge.classes[:10]}, the run's are "
                f"{run.classes[:10]}: train the judge on the run's data"
            )
        x, y = sample_per_label(run, n, seed=seed, scale=scale, **(sampling or {}))
        model: Any = judge.model
        predicted = map_chunks(lambda b: model.logits(judge.to_model_space(b)[0]).argmax(1), x)
        hits = predicted.cpu() == y
        per_label = torch.stack([hits[y == k].double().mean() for k in range(len(run.classes))])
        out.update(judge_accuracy=float(per_label.mean()), judge_scale=scale)
    return out
