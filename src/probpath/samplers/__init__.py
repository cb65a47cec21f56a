"""Samplers: plain functions ``sampler(model, x, ts, *, generator=None, callback=None, ...)``
that return ``(samples, nfe)``.

``model(x, t)`` is called with ``t`` of shape ``(batch,)``; randomness comes from the
optional ``torch.Generator``; ``callback(step, x)`` sees every intermediate state. No
sampler switches gradients off: wrap the call in ``torch.no_grad()`` when none are needed,
or differentiate through the samples when they are.
"""

from probpath.samplers.langevin import annealed_langevin, langevin, mala

__all__ = ["annealed_langevin", "langevin", "mala"]
