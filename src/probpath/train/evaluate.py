"""Evaluating a model that is not being trained: held-out scores and function counts."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["count_nfe", "default_evaluate"]


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


def default_evaluate(
    model: nn.Module, data: Tensor, labels: Tensor | None = None, chunk: int = 2048
) -> dict[str, float]:
    """Held-out negative log-likelihood in nats, ``-mean(model.log_prob(x))``.

    Runs under ``torch.no_grad()``: an ODE likelihood keeps no graph across its solve (whose
    step count an untrained diffusion model can push into the thousands). A conditional
    model's ``log_prob`` is its unconditional (null-label) likelihood, so ``labels`` are not
    used. A model without ``log_prob`` (a classifier) is scored by its held-out training
    loss with ``labels`` and a fixed noise seed (``loss``), and by ``model.accuracy(x, y)``
    where it has one (``accuracy``).
    """
    p = next(model.parameters())
    m: Any = model
    sums: dict[str, float] = {}

    def add(key: str, value: float) -> None:
        sums[key] = sums.get(key, 0.0) + value

    gen = torch.Generator(device=p.device).manual_seed(0)
    ys = [None] * len(data.split(chunk)) if labels is None else labels.split(chunk)
    with torch.no_grad():
        for xb, yb in zip(data.split(chunk), ys, strict=True):
            xb = xb.to(device=p.device, dtype=p.dtype)
            if hasattr(m, "log_prob"):
                add("nll", -float(m.log_prob(xb).sum()))
                continue
            kw = {} if yb is None else {"y": yb.to(p.device)}
            add("loss", float(m.loss(xb, generator=gen, **kw)[0]) * len(xb))
            if yb is not None and hasattr(m, "accuracy"):
                add("accuracy", m.accuracy(xb, kw["y"]) * len(xb))
    return {k: v / len(data) for k, v in sums.items()}
