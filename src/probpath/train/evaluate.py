"""Evaluating a model that is not being trained: held-out scores and function counts.

Every likelihood here runs in chunks of rows under ``torch.no_grad()``, so its memory is
bounded by the chunk and independent of the number of solver steps."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ..metrics import bits_per_dim
from ._loop import accepts
from .space import ModelSpace

__all__ = [
    "count_nfe",
    "default_evaluate",
    "dequantized_nll",
    "has_likelihood",
    "map_chunks",
]


@contextmanager
def count_nfe(
    model: nn.Module, *, progress: bool = False, desc: str | None = None
) -> Iterator[dict[str, int]]:
    """Counts forward calls of each parametrised child module; ``nfe`` is the largest
    (for a flow, the calls of its vector-field network: the function evaluations).
    ``progress`` shows a bar of the evaluations as they happen (a sampler's or a solver's
    steps, whatever their number).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> with count_nfe(net) as c:
        ...     _ = net(torch.zeros(1, 2)), net(torch.zeros(1, 2))
        >>> c["nfe"]
        2
    """
    counts: dict[str, int] = {"nfe": 0}
    handles = []
    bar = tqdm(disable=not progress, desc=desc, unit=" evals", leave=False)
    for name, child in model.named_children():
        if any(True for _ in child.parameters()):

            def hook(*_: Any, name: str = name) -> None:
                counts[name] = counts.get(name, 0) + 1
                if counts[name] > counts["nfe"]:
                    counts["nfe"] = counts[name]
                    bar.update(1)

            handles.append(child.register_forward_pre_hook(hook))
    try:
        yield counts
    finally:
        bar.close()
        for h in handles:
            h.remove()


def map_chunks(
    fn: Callable[[Tensor], Tensor],
    x: Tensor,
    *,
    chunk: int = 2048,
    progress: bool = False,
    desc: str | None = None,
    device: torch.device | None = None,
) -> Tensor:
    """``fn`` (rows → one value per row) over ``x`` in chunks of ``chunk`` rows, under
    ``torch.no_grad()``, concatenated. With ``device`` (the model's), each chunk moves
    there and its values back to ``x``'s device.

    The memory of a likelihood that is not trained on is then that of one chunk's
    function evaluation, whatever the number of solver steps: an ODE likelihood computes
    its divergence with gradients enabled locally, per evaluation, and keeps no graph
    across the solve (:mod:`probpath.divergence`). ``progress`` shows a bar over the rows.

    Example:
        >>> map_chunks(lambda b: -0.5 * b.pow(2).sum(-1), torch.ones(5, 2), chunk=2)
        tensor([-1., -1., -1., -1., -1.])
    """
    if chunk < 1:
        raise ValueError(f"chunk must be a positive number of rows, got {chunk}")
    out = []
    with torch.no_grad(), tqdm(total=len(x), disable=not progress, desc=desc, leave=False) as bar:
        for xb in x.split(chunk):
            out.append(fn(xb if device is None else xb.to(device)).to(x.device))
            bar.update(len(xb))
    return torch.cat(out)


def has_likelihood(model: Any) -> bool:
    """Whether ``model.log_prob`` can be evaluated: the model has one and, if it is
    normalised by quadrature on a grid (an EBM), the grid exists (2-D data only).

    Example:
        >>> from probpath.models import EBM
        >>> has_likelihood(EBM(dim=2)), has_likelihood(EBM(dim=3)), has_likelihood(nn.Linear(2, 2))
        (True, False, False)
    """
    if not hasattr(model, "log_prob"):
        return False
    try:
        getattr(model, "grid", lambda: None)()
    except ValueError:  # no quadrature grid in this dimension: no normaliser
        return False
    return True


def default_evaluate(
    model: nn.Module,
    data: Tensor,
    labels: Tensor | None = None,
    chunk: int = 2048,
    *,
    fast: bool = False,
    log_det: float = 0.0,
    progress: bool = False,
    space: ModelSpace | None = None,
) -> dict[str, float]:
    """Held-out negative log-likelihood in nats, ``nll = -mean(model.log_prob(x)) - log_det``.

    ``log_det`` is log|det dz/dx| of the map from the data to the model's space (e.g. a
    standardisation), so that the NLL is that of the data space. Runs in chunks under
    ``torch.no_grad()`` (:func:`map_chunks`): an ODE likelihood keeps no graph across
    its solve (whose step count an untrained diffusion model can push into the thousands).
    ``fast=True`` (the trainer's periodic evaluation) asks a model whose ``log_prob`` takes
    a ``fast`` keyword for its cheaper setting (e.g. the training tolerance of a CNF);
    ``progress`` shows a bar. A conditional model's ``log_prob`` is its unconditional
    (null-label) likelihood, so ``labels`` are not used. A model without a likelihood (a
    classifier; an EBM beyond 2-D, :func:`has_likelihood`) is scored by its held-out
    training loss with ``labels`` and a fixed noise seed (``loss``), and by
    ``model.accuracy(x, y)`` where it has one (``accuracy``).

    ``space`` is the model space of discrete ``data`` (integer levels,
    :class:`.space.ModelSpace`): the NLL is then the dequantized bound on -log P(x) (one
    draw per row from a generator seeded by 0), reported with its ``bits_per_dim``, and a
    classifier sees the centres of the cubes.
    """
    p = next(model.parameters())
    m: Any = model
    kwargs: dict[str, Any] = {}
    if fast and accepts(getattr(m, "log_prob", None), "fast"):
        kwargs["fast"] = True
    likelihood = has_likelihood(m)
    if space is not None and space.dequantizer is not None:
        if likelihood:
            nll = dequantized_nll(m, data, space, chunk=chunk, progress=progress, **kwargs)
            mean = float(nll.double().mean())
            return {"nll": mean, "bits_per_dim": float(bits_per_dim(mean, data[0].numel()))}
        data = space.forward(data, dtype=p.dtype)[0]
    if likelihood:
        x = data.to(device=p.device, dtype=p.dtype)
        lp = map_chunks(
            lambda b: m.log_prob(b, **kwargs), x, chunk=chunk, progress=progress, desc="eval"
        )
        return {"nll": -float(lp.double().mean()) - log_det}
    sums: dict[str, float] = {}
    gen = torch.Generator(device=p.device).manual_seed(0)
    ys = [None] * len(data.split(chunk)) if labels is None else labels.split(chunk)
    with torch.no_grad():
        for xb, yb in zip(data.split(chunk), ys, strict=True):
            xb = xb.to(device=p.device, dtype=p.dtype)
            kw = {} if yb is None else {"y": yb.to(p.device)}
            sums["loss"] = sums.get("loss", 0.0) + float(m.loss(xb, generator=gen, **kw)[0]) * len(
                xb
            )
            if yb is not None and hasattr(m, "accuracy"):
                sums["accuracy"] = sums.get("accuracy", 0.0) + m.accuracy(xb, kw["y"]) * len(xb)
    return {k: v / len(data) for k, v in sums.items()}


def dequantized_nll(
    model: nn.Module,
    x: Tensor,
    space: ModelSpace,
    *,
    k: int = 1,
    seed: int = 0,
    chunk: int = 2048,
    progress: bool = False,
    desc: str | None = None,
    **kwargs: Any,
) -> Tensor:
    """The dequantized bound on -log P(x) of discrete data ``x`` (integer levels) in nats
    per example, shape (n,), under ``model.log_prob(z, **kwargs)``: ``space.nll`` with
    ``k`` draws per example from a generator seeded by ``seed``, ``chunk // k`` examples
    at a time (:func:`map_chunks`). A ``log_prob`` that draws (Hutchinson's probes) takes
    the same generator unless ``kwargs`` give one: the bound is a function of ``seed``."""
    p = next(model.parameters())
    gen = torch.Generator(device=p.device).manual_seed(seed)
    fn = getattr(model, "log_prob")  # noqa: B009
    seeded = {"generator": gen} if accepts(fn, "generator") else {}
    log_prob = functools.partial(fn, **{**seeded, **kwargs})

    def nll(b: Tensor) -> Tensor:
        return space.nll(log_prob, b.to(p.device), k=k, generator=gen, dtype=p.dtype)

    return map_chunks(nll, x, chunk=max(1, chunk // k), progress=progress, desc=desc)
