"""Every family on images (batch, 1, 8, 8): the shape contract (loss, every sampler,
likelihoods, trajectories, config and state-dict round trips), the vector networks'
state-dict names kept, and the trace choice of ``trace="auto"``."""

from __future__ import annotations

import itertools
import json
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from probpath.models import EXACT_TRACE_MAX_DIM, MODELS, DiffusionModel, build
from probpath.models._sampling import _Recorder
from probpath.models._shape import data_shape, resolve_trace

SHAPE = [1, 8, 8]
UNET = {"base_channels": 8, "channel_mult": [1, 2]}  # 8 -> 4 pixels, widths 8, 16
SMALL: dict[str, dict[str, Any]] = {  # tiny image models of each family
    "ddpm": {"schedule_kwargs": {"T": 20}, "levels": 17, "net_config": UNET},
    "ncsn": {"n_levels": 3, "net_config": UNET},
    "sde": {"net_config": UNET},
    "fm": {"net_config": UNET},
    "cnf": {"net_config": {"hidden": [4, 4]}},
    "ebm": {"net_config": {"hidden": [4, 8]}, "n_steps": 3},
    "noisy-classifier": {"n_classes": 3, "net_config": UNET},
    "image-classifier": {"n_classes": 3, "channels": [4], "features": 8},
}
DIFFUSION = ("ddpm", "ncsn", "sde", "fm")


def image_model(name: str, **kw: Any) -> Any:
    """A tiny image model with its zero-initialised layers drawn at random: an untrained
    U-Net predicts 0 (the score-norm step rule of "pc" would be infinite) and ignores its
    time and label (guidance would change nothing)."""
    torch.manual_seed(0)
    model = build(name, **{"shape": SHAPE, **SMALL[name], **kw})
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                nn.init.normal_(p, std=0.1)
    return model


def grid_images(n: int, levels: int = 17) -> Tensor:
    """Images on the K-level grid of ``to_centered``."""
    k = torch.randint(0, levels, (n, *SHAPE), generator=torch.Generator().manual_seed(1))
    return k * (2 / (levels - 1)) - 1.0


@pytest.mark.parametrize("name", DIFFUSION)
def test_a_diffusion_family_works_on_images_with_every_sampler(name: str) -> None:
    model = image_model(name)
    assert model.config["net"] == "unet" and type(model.net).__name__ == "UNet"
    x = grid_images(4)
    loss, _ = model.loss(x, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        for sampler in model.samplers:
            adaptive = sampler in ("pf-ode", "dopri5")
            opts = {"rtol": 1e-3, "atol": 1e-3} if adaptive else {"steps": 3}
            s, nfe = model.sample_with_nfe(2, sampler=sampler, **opts)
            assert s.shape == (2, *SHAPE) and nfe > 0, sampler
            assert torch.isfinite(s).all(), sampler
        fixed = {"method": "rk4", "options": {"step_size": 0.25}}  # the shapes, cheaply
        lp = model.log_prob(x[:2], generator=torch.Generator(), **fixed)
        assert lp.shape == (2,) and torch.isfinite(lp).all()
        # the default sampler; an adaptive one (fm's dopri5) reports on a 3-interval grid
        opts = {"rtol": 1e-3, "atol": 1e-3} if name == "fm" else {"steps": 6}
        assert model.trajectories(3, n_times=4, **opts).shape == (4, 3, *SHAPE)
        assert model.encode(x[:2], rtol=1e-3, atol=1e-3).shape == (2, *SHAPE)


@pytest.mark.parametrize("name", list(SMALL))
def test_config_and_state_dict_round_trip_on_images(name: str) -> None:
    model = image_model(name)
    config = json.loads(json.dumps(model.config))
    assert config["shape"] == SHAPE and config["dim"] == 64
    clone = build(name, **config)
    assert clone.config == config
    clone.load_state_dict(model.state_dict())
    x = grid_images(3)
    if name in ("noisy-classifier", "image-classifier"):
        t = torch.full((3,), 0.5)
        a, b = (m(x, t) if name == "noisy-classifier" else m.features(x) for m in (model, clone))
    elif name == "ebm":
        a, b = model.energy(x), clone.energy(x)
    else:
        a, b = model.net(x, torch.full((3,), 0.5)), clone.net(x, torch.full((3,), 0.5))
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_the_vector_networks_keep_their_state_dict_names() -> None:
    """Checkpoints of vector models written before images existed still load."""
    mlp = {"net.layers.0.weight", "net.layers.0.bias", "net.layers.1.weight", "net.layers.1.bias"}
    for name in ("ddpm", "sde", "fm", "ncsn", "cnf", "ebm"):
        assert set(build(name, dim=2, hidden=[8]).state_dict()) == mlp, name
    clf = build("noisy-classifier", dim=2, hidden=[8])
    assert set(clf.state_dict()) == {"net.log_prior"} | {k.replace("net.", "net.net.") for k in mlp}
    old = {k: v for k, v in build("sde", dim=2, hidden=[8]).config.items()
           if k not in ("shape", "net", "net_config")}  # fmt: skip
    assert build("sde", **old).config["net"] == "mlp"  # an old config rebuilds the MLP


def test_trajectories_keep_equally_spaced_states_of_the_sampler() -> None:
    """Through the sampler's callback: the start, the samples, and states in between whose
    step numbers are increasing and nearly equally spaced; memory stays at 2 n + 1 states."""
    model = build("fm", dim=2, net=lambda x, t: -x)
    z = model.prior_sample(3, generator=torch.Generator().manual_seed(0))
    states = [z]  # the same start, and every state of the (deterministic) sampler after it
    model.sample(3, generator=torch.Generator().manual_seed(0), sampler="euler", steps=200,
                 callback=lambda k, x: states.append(x))  # fmt: skip
    path = model.trajectories(z, n_times=5, sampler="euler", steps=200)
    where = [next(i for i, s in enumerate(states) if torch.equal(s, p)) for p in path]
    gaps = [b - a for a, b in itertools.pairwise(where)]
    assert where[0] == 0 and where[-1] == 200 and min(gaps) >= 25 and max(gaps) <= 100, where
    record = _Recorder(z, 5)
    for k in range(1000):
        record(k, z)
        assert len(record.kept) <= 11
    with pytest.raises(ValueError, match="n_times can be at most 4"):
        model.trajectories(z, n_times=5, sampler="euler", steps=3)


def test_dim_and_shape_agree_and_bad_shapes_teach() -> None:
    assert data_shape(None, None) == (2,) and data_shape(5, None) == (5,)
    assert build("fm", dim=64, shape=SHAPE, net_config=UNET).shape == (1, 8, 8)
    with pytest.raises(ValueError, match=r"dim=10 disagrees with shape \[1, 8, 8\]"):
        build("fm", dim=10, shape=SHAPE)
    with pytest.raises(ValueError, match=r"\[D\] \(vectors\) or \[C, H, W\]"):
        build("sde", shape=[8, 8])
    with pytest.raises(ValueError, match=r"x must have shape \(batch, 1, 8, 8\)"):
        image_model("sde").loss(torch.zeros(2, 64))
    with pytest.raises(ValueError, match="use net='mlp'"):
        build("sde", dim=2, net="unet")
    mlp = build("sde", shape=SHAPE, net="mlp", hidden=[16])  # an MLP on flattened images
    assert mlp.config["net"] == "mlp" and mlp.sample(2, steps=2).shape == (2, *SHAPE)


def test_auto_trace_is_exact_in_low_dimension_only() -> None:
    assert EXACT_TRACE_MAX_DIM == 3
    assert [resolve_trace("auto", d) for d in (1, 3, 4, 64)] == ["exact"] * 2 + ["hutchinson"] * 2
    assert build("cnf", dim=2, hidden=[4]).config["trace"] == "exact"
    assert build("cnf", dim=4, hidden=[4]).config["trace"] == "hutchinson"
    assert image_model("cnf").config["trace"] == "hutchinson"
    assert build("cnf", shape=SHAPE, trace="exact").config["trace"] == "exact"
    with pytest.raises(ValueError, match="'auto', 'exact' or 'hutchinson'"):
        build("cnf", trace="stochastic")


def test_image_cnf_trains_samples_and_averages_probes() -> None:
    model = image_model("cnf")
    assert type(model.net).__name__ == "ConvField"
    x = grid_images(4)
    loss, logs = model.loss(x, generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert logs["nfe"] > 0 and all(p.grad is not None for p in model.parameters())
    with torch.no_grad():
        assert model.sample(2).shape == (2, *SHAPE)
        assert model.trajectories(2, 3).shape == (3, 2, *SHAPE)
        g = torch.Generator().manual_seed(3)
        assert model.log_prob(x, generator=g, n_probes=3).shape == (4,)


def test_hutchinson_log_prob_of_an_image_cnf_is_unbiased() -> None:
    """On 1x2x2 images the exact trace is cheap: the mean of Hutchinson's estimates over
    n probes lies within 4 standard errors (estimated from the probes) of the exact value."""
    torch.manual_seed(2)
    kw = dict(shape=[1, 2, 2], net_config={"hidden": [6]}, rtol=1e-7, atol=1e-7)
    exact = build("cnf", trace="exact", **kw).double()
    hutch = build("cnf", trace="hutchinson", **kw).double()
    hutch.load_state_dict(exact.state_dict())
    x = torch.randn(1, 1, 2, 2, dtype=torch.float64)
    with torch.no_grad():
        want = exact.log_prob(x)
        n = 400
        draws = hutch.log_prob(x.expand(n, -1, -1, -1), generator=torch.Generator().manual_seed(0))
        mean = hutch.log_prob(x, n_probes=n, generator=torch.Generator().manual_seed(0))
    assert draws.std() > 0  # the estimates are random
    torch.testing.assert_close(mean, draws.mean().reshape(1), rtol=1e-6, atol=1e-6)
    assert abs(float(mean - want)) < 4 * float(draws.std()) / n**0.5


@pytest.mark.parametrize("objective", ["ssm", "dsm"])
def test_image_ebm_fits_by_a_scalable_objective_and_samples(objective: str) -> None:
    model = image_model("ebm", objective=objective)
    assert type(model.net).__name__ == "ConvEnergy"
    loss, logs = model.loss(grid_images(4), generator=torch.Generator().manual_seed(0))
    loss.backward()
    assert set(logs) == {objective}
    no_grad = {n for n, p in model.named_parameters() if p.grad is None}
    assert no_grad == {"net.head.bias"}  # a constant energy shift leaves the score unchanged
    assert model.sample(2).shape == (2, *SHAPE)
    assert model.trajectories(2, 3).shape == (3, 2, *SHAPE)
    defaults = build("ebm", shape=SHAPE, net_config=SMALL["ebm"]["net_config"]).config
    assert (defaults["step_size"], defaults["n_steps"]) == (1e-3, 1000)
    vector = build("ebm", dim=2).config
    assert (vector["step_size"], vector["n_steps"]) == (0.005, 1000)
    with pytest.raises(ValueError, match="only practical in 2-D"):
        model.log_prob(grid_images(2))
    with pytest.raises(ValueError, match="use objective='ssm'"):
        build("ebm", shape=SHAPE, objective="ism")


@pytest.mark.parametrize("method", ["cfg", "classifier"])
def test_guidance_on_an_image_model(method: str) -> None:
    from probpath.guidance import guide

    model = image_model("fm", n_classes=3 if method == "cfg" else 0)
    clf = None
    if method == "classifier":
        clf = image_model("noisy-classifier", **model.schedule_config)
        assert type(clf.net.net).__name__ == "UNetEncoder"
    guided = guide(model, 1, 3.0, method=method, classifier=clf)
    x, t = grid_images(2), torch.full((2,), 0.5)
    assert not torch.allclose(guided.velocity(x, t), model.velocity(x, t))
    with torch.no_grad():
        for sampler in ("euler", "heun"):
            assert guided.sample(2, sampler=sampler, steps=2).shape == (2, *SHAPE)
        assert guided.trajectories(2, 3, sampler="euler", steps=4).shape == (3, 2, *SHAPE)
    if clf is not None:
        other = image_model("noisy-classifier", shape=[1, 4, 4], **model.schedule_config)
        with pytest.raises(ValueError, match=r"shape \[1, 8, 8\]"):
            guide(model, 1, 3.0, method="classifier", classifier=other)


def test_the_image_classifier_learns_a_separable_toy_set() -> None:
    """Class 0: a bright left half, class 1: a bright right half, both with pixel noise."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 2
    x = -torch.ones(64, *SHAPE)
    x[y == 0, :, :, :4], x[y == 1, :, :, 4:] = 1.0, 1.0
    x = x + 0.3 * torch.randn(x.shape, generator=g)
    torch.manual_seed(0)
    clf = build("image-classifier", shape=SHAPE, n_classes=2, channels=[4], features=8, shift=1)
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
    for _ in range(30):
        opt.zero_grad()
        loss, logs = clf.loss(x, y=y, generator=g)
        loss.backward()
        opt.step()
    assert clf.accuracy(x, y) == 1.0 and logs["ce"] < 0.2
    assert clf.features(x).shape == (64, 8) and clf.logits(x).shape == (64, 2)
    for side, shift in ((8, 0), (28, 2)):  # the default translation: min(H, W) // 14
        assert build("image-classifier", shape=[1, side, side]).config["shift"] == shift
    with pytest.raises(ValueError, match=r"give shape=\[C, H, W\]"):
        build("image-classifier", dim=64)
    with pytest.raises(ValueError, match="pass y"):
        clf.loss(x)


def test_every_registered_family_takes_images() -> None:
    assert set(SMALL) == set(MODELS)
    assert all(isinstance(image_model(n), DiffusionModel) for n in DIFFUSION)
