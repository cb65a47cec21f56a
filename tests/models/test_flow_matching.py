"""Flow matching: the CFM minimiser, transport, likelihood and conversions in closed form."""

from __future__ import annotations

import pytest
import torch

from probpath.analytic import Gaussian, GaussianMixture
from probpath.losses import conditional_flow_matching
from probpath.models import FlowMatching, GenerativeModel, build
from probpath.parametrize import convert
from probpath.paths import CondOTSchedule, GaussianPath, make_schedule

D64 = torch.float64
MEAN = torch.tensor([1.0, -0.5], dtype=D64)
COV = torch.tensor([[0.6, 0.2], [0.2, 0.3]], dtype=D64)


def analytic_model(law: GaussianMixture, path: str, **kw) -> FlowMatching:
    """A flow-matching model whose 'network' is the exact marginal velocity of ``law``."""
    model = FlowMatching(dim=2, path=path, net=law.velocity, **kw).double()
    law.schedule = model.schedule
    return model


def cfm_gradient_z(field, law_sample, path: GaussianPath, *, t_min: float, seed: int):
    """z-scores of the CFM gradient of u_θ = field + A x + b + t c at θ = 0.

    The gradient is estimated over K = 200 independent chunks of 256 pairs; each of its 8
    components is a mean of K i.i.d. chunk gradients, so (mean / standard error) is
    approximately N(0, 1) when the true gradient is 0.
    """
    g = torch.Generator().manual_seed(seed)
    theta = torch.zeros(8, dtype=D64, requires_grad=True)

    def u(x, t):
        A, b, c = theta[:4].view(2, 2), theta[4:6], theta[6:]
        return field(x, t) + x @ A.T + b + t[:, None] * c

    grads = []
    for _ in range(200):
        x0, x1 = law_sample(256, g)
        loss = conditional_flow_matching(u, x0, path, x1=x1, t_min=t_min, generator=g)
        grads.append(torch.autograd.grad(loss, theta)[0])
    G = torch.stack(grads)
    return G.mean(0) / (G.std(0) / len(G) ** 0.5)


@pytest.mark.parametrize("name", ["ot", "vp"])
def test_cfm_gradient_vanishes_at_the_marginal_velocity(name: str) -> None:
    # Lipman et al. 2023, Thm 2: E[alpha' x0 + sigma' x1 | x_t] = u(x_t, t), so the CFM
    # gradient at the analytic field is 0. Bound: |z| < 4.5 for each of the 8 components
    # (two-sided normal tail 7e-6 each). It must fail for a wrong field: the velocity of
    # N(MEAN + 0.3, COV) gives |z| far above the bound.
    schedule = make_schedule(name)
    path = GaussianPath(schedule)
    law = Gaussian(MEAN, COV, schedule)
    wrong = Gaussian(MEAN + 0.3, COV, schedule)

    def sample(n, g):
        return law.sample(n, generator=g), torch.randn(n, 2, generator=g, dtype=D64)

    t_min = 1e-3 if name == "vp" else 0.0  # the VP velocity is infinite at t = 0
    z = cfm_gradient_z(law.velocity, sample, path, t_min=t_min, seed=0)
    assert z.abs().max() < 4.5, z
    z_wrong = cfm_gradient_z(wrong.velocity, sample, path, t_min=t_min, seed=1)
    assert z_wrong.abs().max() > 10, z_wrong


def test_data_to_data_minimiser_is_the_interpolant_regression() -> None:
    # Source N(m1, s1 I), target N(m0, s0 I), independent; x_t = (1 - t) x0 + t x1.
    # x_t is Gaussian, so u(x, t) = E[x1 - x0 | x_t = x] is the linear regression
    # E[x1 - x0] + Cov(x1 - x0, x_t) Var(x_t)^{-1} (x - E x_t), with
    # Cov = t s1 - (1 - t) s0 and Var = (1 - t)^2 s0 + t^2 s1. Same z-bound as above.
    m0, m1 = torch.tensor([2.0, 0.0], dtype=D64), torch.tensor([-1.0, 1.0], dtype=D64)
    s0, s1 = 0.3, 1.5
    path = GaussianPath(CondOTSchedule())

    def field(x, t):
        t = t[:, None]
        gain = (t * s1 - (1 - t) * s0) / ((1 - t) ** 2 * s0 + t**2 * s1)
        return (m1 - m0) + gain * (x - (1 - t) * m0 - t * m1)

    def sample(n, g):
        x0 = m0 + s0**0.5 * torch.randn(n, 2, generator=g, dtype=D64)
        return x0, m1 + s1**0.5 * torch.randn(n, 2, generator=g, dtype=D64)

    z = cfm_gradient_z(field, sample, path, t_min=0.0, seed=2)
    assert z.abs().max() < 4.5, z


def test_analytic_field_carries_noise_to_the_data_law() -> None:
    # n = 4000 samples: the sample mean has standard error sqrt(COV_dd / n) and each
    # covariance entry sqrt((S_ii S_jj + S_ij^2) / n); allow 4.5 standard errors. The
    # solver (dopri5, rtol = atol = 1e-8) and the ends t_min = 1e-5, t_max = 1 - 1e-5
    # add O(1e-5), far below.
    law = Gaussian(MEAN, COV)
    model = analytic_model(law, "ot")
    x = model.sample(4000, generator=torch.Generator().manual_seed(3), rtol=1e-8, atol=1e-8)
    n = x.shape[0]
    se_mean = (COV.diagonal() / n).sqrt()
    assert ((x.mean(0) - MEAN).abs() < 4.5 * se_mean).all()
    se_cov = ((COV.diagonal()[:, None] * COV.diagonal()[None] + COV**2) / n).sqrt()
    assert ((torch.cov(x.T) - COV).abs() < 4.5 * se_cov).all()


@pytest.mark.parametrize(
    ("path", "law"),
    [
        ("ot", GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.5, 0], [1, 1]]), 0.2)),
        ("vp", Gaussian(torch.zeros(2), COV)),
    ],
)
def test_log_prob_with_the_analytic_field_is_exact(path: str, law: GaussianMixture) -> None:
    # DiffusionModel.log_prob integrates the exact field from t_min to t_max and uses the
    # prior N(0, (alpha^2 + sigma^2) I) at t_max, which is the exact p_{t_max} up to
    # alpha(t_max) |m| |x| (OT: alpha = 1e-5, so about 1e-4) or alpha(t_max)^2 |S - I| |x|^2
    # (VP with zero mean: alpha(1)^2 = 4e-5); dopri5 at rtol = atol = 1e-9 adds ~1e-7.
    model = analytic_model(law, path)
    x = law.sample(64, generator=torch.Generator().manual_seed(4))
    lp = model.log_prob(x, rtol=1e-9, atol=1e-9)
    exact = law.log_prob(x, model.t_min)
    assert torch.allclose(lp, exact, atol=1e-3, rtol=0)


@pytest.mark.parametrize("path", ["ot", "vp", "ve"])
def test_velocity_score_round_trips(path: str) -> None:
    # float64 conversions are exact up to rounding: relative 1e-10 at interior times
    law = GaussianMixture(torch.ones(2), torch.tensor([[-1.0, 0.0], [1.0, 0.5]]), 0.3)
    model = analytic_model(law, path)
    g = torch.Generator().manual_seed(5)
    x = 2 * torch.randn(50, 2, generator=g, dtype=D64)
    t = 0.05 + 0.9 * torch.rand(50, generator=g, dtype=D64)
    assert torch.allclose(model.score(x, t), law.score(x, t), rtol=1e-10, atol=1e-10)
    assert torch.allclose(model.x0(x, t), law.x0_mean(x, t), rtol=1e-10, atol=1e-10)
    s = model.schedule(t).expand_like(x)
    back = convert(model.score(x, t), "score", "velocity", x, s)
    assert torch.allclose(back, model.velocity(x, t), rtol=1e-10, atol=1e-10)


def test_contract_config_and_registry() -> None:
    model = build("fm", dim=2, path="ot", ot_coupling=True, hidden=[8])
    assert isinstance(model, FlowMatching) and isinstance(model, GenerativeModel)
    assert build("fm", **model.config).config == model.config
    assert model.config["path"] == "ot" and model.config["ot_coupling"] is True
    loss, logs = model.loss(torch.randn(16, 2), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert torch.isfinite(loss) and logs["cfm"] == pytest.approx(loss.item())
    assert all(p.grad is not None for p in model.parameters())
    ve = FlowMatching(dim=2, path="ve", sigma_min=0.05, schedule_kwargs={"sigma_max": 5.0})
    assert ve.schedule.sigma_min == 0.05 and ve.schedule.sigma_max == 5.0


def test_ode_samplers_report_their_nfe() -> None:
    model = FlowMatching(dim=2, hidden=[8])
    g = torch.Generator().manual_seed(0)
    for sampler, steps, nfe in [("euler", 7, 7), ("midpoint", 3, 6), ("rk4", 3, 12)]:
        x, used = model.sample_with_nfe(5, sampler=sampler, steps=steps, generator=g)
        assert x.shape == (5, 2) and used == nfe
    assert model.sample_with_nfe(5, generator=g)[1] >= 6  # dopri5: 6 stages a step (FSAL)
    assert "pc" in model.samplers and "euler-maruyama" in model.samplers


def test_bad_configs_and_score_samplers_with_ot_coupling_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown path"):
        FlowMatching(path="cosine")
    with pytest.raises(ValueError, match="VP path has none"):
        FlowMatching(path="vp", sigma_min=0.1)
    with pytest.raises(TypeError, match="true or false"):
        FlowMatching(ot_coupling="yes")  # type: ignore[arg-type]
    model = FlowMatching(dim=2, hidden=[8], ot_coupling=True)
    assert "pc" not in model.samplers
    with pytest.raises(ValueError, match="needs the score"):
        model.sample(3, sampler="pc")
    with pytest.raises(ValueError, match="shape"):
        model.loss(torch.zeros(4, 3))
    path = GaussianPath(CondOTSchedule())
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        conditional_flow_matching(model.velocity, torch.zeros(4, 2), path, t=torch.zeros(3))
    with pytest.raises(ValueError, match="shaped like x0"):
        conditional_flow_matching(model.velocity, torch.zeros(4, 2), path, x1=torch.zeros(4, 3))
