r"""Langevin dynamics: unadjusted (ULA), Metropolis-adjusted (MALA) and annealed (NCSN).

The Langevin SDE :math:`dx = \tfrac12\nabla_x\log p(x)\,dt + dw` leaves :math:`p` invariant
(lecture notes, "Langevin SDE", by the Kolmogorov-Fokker-Planck equation); its
Euler-Maruyama discretisation with step :math:`\eta \approx dt` is the seeds' sampler

.. math:: x_{k+1} = x_k + \tfrac{\eta}{2}\nabla_x\log p(x_k) + \sqrt{\eta}\,\varepsilon_k,
          \qquad \varepsilon_k \sim \mathcal N(0, I).

Only the score is needed, so :math:`p` may be unnormalised (an energy-based model).

``ts`` holds the model's conditioning value at every step: the score is evaluated as
``model(x, ts[k].expand(batch))``. For a fixed target pass a constant grid, e.g.
``torch.zeros(n_steps)`` (the data end of the clock); a predictor-corrector sampler runs
``langevin(model, x, t.repeat(k), ...)`` as its corrector at time ``t``; annealed Langevin
walks down a grid of noise levels.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from probpath.samplers._common import (
    Callback,
    Model,
    as_grid,
    call_model,
    check_state,
    per_step,
    sqnorm,
    ula_step,
)

__all__ = ["annealed_langevin", "langevin", "mala"]


def langevin(
    model: Model,
    x: Tensor,
    ts: Tensor,
    *,
    step_size: float | Tensor,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    r"""Unadjusted Langevin algorithm,
    :math:`x_{k+1} = x_k + \tfrac{\eta_k}{2} s(x_k, t_k) + \sqrt{\eta_k}\,\varepsilon_k`.

    Lecture notes, "Langevin dynamic". One step per entry of ``ts``. The chain's stationary
    law is :math:`p` only as :math:`\eta \to 0`: the bias is :math:`O(\eta)`; e.g. for
    :math:`\mathcal N(0, s^2)` the stationary variance is :math:`s^2 / (1 - \eta / (4 s^2))`.
    Use :func:`mala` to remove it when :math:`\log p` is known.

    Args:
        model: score ``model(x, t)`` :math:`\approx \nabla_x\log p_t(x)`, shaped like ``x``.
        x: initial states, shape ``(batch, ...)`` (independent chains).
        ts: conditioning value of the score at each step, shape ``(n_steps,)``.
        step_size: :math:`\eta`, a number or one per step, shape ``(n_steps,)``.
        generator: ``torch.Generator`` for the noise.
        callback: ``callback(k, x_{k+1})`` after step ``k = 0 .. n_steps - 1``.

    Returns:
        ``(samples, nfe)``, ``nfe = n_steps``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, nfe = langevin(lambda x, t: -x, torch.zeros(5000, 1), torch.zeros(200),
        ...                   step_size=0.1, generator=g)
        >>> nfe, round(x.var().item(), 1)  # N(0, 1); ULA variance 1 / (1 - 0.1/4) = 1.03
        (200, 1.0)
    """
    check_state(x)
    ts = as_grid(ts, x)
    etas = per_step(step_size, len(ts), x, "step_size")
    for k in range(len(ts)):
        eta = etas[k]
        x = ula_step(x, call_model(model, x, ts[k]), eta, generator)
        if callback is not None:
            callback(k, x)
    return x, len(ts)


def _log_prob_and_score(
    log_prob: Model, x: Tensor, t: Tensor, keep_graph: bool
) -> tuple[Tensor, Tensor]:
    """``log_prob(x, t)`` of shape (batch,) and its gradient in ``x`` by autograd."""
    with torch.enable_grad():
        xg = x if (keep_graph and x.requires_grad) else x.detach().requires_grad_(True)
        lp = log_prob(xg, t.expand(x.shape[0]))
        if not isinstance(lp, Tensor) or lp.shape != (x.shape[0],):
            shape = tuple(lp.shape) if isinstance(lp, Tensor) else type(lp).__name__
            raise ValueError(
                f"log_prob(x, t) must return one log-density per chain, shape ({x.shape[0]},), "
                f"got {shape}."
            )
        (score,) = torch.autograd.grad(lp.sum(), xg, create_graph=keep_graph)
    if not keep_graph:
        return lp.detach(), score
    return lp, score


def mala(
    log_prob: Callable[[Tensor, Tensor], Tensor],
    x: Tensor,
    ts: Tensor,
    *,
    step_size: float | Tensor,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int, Tensor]:
    r"""Metropolis-adjusted Langevin: the Langevin step as a proposal, then accept/reject.

    Proposal :math:`y = x + \tfrac{\eta}{2}\nabla\log p(x) + \sqrt\eta\,\varepsilon`, i.e.
    :math:`q(y\mid x) = \mathcal N(y;\, x + \tfrac\eta2\nabla\log p(x),\, \eta I)`, accepted
    with probability :math:`\min\{1,\ p(y)\,q(x\mid y) / (p(x)\,q(y\mid x))\}`
    (Roberts & Tweedie 1996). :math:`p` is then exactly invariant for any :math:`\eta`;
    only :math:`\log p` up to an additive constant is needed.

    Unlike the score samplers, the model is a log-density ``log_prob(x, t)`` of shape
    ``(batch,)`` (its gradient is taken by autograd) and the acceptance rate is returned too.

    Args:
        log_prob: unnormalised log-density ``log_prob(x, t)``, shape ``(batch,)``.
        x: initial states, shape ``(batch, ...)`` (independent chains).
        ts: conditioning value at each step, shape ``(n_steps,)``.
        step_size: :math:`\eta`, a number or one per step.
        generator: ``torch.Generator`` for proposals and acceptance draws.
        callback: ``callback(k, x_{k+1})`` after step ``k``.

    Returns:
        ``(samples, nfe, acceptance)``: ``nfe`` evaluations of ``log_prob`` with its
        gradient (``n_steps + 1`` for a constant ``ts``; one more wherever ``ts`` changes),
        ``acceptance`` the fraction of accepted proposals per chain,
        shape ``(batch,)``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> x, nfe, acc = mala(lambda x, t: -0.5 * (x**2).sum(1), torch.zeros(2000, 1),
        ...                    torch.zeros(100), step_size=1.0, generator=g)
        >>> nfe, round(x.var().item(), 1), 0.0 < acc.mean().item() < 1.0
        (101, 1.0, True)
    """
    check_state(x)
    ts = as_grid(ts, x)
    etas = per_step(step_size, len(ts), x, "step_size")
    keep_graph = torch.is_grad_enabled()
    lp, score = _log_prob_and_score(log_prob, x, ts[0], keep_graph)
    nfe = 1
    accepted = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
    changed = [False, *(ts[1:] != ts[:-1]).tolist()]  # one host sync, not one per step
    for k in range(len(ts)):
        eta = etas[k]
        if changed[k]:  # the target moved: re-evaluate log p and its score at x
            lp, score = _log_prob_and_score(log_prob, x, ts[k], keep_graph)
            nfe += 1
        y = ula_step(x, score, eta, generator)
        lp_y, score_y = _log_prob_and_score(log_prob, y, ts[k], keep_graph)
        nfe += 1
        log_q_fwd = -sqnorm(y - x - 0.5 * eta * score) / (2 * eta)
        log_q_bwd = -sqnorm(x - y - 0.5 * eta * score_y) / (2 * eta)
        log_ratio = lp_y - lp + log_q_bwd - log_q_fwd
        u = torch.rand(x.shape[0], generator=generator, dtype=x.dtype, device=x.device)
        accept = u.log() < log_ratio
        mask = accept.reshape(-1, *([1] * (x.dim() - 1)))
        x = torch.where(mask, y, x)
        score = torch.where(mask, score_y, score)
        lp = torch.where(accept, lp_y, lp)
        accepted = accepted + accept.to(x.dtype)
        if callback is not None:
            callback(k, x)
    return x, nfe, accepted / len(ts)


def annealed_langevin(
    model: Model,
    x: Tensor,
    ts: Tensor,
    *,
    step_size: float,
    n_steps_per_level: int = 100,
    sigmas: Tensor | None = None,
    denoise: bool = True,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
) -> tuple[Tensor, int]:
    r"""Annealed Langevin dynamics over decreasing noise levels (NCSN).

    Song & Ermon (2019), Algorithm 1: for levels :math:`\sigma_1 > \dots > \sigma_L`, run
    ``n_steps_per_level`` :func:`langevin` steps on :math:`s(x, \sigma_i)` with step
    :math:`\alpha_i = \epsilon\,\sigma_i^2/\sigma_L^2` (``step_size`` is :math:`\epsilon`,
    the step at the last level), so the step keeps a fixed ratio to each level's noise
    variance. With ``denoise`` a final Tweedie step
    :math:`x + \sigma_L^2\, s(x, \sigma_L)` returns the posterior mean
    :math:`\mathbb E[x_0\mid x]`, removing the last level's noise (Jolicoeur-Martineau et
    al. 2021, *Adversarial score matching and improved sampling*, sec. 3).

    Args:
        model: noise-conditional score ``model(x, t)``, ``t`` of shape ``(batch,)``.
        x: initial states, e.g. :math:`\sigma_1\,\mathcal N(0, I)`, shape ``(batch, ...)``.
        ts: the model's conditioning value per level, shape ``(L,)``; for an NCSN network
            conditioned on the noise level these are the :math:`\sigma_i` themselves.
        step_size: :math:`\epsilon`, the step size at the smallest level.
        n_steps_per_level: Langevin steps :math:`K` per level.
        sigmas: noise standard deviation per level, decreasing, shape ``(L,)``; defaults to
            ``ts``. Pass it when the model is conditioned on path time ``t`` rather than on
            :math:`\sigma` (e.g. ``sigmas = schedule(ts).sigma`` of a VE path).
        denoise: finish with the Tweedie denoising step (one more NFE).
        generator: ``torch.Generator`` for the noise.
        callback: ``callback(k, x)`` after each of the ``L * K`` steps (and the denoising
            step, ``k = L * K``).

    Returns:
        ``(samples, nfe)`` with ``nfe = L * K + denoise``.

    Example:
        >>> sigmas = torch.tensor([4.0, 2.0, 1.0, 0.5])  # data N(0, 1): p_sigma = N(0, 1 + s^2)
        >>> x0 = 4.0 * torch.randn(4000, 1, generator=torch.Generator().manual_seed(0))
        >>> x, nfe = annealed_langevin(lambda x, s: -x / (1 + s[:, None] ** 2), x0, sigmas,
        ...                            step_size=0.05, denoise=False,
        ...                            generator=torch.Generator().manual_seed(1))
        >>> nfe, round(x.var().item(), 1)  # the last level's law N(0, 1.25)
        (400, 1.3)
    """
    check_state(x)
    ts = as_grid(ts, x)
    sig = ts if sigmas is None else as_grid(sigmas, x, "sigmas")
    if sig.shape != ts.shape:
        raise ValueError(f"sigmas must have one entry per level of ts, {tuple(ts.shape)}.")
    if not bool((sig > 0).all()) or not bool((sig[1:] < sig[:-1]).all()):
        raise ValueError(
            "noise levels must be positive and strictly decreasing (annealing goes from the "
            f"largest sigma to the smallest), got {sig.tolist()}."
        )
    if not isinstance(n_steps_per_level, int) or n_steps_per_level < 1:
        raise ValueError(f"n_steps_per_level must be a positive int, got {n_steps_per_level!r}.")
    eps = per_step(step_size, 1, x, "step_size")
    alphas = eps * (sig / sig[-1]) ** 2
    grid = ts.repeat_interleave(n_steps_per_level)
    x, nfe = langevin(
        model,
        x,
        grid,
        step_size=alphas.repeat_interleave(n_steps_per_level),
        generator=generator,
        callback=callback,
    )
    if denoise:
        x = x + sig[-1] ** 2 * call_model(model, x, ts[-1])
        nfe += 1
        if callback is not None:
            callback(len(grid), x)
    return x, nfe
