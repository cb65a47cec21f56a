"""A run folder: what was trained on what, and how to get the trained model back.

Layout of ``RUN/``: ``config.json`` (a :class:`~probpath.train.config.RunConfig`, with the
levels K of discrete data), ``metrics.jsonl`` (the training log), ``checkpoints/step_*/``
(see :mod:`.checkpoint`) and the PNGs of ``probpath plot``. The data standardisation, the
data's kind and shape and, for a run on labelled data, the class names (label k is
``classes[k]``) are stored in every checkpoint.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..data import Standardizer
from ..dequantization import Dequantizer
from ..device import resolve_device
from .checkpoint import Checkpoint, load_checkpoint
from .config import RunConfig
from .evaluate import count_nfe, dequantized_nll, map_chunks
from .rows import RunRows, load_rows
from .space import ModelSpace

__all__ = ["LoadedRun", "build_for", "check_weights", "load_run", "run_space"]


def run_space(config: RunConfig, kind: str, standardizer: Standardizer | None) -> ModelSpace:
    """The model space of a run on data of ``kind`` (``RunRows.kind``): continuous rows
    by ``standardizer``; images by the run's ``image_space`` map; integer vectors on their
    integer scale, standardised by ``standardizer`` (if any)."""
    if kind == "continuous":
        return ModelSpace(standardizer=standardizer)
    if config.levels is None:
        raise ValueError(f"a run on {kind} data needs its levels K in its config")
    if kind == "images":
        return ModelSpace(dequantizer=Dequantizer(config.levels, config.image_space))
    std = standardizer
    if std is None:  # the integer scale itself
        d = int(config.model_config["dim"])
        std = Standardizer((0.0,) * d, (1.0,) * d)
    dq = Dequantizer(config.levels, "standardized", standardizer=std)
    return ModelSpace(standardizer=standardizer, dequantizer=dq)


@dataclass(frozen=True)
class LoadedRun:
    """A trained model, its run config, its model space (:class:`.space.ModelSpace`: the
    standardisation of vectors, the dequantizer of discrete data), the checkpoint step and
    folder it came from, the run folder, the class names of labelled data (or ``()``) and
    the data's ``kind`` and one example's ``shape`` (``RunRows.kind``, ``RunRows.shape``).

    Its methods work in data space: :meth:`sample` maps samples back (levels for discrete
    data), :meth:`to_model_space` applies the map (with its log-determinant), :meth:`nll`
    scores data (the dequantized bound for discrete data). The model computes on its own
    :attr:`device`; the data-space methods take rows on any device and return values where
    the run's rows live, on the CPU (:meth:`log_prob` on the rows' device).
    """

    model: nn.Module
    config: RunConfig
    space: ModelSpace
    step: int
    path: Path
    run_dir: Path
    classes: tuple[str, ...] = ()
    kind: str = "continuous"
    shape: tuple[int, ...] | None = None

    @property
    def standardizer(self) -> Standardizer | None:
        """The run's standardisation of vectors (``None``: raw rows, or images)."""
        return self.space.standardizer

    @property
    def dequantizer(self) -> Dequantizer | None:
        """The map of discrete data to model space (``None`` for continuous data)."""
        return self.space.dequantizer

    @property
    def device(self) -> torch.device:
        """Where the model's parameters are (``load_run``'s ``device``)."""
        return next(self.model.parameters()).device

    def rows(self, *, labels: bool = False) -> RunRows:
        """The run's training and held-out rows (data space), as it was trained on them."""
        return load_rows(self.config, labels=labels)

    def to_model_space(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``(z, log|det dz/dx|)`` of data ``x``: standardised rows, or for discrete data
        the centres of their cubes (:meth:`.space.ModelSpace.forward`)."""
        p = next(self.model.parameters())
        return self.space.forward(x, dtype=p.dtype)

    def log_prob(
        self, x: Tensor, *, chunk: int = 2048, progress: bool = False, **kwargs: Any
    ) -> Tensor:
        """log p(x) in nats of the data space of continuous rows, shape (n,):
        ``model.log_prob(z, **kwargs)`` plus log|det dz/dx|, in chunks of ``chunk`` rows
        under ``torch.no_grad()``, so its memory is bounded by the chunk, whatever the
        number of solver steps (:func:`.evaluate.map_chunks`). Discrete data have
        probabilities, not densities: see :meth:`nll`."""
        if self.dequantizer is not None:
            raise ValueError(
                f"{self.run_dir} models discrete data ({self.dequantizer.levels} levels): "
                "score them with nll(), the dequantized bound on -log P(x)"
            )
        model: Any = self.model
        z, log_det = self.to_model_space(x)
        lp = map_chunks(
            lambda b: model.log_prob(b, **kwargs),
            z,
            chunk=chunk,
            progress=progress,
            device=self.device,
        )
        return lp + log_det

    def nll(
        self,
        x: Tensor,
        *,
        k: int = 1,
        seed: int = 0,
        chunk: int = 2048,
        progress: bool = False,
        **kwargs: Any,
    ) -> Tensor:
        """The NLL of data ``x`` in nats per example, shape (n,): -:meth:`log_prob` of
        continuous rows; of discrete data the dequantized bound on -log P(x) with ``k``
        draws per example from a generator seeded by ``seed``
        (:func:`probpath.dequantization.discrete_nll`), ``chunk // k`` examples at a time.
        ``kwargs`` go to ``model.log_prob``."""
        if self.dequantizer is None:
            return -self.log_prob(x, chunk=chunk, progress=progress, **kwargs)
        return dequantized_nll(
            self.model, x, self.space, k=k, seed=seed, chunk=chunk, progress=progress,
            desc="nll", **kwargs,
        )  # fmt: skip

    def sample(
        self, n: int, *, seed: int = 0, model: Any = None, progress: bool = False, **sampling: Any
    ) -> tuple[Tensor, int]:
        """``n`` samples in data space (on the CPU) and the NFE used, from ``model`` (default:
        the run's; e.g. a guided view of it); ``sampling`` (``sampler``, ``steps``, solver
        options) goes to ``model.sample_with_nfe`` where the family samples by name. The
        noise comes from a generator on the model's device seeded with ``seed`` (so a CPU
        and a GPU draw different samples for one seed); ``progress`` shows a bar over the
        network's evaluations."""
        gen = torch.Generator(self.device).manual_seed(seed)
        model = self.model if model is None else model
        with count_nfe(model, progress=progress, desc="sample") as c, torch.no_grad():
            if hasattr(model, "sample_with_nfe"):
                z, nfe = model.sample_with_nfe(n, generator=gen, **sampling)
            else:
                z, nfe = model.sample(n, generator=gen), None
        return self.space.to_data(z.detach().cpu()), c["nfe"] if nfe is None else nfe


def check_weights(model: nn.Module, ck: Checkpoint, config: RunConfig, run_dir: Path) -> None:
    """Refuse a checkpoint whose tensors do not fit the model that ``config.json`` builds.

    The error names the model config keys that differ from those the checkpoint was
    trained with (stored with it as ``extra["model_config"]``; for older runs, the
    mismatched parameters), instead of a size-mismatch traceback.
    """
    expected = model.state_dict()
    names = expected.keys() | ck.model.keys()
    bad = sorted(
        k
        for k in names
        if k not in expected or k not in ck.model or expected[k].shape != ck.model[k].shape
    )
    if bad:
        drift = _config_drift(ck, config)
        what = drift or f"the parameters {', '.join(bad[:5])} differ in shape or presence"
        raise _mismatch(ck, run_dir, what)


def build_for(
    make: Callable[[], nn.Module], ck: Checkpoint, config: RunConfig, run_dir: Path
) -> nn.Module:
    """``make()`` the model of ``config`` for the checkpoint ``ck`` and :func:`check_weights`
    it; a ``config.json`` edited so that it no longer even builds is named the same way."""
    try:
        model = make()
    except (ValueError, TypeError):
        drift = _config_drift(ck, config)
        if drift:
            raise _mismatch(ck, run_dir, drift) from None
        raise
    check_weights(model, ck, config, run_dir)
    return model


def _config_drift(ck: Checkpoint, config: RunConfig) -> str | None:
    """The model config keys of ``config`` that differ from those the checkpoint was trained
    with, as ``key=now (trained with then)``; ``None`` when the checkpoint does not say."""
    trained = ck.meta.get("extra", {}).get("model_config")
    if not isinstance(trained, dict):
        return None
    now = config.model_config
    keys = sorted(k for k in now.keys() | trained.keys() if now.get(k) != trained.get(k))
    return ", ".join(f"{k}={now.get(k)!r} (trained with {trained.get(k)!r})" for k in keys)


def _mismatch(ck: Checkpoint, run_dir: Path, what: str) -> ValueError:
    return ValueError(
        f"{run_dir / 'config.json'} no longer matches the checkpoint {ck.path}: {what}; "
        "restore the model config the run was trained with"
    )


def load_run(
    run_dir: str | os.PathLike[str],
    *,
    ema: bool = True,
    overrides: dict[str, Any] | None = None,
    device: str | torch.device | None = "auto",
) -> LoadedRun:
    """Rebuild a run's model from ``config.json`` and load its newest checkpoint.

    ``ema`` picks the averaged weights when the run kept them; ``overrides`` replaces
    model config keys that do not change the parameters (e.g. the solver or tolerances);
    ``device`` (:func:`probpath.device.resolve_device`: ``auto`` is the GPU when there is
    one) is where the model goes: a checkpoint loads onto any device, whatever it was
    trained on.
    """
    from ..models import build

    cfg = RunConfig.load(run_dir)
    if overrides:
        cfg = replace(cfg, model_config={**cfg.model_config, **overrides})
    ck = load_checkpoint(Path(run_dir) / "checkpoints")
    model = build_for(lambda: build(cfg.model, **cfg.model_config), ck, cfg, Path(run_dir))
    model.load_state_dict(ck.ema if ema and ck.ema is not None else ck.model)
    model.to(resolve_device(device)).eval()
    extra = ck.meta.get("extra", {})
    std = (
        None if extra.get("standardizer") is None else Standardizer.from_dict(extra["standardizer"])
    )
    data = extra.get("data") or {"kind": "continuous", "shape": None}  # older runs: vectors
    return LoadedRun(
        model=model,
        config=cfg,
        space=run_space(cfg, data["kind"], std),
        step=ck.step,
        path=ck.path,
        run_dir=Path(run_dir),
        classes=tuple(extra.get("classes") or ()),
        kind=data["kind"],
        shape=None if data["shape"] is None else tuple(data["shape"]),
    )
