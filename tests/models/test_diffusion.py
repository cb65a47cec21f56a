"""DiffusionModel: one network on a Gaussian path, every kind, exact likelihood.

The network is an analytic oracle (probpath.analytic) so every check is against a
closed form: the PF-ODE log-likelihood must equal the exact Gaussian log-density at
t_min to solver tolerance, and the round trip x -> noise -> x must return x.
"""

from __future__ import annotations

import pytest
import torch

from probpath.analytic import Gaussian
from probpath.losses import score_sde_loss
from probpath.models import ScoreSDE, build
from probpath.models.diffusion import DiffusionModel
from probpath.parametrize import KINDS
from probpath.paths import DiscreteSchedule, GaussianPath, VPSchedule, linear_betas, make_schedule

# zero mean: the prior N(0, (alpha^2 + sigma^2) I) at t_max is that of standardised data; a
# mean m would leave an O(alpha(t_max) |m| |z|) mismatch (0.007 nats for VP with |m| ~ 1)
MEAN = torch.zeros(2, dtype=torch.float64)
COV = torch.tensor([[1.0, 0.3], [0.3, 0.5]], dtype=torch.float64)


def oracle_model(schedule: str, kind: str, **kw: object) -> tuple[DiffusionModel, Gaussian]:
    """A DiffusionModel whose 'network' is the analytic prediction of ``kind``."""
    sch = make_schedule(schedule)
    gauss = Gaussian(MEAN, COV, sch)
    fn = {
        "eps": gauss.eps_mean,
        "x0": gauss.x0_mean,
        "score": gauss.score,
        "velocity": gauss.velocity,
    }[kind]
    model = DiffusionModel(dim=2, schedule=schedule, prediction=kind, net=fn, **kw)  # type: ignore[arg-type]
    return model.double(), gauss


@pytest.mark.parametrize(
    ("schedule", "kind"), [("vp", "eps"), ("ve", "score"), ("ot", "velocity"), ("subvp", "x0")]
)
def test_log_prob_is_the_exact_gaussian_density(schedule: str, kind: str) -> None:
    model, gauss = oracle_model(schedule, kind)
    x = gauss.sample(16, generator=torch.Generator().manual_seed(0))
    lp = model.log_prob(x, rtol=1e-8, atol=1e-8)
    exact = gauss.log_prob(x, model.t_min)
    # error budget: solver tolerance 1e-8 (~1e-7 after the trace integral) plus the prior's
    # variance mismatch at t_max: alpha(1)^2 |COV - I| |z|^2 ~ 4e-5 * 10 for VP/sub-VP;
    # for VE a variance 1 + 50^2 against COV + 50^2 gives ~|z|^2 / 50^2 ~ 4e-3 relative to
    # log-density terms of size |z|^2 / 2 -> ~1e-4 nats; OT's t_max = 1 - 1e-5 leaves 1e-5.
    assert torch.allclose(lp, exact, atol=1e-3), (lp - exact).abs().max()


def test_pf_ode_round_trip() -> None:
    model, gauss = oracle_model("vp", "eps")
    x = gauss.sample(8, generator=torch.Generator().manual_seed(1))
    z = model.encode(x, rtol=1e-9, atol=1e-9)
    back = model.decode(z, rtol=1e-9, atol=1e-9)
    # the flow is a bijection; dopri5 at 1e-9 on an O(1) state: error ~1e-7
    assert torch.allclose(back, x, atol=1e-6)
    assert z.std() > 0.5  # it actually moved to the noise end


def test_sample_with_log_prob_agrees_with_log_prob() -> None:
    model, gauss = oracle_model("vp", "eps")
    x, lp = model.sample_with_log_prob(
        8, generator=torch.Generator().manual_seed(2), rtol=1e-8, atol=1e-8
    )
    # same prior-mismatch budget as above
    assert torch.allclose(lp, gauss.log_prob(x, model.t_min), atol=1e-3)


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_agrees_with_the_oracle(kind: str) -> None:
    model, gauss = oracle_model("vp", "eps")
    x = gauss.sample_xt(5, 0.4, generator=torch.Generator().manual_seed(3))[0]
    t = torch.full((5,), 0.4, dtype=torch.float64)
    got = model.as_kind(kind)(x, t)
    s = VPSchedule()(t).expand_like(x)
    x0, eps = gauss.x0_mean(x, t), gauss.eps_mean(x, t)
    want = {
        "eps": eps,
        "x0": x0,
        "score": gauss.score(x, t),
        "v": s.alpha * eps - s.sigma * x0,  # Salimans & Ho 2022
        "velocity": gauss.velocity(x, t),
    }[kind]
    # float64 closed forms on both sides: agreement to rounding
    assert torch.allclose(got, want, atol=1e-10)


def test_ddpm_eps_network_is_a_vp_score_model() -> None:
    """A DDPM chain read as a continuous schedule gives the VP score s = -eps / sqrt(1-abar)."""
    model = DiffusionModel(
        dim=2, schedule="ddpm-linear", schedule_kwargs={"T": 1000}, hidden=[8]
    ).double()
    chain = DiscreteSchedule(linear_betas(1000))
    i = torch.tensor([1, 250, 999])
    t = i.double() / 1000
    x = torch.randn(3, 2, dtype=torch.float64, generator=torch.Generator().manual_seed(4))
    eps = model.predict(x, t)
    want = -eps / (1 - chain.alphas_cumprod[i - 1]).sqrt()[:, None]  # the seeds' formula
    assert torch.allclose(model.score(x, t), want, rtol=1e-10)
    # and the chain is the VP SDE: sqrt(abar) agrees with VP's alpha to O(1/T)
    assert torch.allclose(chain(t).alpha, VPSchedule()(t).alpha, atol=5e-3)


def test_config_round_trip_and_errors() -> None:
    model = DiffusionModel(dim=3, schedule="ve", schedule_kwargs={"sigma_max": 5.0}, hidden=[8])
    again = DiffusionModel(**model.config)
    assert again.config == model.config
    assert model.t_max == 1.0 and DiffusionModel(schedule="ot", hidden=[4]).t_max < 1.0
    with pytest.raises(ValueError, match="prediction"):
        DiffusionModel(prediction="noise")
    with pytest.raises(ValueError, match="schedule"):
        DiffusionModel(schedule="linear")
    with pytest.raises(ValueError, match="sampler"):
        model.sample(2, sampler="ddim-but-wrong")
    with pytest.raises(NotImplementedError):
        model.loss(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="shape"):
        model.log_prob(torch.zeros(2, 2))


def test_steps_for_nfe_and_float32() -> None:
    model = DiffusionModel(dim=2, hidden=[8])
    assert model.steps_for_nfe("heun", 40) == 20
    assert model.steps_for_nfe("pc", 40, n_corrector=3) == 10
    x, nfe = model.sample_with_nfe(3, sampler="pf-ode", steps=4, method="rk4")
    assert x.dtype == torch.float32 and nfe == 16


@pytest.mark.parametrize("weighting", ["sigma2", "likelihood"])
@pytest.mark.parametrize("sde", ["vp", "ve", "subvp"])
def test_score_sde_loss_is_minimised_by_the_true_score(sde: str, weighting: str) -> None:
    """L(c) = E lambda |c s + eps/sigma|^2 / 2 has dL/dc = E lambda (s + eps/sigma).s = 0 at the
    true score (E[eps/sigma | x_t] = -s): the sample mean of the per-example derivative must be
    within 5 standard errors of 0, while a wrong score (c = 1.2) must not be."""
    sch = make_schedule(sde, **({"sigma_max": 10.0} if sde == "ve" else {}))
    gauss = Gaussian(torch.tensor([0.5, -1.0], dtype=torch.float64), COV, sch)
    x0 = gauss.sample(20_000, generator=torch.Generator().manual_seed(5))
    path = GaussianPath(sch)
    c = torch.ones(len(x0), 1, dtype=torch.float64, requires_grad=True)  # one c per example
    for scale, vanishes in ((1.0, True), (1.2, False)):
        per = score_sde_loss(
            lambda x, t, k=scale: c * k * gauss.score(x, t), x0, path, t_min=1e-3,
            weighting=weighting, generator=torch.Generator().manual_seed(6), reduction="none",
        )  # fmt: skip
        (grads,) = torch.autograd.grad(per.sum(), c)
        mean, se = grads.mean(), grads.std() / len(grads) ** 0.5
        assert bool(mean.abs() < 5 * se) == vanishes, (scale, mean, se)


@pytest.mark.parametrize("weighting", ["sigma2", "likelihood"])
@pytest.mark.parametrize("sde", ["vp", "ve", "subvp"])
def test_importance_sampled_score_sde_loss_keeps_the_expectation(sde: str, weighting: str) -> None:
    """Data at a point m, score s(x) = -x: s + eps/sigma = -alpha m + (1/sigma - sigma) eps, so
    the loss is (1 - t_min)^-1 int lambda (alpha^2 |m|^2 + d (1/sigma - sigma)^2) / 2 dt
    (trapezoid on 200k geometric nodes in float64, error < 1e-6 relative). Uniform t and the
    log-SNR proposal must both hit it within 4 standard errors of their 100k samples, and on
    the likelihood weight of VP the proposal must cut the variance (Song et al. 2021b, Sec. 5)."""
    sch = make_schedule(sde, **({"sigma_max": 10.0} if sde == "ve" else {}))
    m, t_min = torch.tensor([0.5, -1.0], dtype=torch.float64), 1e-3
    ts = torch.logspace(-3, 0, 200_001, dtype=torch.float64)
    c = sch(ts)
    lam = c.sigma**2 if weighting == "sigma2" else c.diffusion_sq
    inner = c.alpha**2 * m.pow(2).sum() + 2 * (1 / c.sigma - c.sigma) ** 2
    exact = float(torch.trapezoid(lam * inner / 2, ts)) / (1 - t_min)
    x0 = m.expand(100_000, 2)
    var = {}
    for imp in (False, True):
        per = score_sde_loss(
            lambda x, t: -x, x0, GaussianPath(sch), t_min=t_min, weighting=weighting,
            importance_sampling=imp, generator=torch.Generator().manual_seed(7), reduction="none",
        )  # fmt: skip
        se = float(per.std()) / len(per) ** 0.5
        assert abs(float(per.mean()) - exact) < 4 * se, (imp, float(per.mean()), exact, se)
        var[imp] = float(per.var())
    if sde == "vp" and weighting == "likelihood":
        assert var[True] < 0.1 * var[False], var


def test_score_sde_family() -> None:
    for sde in ("vp", "ve", "subvp"):
        model = build("sde", sde=sde, hidden=[8])
        assert build("sde", **model.config).config == model.config
        loss, logs = model.loss(torch.randn(16, 2), generator=torch.Generator().manual_seed(0))
        loss.backward()
        assert torch.isfinite(loss) and logs["dsm"] == loss.item()
    assert model.default_sampler == "euler-maruyama"
    with pytest.raises(ValueError, match="sde"):
        ScoreSDE(sde="cosine")
    with pytest.raises(ValueError, match="weighting"):
        ScoreSDE(weighting="uniform")
    # t uniform in log-SNR by default with the likelihood weight only, kept in the config
    lik = ScoreSDE(weighting="likelihood", hidden=[8])
    sigma2 = ScoreSDE(weighting="sigma2", hidden=[8])
    assert lik.config["importance_sampling"] and not sigma2.importance_sampling
    assert build("sde", **lik.config).importance_sampling
