r"""Training objectives, one plain function per formula.

Sections (later ones are added next to these, one definition each):

* **Score matching** -- fit :math:`s_\theta(x) \approx \nabla_x \log p(x)` without knowing
  :math:`p`: the Fisher divergence (the target when :math:`\nabla\log p` is known), implicit
  score matching, sliced score matching, denoising score matching at one noise level and
  the noise-conditional (NCSN) objective over several levels.
* **Flow matching** -- regress a velocity field on the conditional velocity of a Gaussian
  path, :func:`conditional_flow_matching` (Lipman et al. 2023).
* **Diffusion (DDPM)** -- :math:`L_\text{simple}` and every term of the ELBO of the DDPM
  chain (decoder :math:`L_0`, the KL terms :math:`L_i`, the prior :math:`L_T`), whose sum
  bounds the NLL in nats.
* **Score SDE** -- continuous-time denoising score matching with t ~ U(t_min, 1) and the
  weight sigma(t)^2 or the likelihood weight g(t)^2, :func:`score_sde_loss`.

Conventions. Data ``x`` has shape ``(batch, ...)``. An *unconditional* score is a callable
``score(x) -> tensor shaped like x``; the *noise-conditional* score of
:func:`noise_conditional_score_matching` is ``score(x, sigma)`` with ``sigma`` of shape
``(batch,)``. Any callable works: a network, a closed form, or the score of an energy-based
model computed by autograd, ``lambda x: -torch.autograd.grad(E(x).sum(), x,
create_graph=True)[0]`` (create the graph so the loss can be back-propagated to ``E``'s
parameters). Every loss returns the batch mean, or per-example values with
``reduction="none"``; all squared norms sum over every non-batch dimension.
"""

from probpath.losses.ddpm import (
    ddpm_decoder_nll,
    ddpm_kl_term,
    ddpm_nll_bound,
    ddpm_nll_bounds,
    ddpm_prior_kl,
    ddpm_simple_loss,
    discretized_gaussian_log_prob,
)
from probpath.losses.flow_matching import conditional_flow_matching
from probpath.losses.score_matching import (
    denoising_score_matching,
    fisher_divergence,
    implicit_score_matching,
    noise_conditional_score_matching,
    sliced_score_matching,
)
from probpath.losses.score_sde import WEIGHTINGS, score_sde_loss

__all__ = [
    "WEIGHTINGS",
    "conditional_flow_matching",
    "ddpm_decoder_nll",
    "ddpm_kl_term",
    "ddpm_nll_bound",
    "ddpm_nll_bounds",
    "ddpm_prior_kl",
    "ddpm_simple_loss",
    "denoising_score_matching",
    "discretized_gaussian_log_prob",
    "fisher_divergence",
    "implicit_score_matching",
    "noise_conditional_score_matching",
    "score_sde_loss",
    "sliced_score_matching",
]
