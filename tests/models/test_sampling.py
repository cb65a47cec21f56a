"""Sampling by name: typed sampler entries, the sampling views a guided model shares, option
checks, NFE budgets, aliases, every sampler's default step count, and gradients only on
request (probpath.models._sampling)."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
import torch
from torch import Tensor

from probpath.guidance import guide
from probpath.models import MODELS, DiffusionModel, build
from probpath.models._sampling import SamplerEntry
from probpath.samplers import probability_flow

DIFFUSION = ("ddpm", "fm", "ncsn", "sde")
SAMPLING = ("cnf", "ddpm", "ebm", "fm", "ncsn", "sde")  # every family with sample(n)


IMAGE_NETS: dict[str, dict[str, Any]] = {"cnf": {"hidden": [4]}, "ebm": {"hidden": [4]}}
"""Tiny image networks: ConvField and ConvEnergy; a one-level U-Net for the others."""


def small(name: str, shape: list[int] | None = None, **kw: Any) -> Any:
    """A tiny model of the family (DDPM on a 100-step chain), on vectors of dimension 2 or
    on images of ``shape``."""
    extra: dict[str, Any] = {"schedule_kwargs": {"T": 100}} if name == "ddpm" else {}
    if shape is None:
        return build(name, dim=2, hidden=[8], **extra, **kw)
    net = IMAGE_NETS.get(name, {"base_channels": 4, "channel_mult": [1]})
    return build(name, shape=shape, net_config=net, **extra, **kw)


# documented default step counts (docs/samplers.md) as NFE: steps x NFE per step
DEFAULT_NFE = {
    "euler-maruyama": 1000,
    "pc": 500 * 2,  # one corrector step per predictor step
    "heun": 20 * 2,
    "dpm": 20,  # DPM-Solver++(2M): one evaluation a step
    "ddim": 50,
    "euler": 100,
    "midpoint": 100 * 2,
    "rk4": 100 * 4,
}


def default_nfe(model: Any, sampler: str) -> int:
    """The NFE of ``sampler``'s default step count; set by the model's config where it has one."""
    c = model.config
    if sampler == "ancestral":
        return int(model.chain.T)  # the whole chain
    if sampler == "annealed-langevin":
        return c["n_levels"] * c["n_steps_per_level"] + 1  # + the final denoising step
    if sampler == "langevin":
        return int(c["n_steps"])
    return DEFAULT_NFE[sampler]


def _default_cases() -> list[tuple[str, str]]:
    """Each entry once: the shared DiffusionModel ones on "sde", a family's own on it."""
    cases = [("sde", s) for s in DiffusionModel.SAMPLERS]
    for name in ("ddpm", "fm", "ncsn", "ebm"):
        cases += [(name, s) for s in MODELS[name].SAMPLERS if s not in DiffusionModel.SAMPLERS]  # type: ignore[attr-defined]
    return cases


@pytest.mark.parametrize(("name", "sampler"), _default_cases())
def test_every_sampler_runs_its_documented_default_steps(name: str, sampler: str) -> None:
    model = small(name)
    if sampler in ("pf-ode", "dopri5"):
        # adaptive by default: dopri5 at rtol = atol = 1e-5 from t_max to t_min
        with torch.no_grad():
            x = model.sample(3, sampler=sampler, generator=torch.Generator().manual_seed(0))
            z = model.prior_sample(3, generator=torch.Generator().manual_seed(0))
            ends = torch.tensor([model.t_max, model.t_min])
            want = probability_flow(model.velocity, z, ends, rtol=1e-5, atol=1e-5)[0]
        torch.testing.assert_close(x, want, rtol=0, atol=0)
        return
    with torch.no_grad():
        _, nfe = model.sample_with_nfe(2, sampler=sampler)
    assert nfe == default_nfe(model, sampler)


def test_options_are_checked_against_the_sampler_signature() -> None:
    model = small("sde")
    with pytest.raises(ValueError, match=r"'dpm' takes no option nfe; it takes steps, method, "
                       r"callback and generator; for an NFE budget pass "
                       r"steps=model.steps_for_nfe\('dpm', nfe\)"):  # fmt: skip
        model.sample_with_nfe(3, sampler="dpm", nfe=6)
    with pytest.raises(ValueError, match="'pc' takes no option eta"):
        model.steps_for_nfe("pc", 10, eta=0.5)
    with pytest.raises(ValueError, match="'heun' takes no option rtol"):
        guide(small("sde", n_classes=2), 1, 2.0).sample(2, sampler="heun", rtol=1e-3)
    assert small("ddpm").sampler_options("ddim") == {
        "steps": 50,
        "eta": 0.0,
        "spacing": "trailing",
        "callback": None,
    }
    assert model.sampler_options("pc") == {
        "steps": 500, "snr": 0.16, "n_corrector": 1, "callback": None
    }  # fmt: skip


def test_em_and_ode_are_the_euler_maruyama_and_pf_ode_samplers() -> None:
    model = small("sde")
    for alias, name, opts in (("em", "euler-maruyama", {"steps": 5}), ("ode", "pf-ode", {})):
        with torch.no_grad():
            a = model.sample(3, sampler=alias, generator=torch.Generator().manual_seed(1), **opts)
            b = model.sample(3, sampler=name, generator=torch.Generator().manual_seed(1), **opts)
        assert torch.equal(a, b)
        assert model.sampler_options(alias) == model.sampler_options(name)
    assert "em" not in model.samplers  # the listing names each sampler once
    with pytest.raises(ValueError, match=r"accepts .*pf-ode \(and em = euler-maruyama"):
        model.sample(2, sampler="ancestral")
    with pytest.raises(ValueError, match="needs the score"):  # the alias of a refused sampler
        small("fm", ot_coupling=True).sample(2, sampler="em")


def test_an_nfe_budget_becomes_steps_and_adaptive_samplers_say_what_they_take() -> None:
    model = small("fm")
    assert model.steps_for_nfe("rk4", 41) == 10 and model.steps_for_nfe("pc", 9) == 4
    assert model.steps_for_nfe("pf-ode", 10) == 5  # pf-ode with steps runs heun
    assert model.steps_for_nfe("dpm", 12, method="3") == 4
    ncsn = small("ncsn", n_levels=4)  # steps: Langevin steps over all levels, then denoising
    for nfe in (8, 9, 13):
        steps = ncsn.steps_for_nfe("annealed-langevin", nfe)
        with torch.no_grad():
            used = ncsn.sample_with_nfe(2, sampler="annealed-langevin", steps=steps)[1]
        assert used <= nfe and used + 4 > nfe  # at most the budget, within one round of levels
    assert ncsn.steps_for_nfe("annealed-langevin", 8, denoise=False) == 8
    for sampler, opts in (("dopri5", {}), ("pf-ode", {"method": "dopri5"})):
        with pytest.raises(ValueError, match=r"adaptive: rtol/atol set its NFE \(--rtol/--atol"):
            model.steps_for_nfe(sampler, 10, **opts)


def test_a_sampler_entry_must_have_a_typed_keyword_signature() -> None:
    def good(m: Any, x: Tensor, *, steps: int = 3, generator: Any = None, callback: Any = None):
        return x, steps

    def no_callback(m: Any, x: Tensor, *, steps: int = 3, generator: Any = None):
        return x, steps

    def loose(m: Any, x: Tensor, *, steps: int = 3, generator=None, callback=None, **kw: Any):
        return x, steps

    def positional(m: Any, x: Tensor, steps: int = 3, *, generator=None, callback=None):
        return x, steps

    assert SamplerEntry(good, lambda o: 1).options == {"steps": 3, "callback": None}
    for bad in (no_callback, loose, positional):
        with pytest.raises(TypeError, match="keyword-only with a default"):
            SamplerEntry(bad, lambda o: 1)


@pytest.mark.parametrize("name", DIFFUSION)
@pytest.mark.parametrize("method", ["cfg", "classifier"])
def test_a_guided_model_samples_on_its_models_view(name: str, method: str) -> None:
    """The guided view is the model's view type with the model's fields, the predictions
    replaced by the guided ones: a field a new sampler adds cannot be missing."""
    model = small(name, n_classes=3 if method == "cfg" else 0)
    clf = build("noisy-classifier", dim=2, n_classes=3, hidden=[8], **model.schedule_config)
    guided = guide(model, 1, 2.0, method=method, classifier=clf if method != "cfg" else None)
    view, gview = model.sampling_view(), guided.sampling_view()
    assert type(gview) is type(view)
    x, t = torch.randn(4, 2), torch.full((4,), 0.5)
    for f in dataclasses.fields(view):
        mine, theirs = getattr(view, f.name), getattr(gview, f.name)
        if f.name in ("eps", "x0", "score", "velocity"):
            torch.testing.assert_close(theirs(x, t), getattr(guided, f.name)(x, t))
            assert not torch.allclose(theirs(x, t), mine(x, t))  # guidance changes them
        elif f.name == "time_grid":
            assert torch.equal(theirs(7, x), mine(7, x))
        elif isinstance(mine, Tensor):
            assert torch.equal(theirs, mine)
        else:
            assert theirs == mine
    assert guided.samplers == model.samplers and guided.default_sampler == model.default_sampler
    model.double(), clf.double()  # the view follows its model's (and classifier's) dtype
    assert guided.sample(2, sampler="heun", steps=2).dtype == torch.float64


@pytest.mark.parametrize("shape", [None, [1, 4, 4]])
@pytest.mark.parametrize("name", SAMPLING)
def test_samples_carry_a_graph_only_when_asked(name: str, shape: list[int] | None) -> None:
    kw: dict[str, Any] = {"n_steps": 3} if name == "ebm" else {}
    model = small(name, shape, **kw)
    assert any(p.requires_grad for p in model.parameters())
    opts: dict[str, Any] = {"sampler": "euler", "steps": 2} if name == "fm" else {}
    if name in ("sde", "ddpm", "ncsn"):
        opts = {"steps": 20 if name == "ncsn" else 2}
    x = model.sample(3, **opts)
    assert not x.requires_grad and x.numpy().shape == (3, *(shape or [2]))
    y = model.sample(3, grad=True, **opts)
    y.sum().backward()
    assert any(p.grad is not None for p in model.parameters())


@pytest.mark.parametrize("sampler", ["ancestral", "ddim"])
def test_ddpm_spacing_reaches_the_chain(sampler: str) -> None:
    """A few-step run starts at t = 1 with the default trailing spacing (Lin et al. 2024) and
    below it with the leading one: the first network call sees that time."""
    model = small("ddpm")
    seen: list[float] = []

    def record(x: torch.Tensor, t: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        seen.append(float(t[0]))
        return torch.zeros_like(x)

    model.predict = record  # type: ignore[method-assign]
    T = model.chain.T
    model.sample(2, sampler=sampler, steps=4)
    assert seen[0] == 1.0
    seen.clear()
    model.sample(2, sampler=sampler, steps=4, spacing="leading")
    assert seen[0] == pytest.approx((1 + 3 * T // 4) / T)
