"""Headless PNG plots: samples beside data, densities, trajectories, training curves, images.

Every function builds a ``matplotlib.figure.Figure`` rendered by the Agg canvas (no
pyplot, no window, no global figure state), writes a PNG of exactly
``figsize * dpi`` pixels to ``path`` (parent folders created) and returns the path.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

__all__ = [
    "plot_density",
    "plot_image_grid",
    "plot_samples",
    "plot_training_curves",
    "plot_trajectories",
]

Bounds = tuple[float, float, float, float]


def _figure(figsize: tuple[float, float], dpi: int) -> Figure:
    fig = Figure(figsize=figsize, dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    return path


def _points(x: Tensor | np.ndarray, name: str) -> np.ndarray:
    a = x.detach().cpu().double().numpy() if isinstance(x, Tensor) else np.asarray(x, float)
    if a.ndim != 2 or a.shape[1] != 2:
        raise ValueError(f"{name} must have shape (n, 2), got {a.shape}")
    return a


def plot_samples(
    samples: Tensor | np.ndarray,
    data: Tensor | np.ndarray,
    path: str | Path,
    *,
    labels: Tensor | np.ndarray | None = None,
    data_labels: Tensor | np.ndarray | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (8.0, 4.0),
    dpi: int = 100,
) -> Path:
    """Two scatter panels sharing axes: data (left) and model samples (right), both (n, 2);
    with ``data_labels`` / ``labels`` (integer classes, one per point) each class in its
    own colour (``tab10``, cycling), the same in both panels.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "s.png")
    >>> plot_samples(torch.randn(50, 2), torch.randn(50, 2), p).stat().st_size > 0
    True
    >>> y = torch.arange(50) % 3
    >>> plot_samples(torch.randn(50, 2), torch.randn(50, 2), p, labels=y, data_labels=y).exists()
    True
    """
    s, d = _points(samples, "samples"), _points(data, "data")
    fig = _figure(figsize, dpi)
    axes = fig.subplots(1, 2, sharex=True, sharey=True)
    panels = ((d, data_labels, "data"), (s, labels, "samples"))
    for ax, (pts, cls, name) in zip(axes, panels, strict=True):
        colour: dict[str, Any] = {}
        if cls is not None:
            k = np.asarray(cls.cpu() if isinstance(cls, Tensor) else cls).astype(int)
            if k.shape != (len(pts),):
                raise ValueError(f"{name} labels must have shape ({len(pts)},), got {k.shape}")
            colour = {"c": k % 10, "cmap": "tab10", "vmin": 0, "vmax": 9}
        ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.5, linewidths=0, **colour)
        ax.set_title(f"{name} (n={len(pts)})")
        ax.set_aspect("equal", adjustable="box")
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def plot_density(
    log_prob_fn: Callable[[Tensor], Tensor],
    bounds: Bounds,
    path: str | Path,
    *,
    resolution: int = 200,
    batch_size: int = 8192,
    log_scale: bool = False,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    figsize: tuple[float, float] = (5.0, 5.0),
    dpi: int = 100,
) -> Path:
    """Heat map of exp(log_prob_fn(x)) (or of log p with ``log_scale``) on a
    ``resolution`` x ``resolution`` grid over ``bounds = (xmin, xmax, ymin, ymax)``,
    evaluated in batches of ``batch_size`` points (on ``device``, in ``dtype``) under
    ``torch.no_grad()``.

    >>> import tempfile, os
    >>> lp = lambda x: -0.5 * x.pow(2).sum(-1)
    >>> p = os.path.join(tempfile.mkdtemp(), "d.png")
    >>> plot_density(lp, (-3, 3, -3, 3), p, resolution=20).suffix
    '.png'
    """
    x0, x1, y0, y1 = (float(b) for b in bounds)
    if not (x0 < x1 and y0 < y1) or resolution < 2:
        raise ValueError(
            f"need xmin < xmax, ymin < ymax and resolution >= 2: {bounds}, {resolution}"
        )
    xs = torch.linspace(x0, x1, resolution, dtype=dtype, device=device)
    ys = torch.linspace(y0, y1, resolution, dtype=dtype, device=device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1).reshape(-1, 2)
    with torch.no_grad():
        lp = torch.cat([log_prob_fn(b).reshape(-1).double().cpu() for b in grid.split(batch_size)])
    z = lp.reshape(resolution, resolution).numpy()
    fig = _figure(figsize, dpi)
    ax = fig.subplots()
    ax.imshow(
        z if log_scale else np.exp(z), origin="lower", extent=(x0, x1, y0, y1), cmap="viridis"
    )
    ax.set_title("log density" if log_scale else "density")
    return _save(fig, path)


def plot_trajectories(
    trajectories: Tensor | np.ndarray,
    path: str | Path,
    *,
    max_paths: int = 200,
    figsize: tuple[float, float] = (5.0, 5.0),
    dpi: int = 100,
) -> Path:
    """Paths from base to data: ``trajectories`` of shape (T, n, 2) in integration order;
    start points in grey, end points in colour, at most ``max_paths`` lines.

    >>> import tempfile, os
    >>> plot_trajectories(torch.randn(5, 10, 2), os.path.join(tempfile.mkdtemp(), "t.png")).name
    't.png'
    """
    a = trajectories.detach().cpu().double().numpy() if isinstance(trajectories, Tensor) else None
    a = np.asarray(trajectories, float) if a is None else a
    if a.ndim != 3 or a.shape[2] != 2 or a.shape[0] < 2:
        raise ValueError(f"trajectories must have shape (T >= 2, n, 2), got {a.shape}")
    fig = _figure(figsize, dpi)
    ax = fig.subplots()
    k = min(max_paths, a.shape[1])
    ax.plot(a[:, :k, 0], a[:, :k, 1], color="olive", alpha=0.3, linewidth=0.6)
    ax.scatter(a[0, :, 0], a[0, :, 1], s=3, c="grey", label="start", linewidths=0)
    ax.scatter(a[-1, :, 0], a[-1, :, 1], s=3, c="tab:blue", label="end", linewidths=0)
    ax.legend(loc="upper right")
    ax.set_aspect("equal", adjustable="datalim")
    return _save(fig, path)


def _read_jsonl(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    series: dict[str, tuple[list[float], list[float]]] = {}
    for i, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: line {i} is not JSON ({e.msg})") from None
        if not isinstance(rec, dict) or "step" not in rec:
            raise ValueError(f"{path}: line {i} must be a JSON object with a 'step' key")
        for key, val in rec.items():
            if key != "step" and isinstance(val, (int, float)) and not isinstance(val, bool):
                steps, vals = series.setdefault(key, ([], []))
                steps.append(float(rec["step"]))
                vals.append(float(val))
    return series


def plot_training_curves(
    metrics_path: str | Path,
    path: str | Path,
    *,
    keys: Sequence[str] | None = None,
    dpi: int = 100,
    panel_size: tuple[float, float] = (4.0, 3.0),
) -> Path:
    """Each numeric metric logged in a ``metrics.jsonl`` file (one JSON object per line
    with a ``step``) against step, one panel each (``loss`` first), log-scale y when all
    values are positive. The figure is ``ncols * panel_size`` wide (at most 3 columns).

    >>> import tempfile, os
    >>> d = tempfile.mkdtemp(); m = os.path.join(d, "metrics.jsonl")
    >>> _ = open(m, "w").write('{"step": 1, "loss": 2.0}\\n{"step": 2, "loss": 1.0}\\n')
    >>> plot_training_curves(m, os.path.join(d, "c.png")).exists()
    True
    """
    series = _read_jsonl(Path(metrics_path))
    names = list(keys) if keys is not None else sorted(series, key=lambda k: (k != "loss", k))
    missing = [k for k in names if k not in series]
    if missing or not names:
        raise ValueError(
            f"{metrics_path}: no numeric series {missing or ''}; found {sorted(series)}"
        )
    ncols = min(3, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = _figure((panel_size[0] * ncols, panel_size[1] * nrows), dpi)
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    for ax, key in zip(axes, names, strict=False):
        steps, vals = series[key]
        ax.plot(steps, vals, linewidth=1)
        if all(v > 0 for v in vals):
            ax.set_yscale("log")
        ax.set_title(key)
        ax.set_xlabel("step")
    for ax in axes[len(names) :]:
        ax.set_visible(False)
    fig.tight_layout()
    return _save(fig, path)


def plot_image_grid(
    images: Tensor | np.ndarray,
    path: str | Path,
    *,
    nrow: int | None = None,
    image_shape: tuple[int, int] | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
    title: str | None = None,
    figsize: tuple[float, float] = (5.0, 5.0),
    dpi: int = 100,
) -> Path:
    """A grid of images: grey (n, H, W), (n, 1, H, W), or flat (n, H*W) with
    ``image_shape=(H, W)`` (e.g. 8 x 8 digits); colour (n, 3, H, W). ``nrow`` images per
    row (default ceil(sqrt n)); values from ``vmin`` (black) to ``vmax`` (white), by
    default the images' range. NaN pixels (e.g. an all-NaN spacer image) stay blank.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "g.png")
    >>> plot_image_grid(torch.rand(6, 64), p, image_shape=(8, 8)).exists()
    True
    >>> plot_image_grid(torch.randint(0, 256, (4, 3, 5, 5)), p, vmin=0, vmax=255).exists()
    True
    """
    a = images.detach().cpu().double().numpy() if isinstance(images, Tensor) else None
    a = np.asarray(images, float) if a is None else a
    if image_shape is not None:
        a = a.reshape(a.shape[0], *image_shape)
    if a.ndim == 4 and a.shape[1] in (1, 3):
        a = a.transpose(0, 2, 3, 1)  # channels last; grey keeps a channel of 1
    elif a.ndim == 3:
        a = a[..., None]
    if a.ndim != 4 or a.shape[0] == 0 or a.shape[3] not in (1, 3):
        raise ValueError(
            "images must be (n, H, W), (n, 1, H, W), (n, 3, H, W) or flat with "
            f"image_shape: {a.shape}"
        )
    n, h, w, c = a.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    canvas = np.full((rows * (h + 1) - 1, cols * (w + 1) - 1, c), np.nan)
    for i in range(n):
        r, col = divmod(i, cols)
        canvas[r * (h + 1) : r * (h + 1) + h, col * (w + 1) : col * (w + 1) + w] = a[i]
    fig = _figure(figsize, dpi)
    ax = fig.add_axes((0.0, 0.0, 1.0, 0.93 if title else 1.0))
    if c == 1:
        ax.imshow(canvas[..., 0], cmap="gray", vmin=vmin, vmax=vmax, interpolation="nearest")
    else:  # RGB in [0, 1]; blank (NaN) pixels white
        lo = np.nanmin(a) if vmin is None else vmin
        hi = np.nanmax(a) if vmax is None else vmax
        rgb = np.clip((canvas - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
        ax.imshow(np.nan_to_num(rgb, nan=1.0), interpolation="nearest")
    ax.set_axis_off()
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
