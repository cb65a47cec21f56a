r"""Divergence (trace of the Jacobian) of a batch-wise vector field.

The instantaneous change of variables of a continuous normalizing flow needs

.. math:: \operatorname{div} f(x) = \operatorname{tr}\frac{\partial f}{\partial x}
          = \sum_i \frac{\partial f_i}{\partial x_i},

for every element of a batch. Two ways are offered:

* :func:`exact_divergence` -- ``d`` vector-Jacobian products (one per coordinate), cost
  :math:`O(d)` backward passes;
* :func:`hutchinson_divergence` -- Hutchinson's unbiased estimator
  :math:`\operatorname{tr} A = \mathbb{E}_\varepsilon[\varepsilon^\top A \varepsilon]` for any
  probe with :math:`\mathbb{E}\varepsilon = 0` and :math:`\operatorname{cov}\varepsilon = I`,
  one backward pass; probes come from :func:`sample_probe`.

Both evaluate ``fn`` once and return ``(fn(x), div)``, accept ``x`` with or without
``requires_grad``, enable gradients locally (so they work under ``torch.no_grad()``), and
with ``create_graph=True`` keep the graph so a loss on the divergence can be
back-propagated (maximum-likelihood training of a CNF).

``fn`` must act batch-wise: output row ``b`` depends only on input row ``b`` (no batch
norm, no attention across the batch), otherwise the per-element divergence is not defined
by these formulas. States may have any shape ``(batch, ...)``; the divergence has shape
``(batch,)``.

Sources: lecture notes (``seeds``), "Hutchinson's trace estimator"; Hutchinson (1989),
*A stochastic estimator of the trace of the influence matrix*; Grathwohl et al. (2018),
*FFJORD*, Sec. 3.1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

__all__ = ["exact_divergence", "hutchinson_divergence", "sample_probe"]

ProbeKind = Literal["rademacher", "gaussian"]


def _prepare(x: Tensor) -> Tensor:
    """Return ``x`` as a tensor that requires grad (detached leaf if it did not already)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"x must be a torch.Tensor of shape (batch, ...), got {type(x).__name__}.")
    if x.dim() < 1:
        raise ValueError("x must have a leading batch dimension, shape (batch, ...); got a scalar.")
    if not (x.is_floating_point() or x.is_complex()):
        raise TypeError(f"x must be a floating-point tensor to differentiate, got {x.dtype}.")
    if x.requires_grad and torch.is_grad_enabled():
        return x
    return x.detach().requires_grad_(True)


def _check_out(out: Tensor, x: Tensor) -> None:
    if not isinstance(out, Tensor) or out.shape != x.shape:
        shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
        raise ValueError(
            f"fn(x) must return a tensor of the same shape as x {tuple(x.shape)}, got {shape}; "
            "the divergence is the trace of a square Jacobian."
        )
    if not out.requires_grad:
        raise ValueError(
            "fn(x) does not depend on x through autograd (output has no grad_fn); "
            "avoid .detach(), .item() or numpy inside fn."
        )


def exact_divergence(
    fn: Callable[[Tensor], Tensor], x: Tensor, *, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    r"""Evaluate ``fn(x)`` and its exact divergence :math:`\sum_i \partial f_i / \partial x_i`.

    Uses one vector-Jacobian product per coordinate, :math:`e_i^\top J` summed over the batch
    (valid because ``fn`` acts batch-wise: each output row depends only on its input row),
    so the cost is ``d = x[0].numel()`` backward passes through one forward evaluation.
    Measured on 2 CPU threads (MLP, batch 1024) this loop is as fast as or faster than one
    batched VJP (``is_grads_batched``) or ``torch.func.vmap(jacrev)`` at d = 2 and d = 64, and
    it needs no vmap support from ``fn``. Use :func:`hutchinson_divergence` for large ``d``.

    Args:
        fn: batch-wise map ``(batch, ...) -> (batch, ...)`` of the same shape.
        x: state of shape ``(batch, ...)``; need not require grad.
        create_graph: keep the graph of the divergence for a backward pass through it.

    Returns:
        ``(fn(x), div)`` with ``div`` of shape ``(batch,)``. Under ``torch.no_grad()`` both
        are detached; ``div`` carries a graph only when ``create_graph=True``.

    Example:
        >>> A = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
        >>> out, div = exact_divergence(lambda x: x @ A.T, torch.randn(5, 2))
        >>> div
        tensor([5., 5., 5., 5., 5.])
    """
    grad_enabled = torch.is_grad_enabled()
    with torch.enable_grad():
        xg = _prepare(x)
        out = fn(xg)
        _check_out(out, xg)
        flat = out.reshape(out.shape[0], -1)
        d = flat.shape[1]
        div = torch.zeros(out.shape[0], dtype=out.dtype, device=out.device)
        for i in range(d):
            (g,) = torch.autograd.grad(
                flat[:, i].sum(), xg, retain_graph=True, create_graph=create_graph
            )
            div = div + g.reshape(g.shape[0], -1)[:, i]
    if not grad_enabled:
        return out.detach(), div.detach()
    return out, div


def hutchinson_divergence(
    fn: Callable[[Tensor], Tensor], x: Tensor, probe: Tensor, *, create_graph: bool = False
) -> tuple[Tensor, Tensor]:
    r"""Evaluate ``fn(x)`` and Hutchinson's estimate :math:`\varepsilon^\top J \varepsilon`.

    If :math:`\mathbb{E}\varepsilon = 0` and :math:`\operatorname{cov}\varepsilon = I` then
    :math:`\mathbb{E}[\varepsilon^\top J\varepsilon] = \operatorname{tr}(J\,\mathbb{E}
    [\varepsilon\varepsilon^\top]) = \operatorname{tr} J` (lecture notes, "Hutchinson's trace
    estimator"; FFJORD eq. 7). One vector-Jacobian product :math:`\varepsilon^\top J`,
    whatever the dimension. Keep the same probe for a whole ODE solve (FFJORD does) so the
    integrand is a smooth function of time.

    Args:
        fn: batch-wise map ``(batch, ...) -> (batch, ...)`` of the same shape.
        x: state of shape ``(batch, ...)``; need not require grad.
        probe: tensor shaped like ``x``, e.g. from :func:`sample_probe`.
        create_graph: keep the graph of the estimate for a backward pass through it.

    Returns:
        ``(fn(x), estimate)`` with ``estimate`` of shape ``(batch,)``.

    Example:
        >>> x = torch.randn(4, 3)
        >>> out, est = hutchinson_divergence(lambda x: 2.0 * x, x, sample_probe(x))
        >>> est  # Rademacher probes make this exact for a diagonal Jacobian: 2 * 3
        tensor([6., 6., 6., 6.])
    """
    if not isinstance(probe, Tensor) or probe.shape != x.shape:
        shape = tuple(probe.shape) if isinstance(probe, Tensor) else type(probe).__name__
        raise ValueError(f"probe must have the shape of x {tuple(x.shape)}, got {shape}.")
    grad_enabled = torch.is_grad_enabled()
    with torch.enable_grad():
        xg = _prepare(x)
        out = fn(xg)
        _check_out(out, xg)
        (vjp,) = torch.autograd.grad(out, xg, probe, create_graph=create_graph)
        est = (vjp * probe).reshape(x.shape[0], -1).sum(1)
    if not grad_enabled:
        return out.detach(), est.detach()
    return out, est


def sample_probe(
    x: Tensor, kind: ProbeKind = "rademacher", *, generator: torch.Generator | None = None
) -> Tensor:
    r"""Draw a probe shaped like ``x`` with zero mean and identity covariance.

    ``"rademacher"``: entries :math:`\pm 1` with probability 1/2; ``"gaussian"``: standard
    normal entries. For a fixed matrix :math:`A` with symmetric part
    :math:`S = (A + A^\top)/2` (note :math:`\varepsilon^\top A\varepsilon =
    \varepsilon^\top S\varepsilon`) the estimator has variance

    * Rademacher: :math:`2\sum_{i\ne j} S_{ij}^2` (the diagonal contributes nothing),
    * Gaussian: :math:`2\|S\|_F^2 = 2\sum_{i, j} S_{ij}^2`,

    i.e. :math:`2\sum_{i\ne j} A_{ij}^2` against :math:`2\|A\|_F^2` for symmetric
    :math:`A`: Rademacher never has more variance (Hutchinson 1989; Avron & Toledo 2011).

    Args:
        x: tensor whose shape, dtype and device the probe copies.
        kind: ``"rademacher"`` (default, lower variance) or ``"gaussian"``.
        generator: optional ``torch.Generator`` for reproducible probes.

    Example:
        >>> eps = sample_probe(torch.zeros(2, 3), generator=torch.Generator().manual_seed(0))
        >>> eps.abs()
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
    """
    if kind == "gaussian":
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    if kind == "rademacher":
        probe = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        return probe.bernoulli_(0.5, generator=generator).mul_(2.0).sub_(1.0)
    raise ValueError(f"kind must be 'rademacher' or 'gaussian', got {kind!r}.")
