"""Sampler dispatch shared by the families that sample by name (private).

A family lists the samplers it accepts in ``SAMPLERS`` (name -> :class:`SamplerSpec`),
names a ``default_sampler`` and says where chains start (``initial_state``); this mixin
gives it ``samplers``, ``steps_for_nfe``, ``sample_with_nfe`` and ``sample``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

__all__ = ["Runner", "SamplerDispatch", "SamplerSpec"]

Runner = Callable[[Any, Tensor, "int | None", "torch.Generator | None", dict], Any]
"""``run(model, x_T, steps, generator, options) -> (samples, nfe)``."""


@dataclass(frozen=True)
class SamplerSpec:
    """A sampler a model accepts: ``run(model, x_T, steps, generator, options) -> (x, nfe)``.

    ``nfe_per_step(options)`` converts an NFE budget to steps (``None``: adaptive, the
    budget cannot be set); ``takes`` names the kind the sampler reads (for the docs);
    ``default_steps`` is used when ``steps`` is None; ``options`` names the solver options
    (``method``, ``rtol``, ``atol``) the CLI may pass through to ``run``.
    """

    run: Runner
    nfe_per_step: Callable[[dict[str, Any]], int | None]
    takes: str
    default_steps: int | None
    options: tuple[str, ...] = ()


class SamplerDispatch:
    """``sample(n, sampler=NAME, steps=N, **options)`` over a family's ``SAMPLERS``."""

    SAMPLERS: ClassVar[dict[str, SamplerSpec]]
    default_sampler: ClassVar[str]

    def initial_state(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        """Where the chains start: ``n`` draws of shape (n, dim)."""
        raise NotImplementedError(f"{type(self).__name__} must say where its chains start")

    @property
    def samplers(self) -> tuple[str, ...]:
        """Names accepted by :meth:`sample`."""
        return tuple(sorted(self.SAMPLERS))

    def steps_for_nfe(self, sampler: str, nfe: int, **options: Any) -> int:
        """The number of steps of ``sampler`` that spends at most ``nfe`` evaluations."""
        per = self._spec(sampler).nfe_per_step(options)
        if per is None:
            raise ValueError(f"sampler {sampler!r} with {options} is adaptive: set rtol/atol")
        return max(1, nfe // per)

    def _spec(self, sampler: str) -> SamplerSpec:
        if sampler not in self.SAMPLERS:
            raise ValueError(
                f"unknown sampler {sampler!r}; {type(self).__name__} accepts "
                f"{', '.join(self.samplers)}"
            )
        return self.SAMPLERS[sampler]

    def sample_with_nfe(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        **options: Any,
    ) -> tuple[Tensor, int]:
        """``n`` samples of shape (n, dim) and the NFE spent; ``options`` go to the sampler."""
        spec = self._spec(sampler or self.default_sampler)
        x, nfe = spec.run(
            self, self.initial_state(n, generator=generator), steps, generator, options
        )
        return x, int(nfe)

    def sample(
        self,
        n: int,
        *,
        generator: torch.Generator | None = None,
        sampler: str | None = None,
        steps: int | None = None,
        **options: Any,
    ) -> Tensor:
        """``n`` samples, shape (n, dim) (see :meth:`sample_with_nfe` for the NFE)."""
        return self.sample_with_nfe(
            n, generator=generator, sampler=sampler, steps=steps, **options
        )[0]
