"""Sampling by name (private): a family's registry of typed sampler entries.

A *sampler entry* is a typed function over the family's *sampling view* (a frozen
dataclass of what a sampler may read from the model, e.g.
:class:`~probpath.models.diffusion.PathSampling`) and the starting state:

    run(view, x_T, *, steps=..., <typed options with defaults>, generator=None, callback=None)
        -> (samples, nfe)

registered by name with its NFE-per-step rule as a :class:`SamplerEntry`. A family lists
its entries in ``SAMPLERS``, names a ``default_sampler``, builds its view
(``sampling_view``) and says where chains start (``initial_state``); :class:`SamplerDispatch`
gives it ``samplers``, ``sampler_options``, ``steps_for_nfe``, ``sample_with_nfe`` and
``sample``, which check the options against the entry's signature, and ``trajectories``,
the states of a sampler from its start to its samples.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Concatenate, Generic, TypeVar

import torch
from torch import Tensor

from probpath.models._shape import check_batch

__all__ = ["SamplerDispatch", "SamplerEntry"]

View = TypeVar("View", contravariant=True)

_REQUIRED = ("steps", "generator", "callback")


@dataclass(frozen=True)
class SamplerEntry(Generic[View]):
    """A sampler a family accepts by name.

    ``run(view, x_T, *, steps, ..., generator, callback) -> (samples, nfe)``: every option
    keyword-only, typed and with its default (``steps``' default is the sampler's default
    step count; ``None`` where the sampler picks it); ``nfe_per_step(options)``: the NFE of
    one step given every option of ``run`` with the defaults filled in, or ``None`` for an
    adaptive sampler (no NFE budget can be set); ``nfe_extra(options)``: evaluations outside
    the steps (e.g. a final denoising step). ``options`` maps each keyword of ``run`` but
    ``generator`` to its default.

    Example:
        >>> def run(view, x, *, steps=10, eta=0.0, generator=None, callback=None):
        ...     return x, steps
        >>> SamplerEntry(run, lambda options: 1).options
        {'steps': 10, 'eta': 0.0, 'callback': None}
    """

    run: Callable[Concatenate[View, Tensor, ...], tuple[Tensor, int]]
    nfe_per_step: Callable[[Mapping[str, Any]], int | None]
    nfe_extra: Callable[[Mapping[str, Any]], int] = lambda options: 0
    options: Mapping[str, Any] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        params = list(inspect.signature(self.run).parameters.values())
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        keywords = params[2:]
        if (
            len(params) < 2
            or any(p.kind not in positional for p in params[:2])
            or any(p.kind != p.KEYWORD_ONLY or p.default is p.empty for p in keywords)
            or not set(_REQUIRED) <= {p.name for p in keywords}
        ):
            raise TypeError(
                f"sampler entry {getattr(self.run, '__qualname__', self.run)!r} must have the "
                "signature run(view, x, *, steps=..., <options>=..., generator=None, "
                "callback=None): every option keyword-only with a default, no **kwargs"
            )
        options = {p.name: p.default for p in keywords if p.name != "generator"}
        object.__setattr__(self, "options", options)

    def steps_for_nfe(self, nfe: int, options: Mapping[str, Any]) -> int | None:
        """The most steps (at least 1) that spend at most ``nfe`` evaluations with ``options``
        over the defaults; ``None`` for an adaptive sampler."""
        full = {**self.options, **options}
        per = self.nfe_per_step(full)
        return None if per is None else max(1, (nfe - self.nfe_extra(full)) // per)


class SamplerDispatch:
    """``sample(n, sampler=NAME, steps=N, **options)`` over a family's ``SAMPLERS``.

    ``SAMPLER_ALIASES`` maps other accepted names to registered ones; ``_unavailable(name)``
    says why a registered sampler cannot run on this instance (``None``: it can).
    """

    SAMPLERS: ClassVar[Mapping[str, SamplerEntry[Any]]]
    SAMPLER_ALIASES: ClassVar[Mapping[str, str]] = {}
    default_sampler: str
    shape: tuple[int, ...]

    def sampling_view(self) -> Any:
        """What the sampler entries read (the family's sampling view)."""
        raise NotImplementedError(f"{type(self).__name__} must build its sampling view")

    def initial_state(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Where the chains start: ``n`` draws of shape (n, *shape)."""
        raise NotImplementedError(f"{type(self).__name__} must say where its chains start")

    def _unavailable(self, sampler: str) -> str | None:
        """Why the registered ``sampler`` cannot run on this model (``None``: it can)."""
        return None

    @property
    def samplers(self) -> tuple[str, ...]:
        """Names accepted by :meth:`sample` (besides the aliases in ``SAMPLER_ALIASES``)."""
        return tuple(n for n in sorted(self.SAMPLERS) if self._unavailable(n) is None)

    def _entry(self, sampler: str) -> SamplerEntry[Any]:
        name = self.SAMPLER_ALIASES.get(sampler, sampler)
        why = self._unavailable(name) if name in self.SAMPLERS else None
        if why is not None:
            raise ValueError(why)
        if name not in self.samplers:
            aliases = ", ".join(f"{a} = {n}" for a, n in self.SAMPLER_ALIASES.items())
            raise ValueError(
                f"unknown sampler {sampler!r}; this model accepts {', '.join(self.samplers)}"
                + (f" (and {aliases})" if aliases else "")
            )
        return self.SAMPLERS[name]

    def sampler_options(self, sampler: str) -> dict[str, Any]:
        """The keywords :meth:`sample` takes with ``sampler`` besides ``generator``, with their
        defaults (``steps``: the default step count, ``None`` where the sampler picks it)."""
        return dict(self._entry(sampler).options)

    def _checked(self, sampler: str, options: Mapping[str, Any]) -> SamplerEntry[Any]:
        """The entry of ``sampler``, after checking that it takes every one of ``options``."""
        entry = self._entry(sampler)
        unknown = [k for k in options if k not in entry.options]
        if unknown:
            budget = f"; for an NFE budget pass steps=model.steps_for_nfe({sampler!r}, nfe)"
            raise ValueError(
                f"sampler {sampler!r} takes no option {', '.join(unknown)}; it takes "
                f"{', '.join(entry.options)} and generator{budget if 'nfe' in unknown else ''}"
            )
        return entry

    def steps_for_nfe(self, sampler: str, nfe: int, **options: Any) -> int:
        """The number of steps of ``sampler`` (with ``options``) that spends at most ``nfe``
        evaluations; an adaptive sampler has none (its NFE follows from rtol/atol)."""
        steps = self._checked(sampler, options).steps_for_nfe(nfe, options)
        if steps is None:
            budget = [s for s in self.samplers if self._entry(s).steps_for_nfe(1, {}) is not None]
            given = "".join(f" {k}={v!r}" for k, v in options.items())
            raise ValueError(
                f"sampler {sampler!r}{' with' + given if given else ''} is adaptive: rtol/atol "
                "set its NFE (--rtol/--atol on the command line), not an NFE budget; for a "
                f"budget use {'other options or ' if given else ''}a fixed-step sampler: "
                f"{', '.join(budget)}"
            )
        return steps

    def sample_with_nfe(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        grad: bool = False,
        **options: Any,
    ) -> tuple[Tensor, int]:
        """``n`` samples of shape (n, *shape) and the NFE spent.

        ``steps`` (``None``: the sampler's default) and ``options`` go to the sampler, which
        must take them (:meth:`sampler_options`). The samples carry an autograd graph (to
        differentiate through sampling) only with ``grad=True``.
        """
        name = self.default_sampler if sampler is None else sampler
        if steps is not None:
            options = {"steps": steps, **options}
        entry = self._checked(name, options)
        with torch.set_grad_enabled(grad):
            x = self.initial_state(n, generator=generator)
            return entry.run(self.sampling_view(), x, generator=generator, **options)

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        grad: bool = False,
        **options: Any,
    ) -> Tensor:
        """``n`` samples, shape (n, *shape) (see :meth:`sample_with_nfe`; ``grad=True`` keeps
        the autograd graph)."""
        return self.sample_with_nfe(
            n, generator=generator, sampler=sampler, steps=steps, grad=grad, **options
        )[0]

    def trajectories(
        self,
        z_or_n: Tensor | int,
        n_times: int = 50,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        generator: torch.Generator | None = None,
        **options: Any,
    ) -> Tensor:
        """The states of ``sampler`` (default: the model's) from its start to its samples at
        ``n_times`` roughly equally spaced steps, shape (n_times, n, *shape), recorded by the
        sampler's ``callback``; ``z_or_n`` is a start (e.g. noise) or a number of chains.

        ``steps`` and ``options`` go to the sampler (``steps=None``: its default). An ODE
        sampler (one with ``rtol``) reports its states on its output grid, so without
        ``steps`` it gets ``n_times - 1`` output intervals (an adaptive solve, dopri5 for
        ``"pf-ode"``: the solver still picks its own steps). At most ``2 n_times + 1`` states
        are held at once, however many steps the sampler takes.
        """
        if not isinstance(n_times, int) or n_times < 2:
            raise ValueError(f"n_times must be an int >= 2 (both ends), got {n_times!r}")
        name = self.default_sampler if sampler is None else sampler
        entry = self._entry(name)
        if steps is None and "rtol" in entry.options:
            steps = n_times - 1
            if "method" in entry.options and options.get("method") is None:
                options = {**options, "method": "dopri5"}  # pf-ode: adaptive without steps
        if steps is not None:
            options = {"steps": steps, **options}
        entry = self._checked(name, options)
        z = self.initial_state(z_or_n, generator=generator) if isinstance(z_or_n, int) else z_or_n
        check_batch(z, self.shape)
        record = _Recorder(z, n_times)
        with torch.no_grad():
            x, _ = entry.run(
                self.sampling_view(), z, generator=generator, callback=record, **options
            )
        return record.path(x)


class _Recorder:
    """A sampler's ``callback`` that keeps every ``stride``-th state (and the start), the
    stride doubling whenever more than ``2 n`` are held: equally spaced states, bounded
    memory."""

    def __init__(self, start: Tensor, n: int) -> None:
        self.n, self.stride, self.count = n, 1, 0
        self.kept: list[tuple[int, Tensor]] = [(0, start)]

    def __call__(self, step: int, x: Tensor) -> None:
        self.count += 1
        if self.count % self.stride == 0:
            self.kept.append((self.count, x))
            if len(self.kept) > 2 * self.n:
                self.stride *= 2
                self.kept = [(i, s) for i, s in self.kept if i % self.stride == 0]

    def path(self, end: Tensor) -> Tensor:
        """``n`` of the kept states, equally spaced in the list, the sampler's result last."""
        kept = [s for i, s in self.kept if i < self.count] + [end]
        if len(kept) < self.n:
            raise ValueError(
                f"the sampler took {self.count} steps: n_times can be at most "
                f"{self.count + 1}; ask for fewer times or more steps"
            )
        idx = torch.linspace(0, len(kept) - 1, self.n).round().long().tolist()
        return torch.stack([kept[i] for i in idx])
