"""Reverse-SDE, predictor-corrector, PF-ODE and EDM-Heun samplers.

1. One contract test over every sampler of every DiffusionModel family in the registry
   (discovered from ``MODELS``: a family that subclasses DiffusionModel and adds samplers
   is covered without editing this file; list exceptions in ``SAMPLER_OPTIONS``), and over
   the classifier-free and classifier-guided views of each (``probpath.guidance.guide``).
2. With the analytic score of Gaussian data (probpath.analytic) every sampler must return
   the data moments within 5 standard errors of the sample plus its stated discretisation
   bias.
"""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

import probpath._schedules
from probpath.analytic import Gaussian
from probpath.guidance import GuidedModel, guide
from probpath.models import MODELS, NoisyClassifier
from probpath.models.diffusion import DiffusionModel
from probpath.paths import VESchedule, VPSchedule, make_schedule
from probpath.samplers import (
    edm_times,
    heun_edm,
    predictor_corrector,
    probability_flow,
    reverse_sde_euler,
)
from probpath.sdes import SDE
from probpath.solvers import sdeint

# options a sampler needs in the contract test (model name, sampler) -> sample() kwargs
SAMPLER_OPTIONS: dict[tuple[str, str], dict[str, Any]] = {}


def _families() -> list[tuple[str, str]]:
    cases = []
    for name, cls in sorted(MODELS.items()):
        if isinstance(cls, type) and issubclass(cls, DiffusionModel):
            for sampler in cls(dim=2, hidden=[8]).samplers:  # type: ignore[call-arg]
                cases.append((name, sampler))
    return cases


def _model(name: str, guidance: str | None) -> DiffusionModel | GuidedModel:
    """The family's model, or its guided view (probpath.guidance), which must sample alike."""
    model = MODELS[name](dim=2, hidden=[8], n_classes=3 if guidance == "cfg" else 0)
    assert isinstance(model, DiffusionModel)
    if guidance is None:
        return model
    clf = NoisyClassifier(dim=2, n_classes=3, hidden=[8], **model.schedule_config)
    return guide(model, 1, 2.0, method=guidance, classifier=clf if guidance != "cfg" else None)


@pytest.mark.parametrize("guidance", [None, "cfg", "classifier"])
@pytest.mark.parametrize(("name", "sampler"), _families())
def test_sampler_contract(name: str, sampler: str, guidance: str | None) -> None:
    """Shape, dtype, NFE reported, generator reproducibility, no_grad, and a graph through the
    sampler with grad=True only."""
    torch.manual_seed(0)
    model = _model(name, guidance)
    opts = dict(steps=3, **SAMPLER_OPTIONS.get((name, sampler), {}))
    if "rtol" in model.sampler_options(sampler):
        opts.setdefault("rtol", 1e-3)
        opts.setdefault("atol", 1e-3)
    with torch.no_grad():
        x, nfe = model.sample_with_nfe(
            5, generator=torch.Generator().manual_seed(1), sampler=sampler, **opts
        )
        again, _ = model.sample_with_nfe(
            5, generator=torch.Generator().manual_seed(1), sampler=sampler, **opts
        )
    assert x.shape == (5, 2) and x.dtype == torch.float32
    assert isinstance(nfe, int) and nfe > 0
    assert torch.equal(x, again) and bool(torch.isfinite(x).all())
    model64 = model.double()
    assert not model64.sample(5, sampler=sampler, **opts).requires_grad  # no graph unasked
    y = model64.sample(
        5, generator=torch.Generator().manual_seed(1), sampler=sampler, grad=True, **opts
    )
    assert y.dtype == torch.float64
    assert y.requires_grad  # differentiable through the sampler
    y.sum().backward()
    assert any(p.grad is not None for p in model64.parameters())


def _oracle(schedule: str) -> tuple[DiffusionModel, Gaussian]:
    gauss = Gaussian(
        torch.tensor([1.0, -0.5]), torch.tensor([[0.5, 0.2], [0.2, 0.3]]), make_schedule(schedule)
    )
    return DiffusionModel(dim=2, schedule=schedule, net=gauss.eps_mean).double(), gauss


N = 4000


def _check_moments(x: torch.Tensor, gauss: Gaussian, t: float, rel_bias: float) -> None:
    """5 standard errors of the mean / covariance entries + a relative bias allowance."""
    mean, cov = gauss.moments(t)
    var = cov.diagonal()
    assert ((x.mean(0) - mean).abs() <= 5 * (var / N).sqrt() + rel_bias * mean.abs()).all()
    se = ((var[:, None] * var[None, :] + cov**2) / N).sqrt()
    assert ((torch.cov(x.T) - cov).abs() <= 5 * se + rel_bias * cov.abs().max()).all()


@pytest.mark.parametrize(
    ("schedule", "sampler", "steps", "rel_bias"),
    [
        # Euler-Maruyama, weak order 1: bias <= beta_max h / 2 = 10 / 500 for VP
        ("vp", "euler-maruyama", 500, 0.02),
        # PC: the predictor's bias as above; the corrector (snr 0.16) only reduces it
        ("ve", "pc", 300, 0.05),
        # PF-ODE with dopri5 at rtol 1e-6: only sampling error
        ("vp", "pf-ode", None, 0.0),
    ],
)
def test_samplers_return_the_data_moments(
    schedule: str, sampler: str, steps: int | None, rel_bias: float
) -> None:
    model, gauss = _oracle(schedule)
    opts: dict[str, Any] = {"rtol": 1e-6, "atol": 1e-6} if sampler == "pf-ode" else {}
    with torch.no_grad():
        x, nfe = model.sample_with_nfe(
            N, generator=torch.Generator().manual_seed(7), sampler=sampler, steps=steps, **opts
        )
    _check_moments(x, gauss, model.t_min, rel_bias)
    assert nfe >= 1


def _affine_map(fn, d: int = 2) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, c) of an affine map x -> M x + c, read off at 0 and the basis vectors."""
    out = fn(torch.cat([torch.zeros(1, d), torch.eye(d)]).double())
    return (out[1:] - out[0]).T, out[0]


def test_heun_moments_and_their_second_order_bias() -> None:
    """With Gaussian data eps is affine in x, so EDM Heun is an affine map of x_1 and the law
    of its output is Gaussian with moments computed exactly here. Started from the exact law
    of x at t_max, their deviation from the data moments at t_min is Heun's discretisation
    bias alone: order 2, so 30 -> 60 steps divides it by 4 (observed order within 0.3).
    The model's sampler (from the prior N(0, (alpha^2 + sigma^2) I)) must return the
    moments of the same map within 5 standard errors."""
    model, gauss = _oracle("vp")
    exact, biases = {}, []
    for steps in (30, 60):
        ts = edm_times(model.schedule, steps, t_min=model.t_min, t_max=model.t_max)
        M, c = _affine_map(lambda x, ts=ts: heun_edm(model.eps, x, ts, schedule=model.schedule)[0])
        m1, C1 = gauss.moments(model.t_max)
        mean, cov = gauss.moments(model.t_min)
        biases.append(max((M @ m1 + c - mean).abs().max(), (M @ C1 @ M.T - cov).abs().max()))
        exact[steps] = (c, model.sde.prior_std(model.t_max) ** 2 * M @ M.T)
    observed = math.log2(biases[0] / biases[1])
    assert abs(observed - 2) < 0.3, (biases, observed)
    with torch.no_grad():
        x, nfe = model.sample_with_nfe(N, generator=gen(7), sampler="heun", steps=60)
    assert nfe == 120
    mean, cov = exact[60]
    var = cov.diagonal()
    assert ((x.mean(0) - mean).abs() <= 5 * (var / N).sqrt()).all()
    se = ((var[:, None] * var[None, :] + cov**2) / N).sqrt()
    assert ((torch.cov(x.T) - cov).abs() <= 5 * se).all()


@pytest.mark.parametrize(("sampler", "order"), [("heun", 2), ("euler", 1)])
def test_ode_samplers_converge_at_their_order(sampler: str, order: int) -> None:
    """Pathwise error against dopri5 at rtol 1e-10 from the same noise, for n and 2n steps:
    the observed order log2(e_n / e_2n) must be within 0.3 of the method's order."""
    model, _ = _oracle("vp")
    x1 = model.prior_sample(64, generator=torch.Generator().manual_seed(0))
    ends = torch.tensor([model.t_max, model.t_min], dtype=torch.float64)
    ref = probability_flow(model.velocity, x1, ends, rtol=1e-10, atol=1e-10)[0]
    errors = []
    for n in (40, 80) if sampler == "heun" else (100, 200):
        if sampler == "heun":
            ts = edm_times(model.schedule, n, t_min=model.t_min, t_max=model.t_max)
            x = heun_edm(model.eps, x1, ts, schedule=model.schedule)[0]
        else:
            x = probability_flow(model.velocity, x1, model.time_grid(n, x1), method="euler")[0]
        errors.append((x - ref).abs().max().item())
    observed = torch.tensor(errors[0] / errors[1]).log2().item()
    assert abs(observed - order) < 0.3, (errors, observed)


def test_sampler_functions_report_nfe_and_use_callbacks() -> None:
    sch = VPSchedule()
    score = lambda x, t: -x  # noqa: E731  (data N(0, I): every p_t is N(0, I))
    eps = lambda x, t: sch(t).sigma[:, None] * x  # noqa: E731
    x = torch.randn(3, 2)
    ts = torch.linspace(1, 1e-3, 6)
    seen: list[int] = []
    assert (
        reverse_sde_euler(score, x, ts, schedule=sch, callback=lambda k, y: seen.append(k))[1] == 5
    )
    assert seen == [0, 1, 2, 3, 4]
    assert predictor_corrector(score, x, ts, schedule=sch, n_corrector=2)[1] == 15
    assert heun_edm(eps, x, edm_times(sch, 5).float(), schedule=sch)[1] == 10
    assert probability_flow(lambda x, t: 0 * x, x, ts, method="euler")[1] == 5


def test_sampler_errors() -> None:
    sch = VESchedule()
    x = torch.zeros(2, 2)
    with pytest.raises(ValueError, match="decreasing"):
        reverse_sde_euler(lambda x, t: x, x, torch.linspace(0, 1, 3), schedule=sch)
    with pytest.raises(ValueError, match="n_corrector"):
        predictor_corrector(
            lambda x, t: x, x, torch.linspace(1, 0, 3), schedule=sch, n_corrector=-1
        )
    with pytest.raises(ValueError, match="steps"):
        edm_times(sch, 0)
    with pytest.raises(ValueError, match="shaped like x"):
        reverse_sde_euler(lambda x, t: x[:, :1], x, torch.linspace(1, 0, 3), schedule=sch)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _naive_em_step(score, sch, x, t, t_next, noise, gen):
    """x - h (f x - g^2 s) + g sqrt(h) z, the schedule evaluated at the step."""
    h, s = t - t_next, sch(t[None])
    x = x - h * (s.drift_coef * x - s.diffusion_sq * score(x, t.expand(len(x))))
    return (
        x + (s.diffusion_sq * h).sqrt() * torch.randn(x.shape, generator=gen, dtype=x.dtype)
        if noise
        else x
    )


@pytest.mark.parametrize(
    "sch", [VPSchedule(), VESchedule(0.01, 10.0), make_schedule("ot")], ids=repr
)
def test_precomputed_steps_are_the_euler_maruyama_formula(sch) -> None:
    # the samplers form every step's coefficients before the loop (float64); the same
    # noise draws through the textbook step must agree to float64 rounding
    score = lambda x, t: -x / (1 + t[:, None]) + torch.sin(x)  # noqa: E731
    x = torch.randn(7, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    ts = torch.linspace(0.99, 1e-3, 13, dtype=torch.float64)
    for final_noise in (False, True):
        got, _ = reverse_sde_euler(
            score, x, ts, schedule=sch, generator=gen(1), final_noise=final_noise
        )
        g, y = gen(1), x
        for k in range(12):
            y = _naive_em_step(score, sch, y, ts[k], ts[k + 1], final_noise or k < 11, g)
        torch.testing.assert_close(got, y, rtol=1e-10, atol=1e-12)
    got, nfe = predictor_corrector(score, x, ts, schedule=sch, snr=0.1, generator=gen(2))
    g, y = gen(2), x
    for k in range(12):
        ratio = (sch(ts[k + 1]).alpha / sch(ts[k]).alpha) ** 2
        s = score(y, ts[k].expand(7))
        step = 2 * ratio * (0.1 * 2**0.5 / s.pow(2).sum(1).sqrt().mean()) ** 2
        y = y + step * s + (2 * step).sqrt() * torch.randn(y.shape, generator=g, dtype=y.dtype)
        y = _naive_em_step(score, sch, y, ts[k], ts[k + 1], k < 11, g)
    assert nfe == 24
    torch.testing.assert_close(got, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("sch", [VPSchedule(), VESchedule(0.01, 10.0)], ids=repr)
def test_reverse_sde_euler_runs_the_reverse_sde_object(sch) -> None:
    # the sampler is probpath.solvers.sdeint's Euler-Maruyama on SDE(sch).reverse(score),
    # one step per interval of ts (in tau = -t), on the sampler's own noise draws
    # (increments sqrt(h) z, none on the last step): equal to float64 rounding
    score = lambda x, t: -x / (1 + t[:, None]) + torch.sin(x)  # noqa: E731
    x = torch.randn(7, 2, generator=gen(0), dtype=torch.float64)
    ts = torch.linspace(0.99, 1e-3, 13, dtype=torch.float64)
    got, _ = reverse_sde_euler(score, x, ts, schedule=sch, generator=gen(1))
    g = gen(1)
    h = (ts[:-1] - ts[1:]).tolist()
    bm = torch.stack([torch.randn(x.shape, generator=g, dtype=x.dtype) * hk**0.5 for hk in h])
    bm[-1] = 0.0
    ys = sdeint(SDE(sch).reverse(score), x, -ts, bm=bm, dt=1.0)
    torch.testing.assert_close(got, ys[-1], rtol=1e-10, atol=1e-12)


def test_reverse_sde_needs_finite_coefficients() -> None:
    # CondOT: alpha(1) = 0, so f = alpha'/alpha is infinite at t = 1
    with pytest.raises(ValueError, match="below t = 1"):
        reverse_sde_euler(lambda x, t: x, torch.zeros(2, 2), torch.linspace(1, 0.1, 3),
                          schedule=make_schedule("ot"))  # fmt: skip


@pytest.mark.parametrize(
    ("sampler", "opts"),
    [("euler-maruyama", {}), ("pc", {}), ("pf-ode", {"method": "euler"}), ("heun", {}),
     ("dpm", {})],
)  # fmt: skip
def test_steps_evaluate_the_schedule_without_range_checks(monkeypatch, sampler, opts) -> None:
    """Issue 12: inside a step the schedule is evaluated without ``as_time``'s check (a host
    read); the grid is checked once per run, so the number of checks cannot grow with steps."""
    model = DiffusionModel(dim=2, schedule="vp", prediction="x0", hidden=[8])
    calls: list[int] = []
    checked = probpath._schedules.as_time

    def counting(t, **kw):
        calls.append(1)
        return checked(t, **kw)

    monkeypatch.setattr(probpath._schedules, "as_time", counting)
    counts = []
    for steps in (4, 8):
        calls.clear()
        with torch.no_grad():
            model.sample(3, sampler=sampler, steps=steps, **opts)
        counts.append(len(calls))
    assert counts[0] == counts[1], counts
