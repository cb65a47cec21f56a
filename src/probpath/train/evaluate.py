"""Evaluating a model that is not being trained: held-out scores and function counts.

Every likelihood here runs in chunks of rows under ``torch.no_grad()``, so its memory is
bounded by the chunk and independent of the number of solver steps."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from ._loop import accepts

__all__ = ["count_nfe", "default_evaluate", "map_chunks"]


@contextmanager
def count_nfe(model: nn.Module) -> Iterator[dict[str, int]]:
    """Counts forward calls of each parametrised child module; ``nfe`` is the largest
    (for a flow, the calls of its vector-field network: the function evaluations).

    Example:
        >>> net = nn.Sequential(nn.Linear(2, 2))
        >>> with count_nfe(net) as c:
        ...     _ = net(torch.zeros(1, 2)), net(torch.zeros(1, 2))
        >>> c["nfe"]
        2
    """
    counts: dict[str, int] = {"nfe": 0}
    handles = []
    for name, child in model.named_children():
        if any(True for _ in child.parameters()):

            def hook(*_: Any, name: str = name) -> None:
                counts[name] = counts.get(name, 0) + 1
                counts["nfe"] = max(counts["nfe"], counts[name])

            handles.append(child.register_forward_pre_hook(hook))
    try:
        yield counts
    finally:
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


def default_evaluate(
    model: nn.Module,
    data: Tensor,
    labels: Tensor | None = None,
    chunk: int = 2048,
    *,
    fast: bool = False,
    log_det: float = 0.0,
    progress: bool = False,
) -> dict[str, float]:
    """Held-out negative log-likelihood in nats, ``nll = -mean(model.log_prob(x)) - log_det``.

    ``log_det`` is log|det dz/dx| of the map from the data to the model's space (e.g. a
    standardisation), so that the NLL is that of the data space. Runs in chunks under
    ``torch.no_grad()`` (:func:`map_chunks`): an ODE likelihood keeps no graph across
    its solve (whose step count an untrained diffusion model can push into the thousands).
    ``fast=True`` (the trainer's periodic evaluation) asks a model whose ``log_prob`` takes
    a ``fast`` keyword for its cheaper setting (e.g. the training tolerance of a CNF);
    ``progress`` shows a bar. A conditional model's ``log_prob`` is its unconditional
    (null-label) likelihood, so ``labels`` are not used. A model without ``log_prob`` (a
    classifier) is scored by its held-out training loss with ``labels`` and a fixed noise
    seed (``loss``), and by ``model.accuracy(x, y)`` where it has one (``accuracy``).
    """
    p = next(model.parameters())
    m: Any = model
    if hasattr(m, "log_prob"):
        kwargs = {"fast": True} if fast and accepts(m.log_prob, "fast") else {}
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
