"""Conditional models and guidance (Ho & Salimans 2022; Dhariwal & Nichol 2021; the seeds'
"Guidance" lecture), checked against Gaussian class-conditionals, where every quantity is
closed form (probpath.analytic)."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
from torch import Tensor, nn

from probpath.analytic import Gaussian, GaussianMixture
from probpath.guidance import classifier_log_prob_grad, guide
from probpath.models import MODELS, DiffusionModel, NoisyClassifier, build
from probpath.parametrize import convert
from probpath.paths import make_schedule

FAMILIES = ("ddpm", "ncsn", "sde", "fm")


class LabelRecorder(nn.Module):
    """A 'network' that predicts zeros and records the labels it was called with."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(()))
        self.seen: list[Tensor | None] = []

    def forward(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        self.seen.append(y)
        return self.w * x


@pytest.mark.parametrize("name", FAMILIES)
def test_conditional_config_round_trips(name: str) -> None:
    model = build(name, dim=2, hidden=[8], n_classes=4, p_uncond=0.25)
    assert isinstance(model, DiffusionModel) and model.conditional
    assert model.config["n_classes"] == 4 and model.config["p_uncond"] == 0.25
    again = build(name, **model.config)
    assert again.config == model.config
    again.load_state_dict(model.state_dict())  # the label embedding is part of the weights
    x, t, y = torch.randn(3, 2), torch.full((3,), 0.5), torch.tensor([0, 3, 4])
    torch.testing.assert_close(again.predict(x, t, y), model.predict(x, t, y))
    assert not build(name, dim=2, hidden=[8]).conditional


@pytest.mark.parametrize("name", FAMILIES)
def test_label_dropout_rate_matches_p_uncond(name: str) -> None:
    """Each row's label becomes the null label with probability p_uncond: the count of
    nulls among n rows is Binomial(n, p); accept within 5 standard deviations."""
    n, p, null = 20_000, 0.2, 3
    model = MODELS[name](dim=2, hidden=[8], n_classes=null, p_uncond=p)
    model.net = recorder = LabelRecorder()
    y = torch.randint(0, null, (n,), generator=torch.Generator().manual_seed(0))
    model.loss(torch.randn(n, 2), y=y, generator=torch.Generator().manual_seed(1))
    (seen,) = recorder.seen
    assert seen is not None
    dropped = seen == null
    assert abs(dropped.double().mean().item() - p) <= 5 * math.sqrt(p * (1 - p) / n)
    assert torch.equal(seen[~dropped], y[~dropped])  # the others keep their own label
    recorder.seen.clear()
    model.loss(torch.randn(8, 2))  # no labels: the null branch only
    assert recorder.seen == [None]


def test_labels_and_unconditional_models_do_not_mix() -> None:
    model = build("ddpm", dim=2, hidden=[8], schedule_kwargs={"T": 10})
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ValueError, match="unconditional"):
        model.loss(torch.randn(4, 2), y=y)
    with pytest.raises(ValueError, match="unconditional"):
        model.predict(torch.randn(4, 2), torch.rand(4), y)
    cond = build("ddpm", dim=2, hidden=[8], n_classes=2, schedule_kwargs={"T": 10})
    with pytest.raises(ValueError, match=r"in \[0, 2\]"):
        cond.loss(torch.randn(4, 2), y=y + 5)
    with pytest.raises(ValueError, match="p_uncond"):
        build("fm", n_classes=2, p_uncond=1.5)


# --- Gaussian class-conditionals: every guided quantity in closed form --------------------
K = 3
WEIGHTS = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
MEANS = torch.tensor([[-1.5, 0.0], [1.0, 1.0], [0.5, -1.5]], dtype=torch.float64)
COVS = torch.tensor(
    [[[0.3, 0.1], [0.1, 0.2]], [[0.2, 0.0], [0.0, 0.4]], [[0.25, -0.05], [-0.05, 0.15]]],
    dtype=torch.float64,
)
KINDS = ("eps", "x0", "score", "v", "velocity")


class Oracle:
    """p(x_0 | y = k) = N(m_k, S_k), p(y = k) = w_k, under the path of ``schedule``."""

    def __init__(self, schedule: str) -> None:
        self.schedule = make_schedule(schedule)
        self.mixture = GaussianMixture(WEIGHTS, MEANS, COVS, self.schedule)
        self.classes = [Gaussian(MEANS[k], COVS[k], self.schedule) for k in range(K)]

    def eps(self, x: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """E[eps | x_t, y] of each row's class; the null label K gives the mixture's."""
        rows = [c.eps_mean(x, t) for c in self.classes] + [self.mixture.eps_mean(x, t)]
        labels = torch.full((x.shape[0],), K) if y is None else y
        return torch.stack(rows)[labels, torch.arange(x.shape[0])]

    def net(self, kind: str) -> Callable[..., Tensor]:
        """The exact conditional network of ``kind`` (converted from eps)."""
        return lambda x, t, y=None: convert(self.eps(x, t, y), "eps", kind, x, self.schedule(t))

    def logits(self, x: Tensor, t: Tensor) -> Tensor:
        """log p(y = k, x_t): an exact noisy classifier (log_softmax gives p(k | x_t))."""
        joint = [c.log_prob(x, t) for c in self.classes]
        return torch.stack(joint, -1) + WEIGHTS.log()

    def tilted_score(self, x: Tensor, t: Tensor, y: int, gamma: float) -> Tensor:
        """∇_x log[p(y | x_t)^γ p_t(x)] by autograd of the closed-form densities."""
        x = x.detach().requires_grad_(True)
        log_p = self.mixture.log_prob(x, t)
        log_post = self.classes[y].log_prob(x, t) + WEIGHTS[y].log() - log_p
        return torch.autograd.grad((gamma * log_post + log_p).sum(), x)[0]


def _points(schedule: str) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(3)
    x = 1.5 * torch.randn(64, 2, generator=g, dtype=torch.float64)
    t = 0.05 + 0.9 * torch.rand(64, generator=g, dtype=torch.float64)
    return x, t


# float64 closed forms and conversions: agreement to rounding, far above any real error
# (a wrong sign or a missing sigma changes the score by O(1))
TOL = dict(rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("schedule", ["vp", "ot"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gamma", [0.0, 1.0, 3.0])
def test_classifier_free_guided_score_is_the_tilted_score(
    schedule: str, kind: str, gamma: float
) -> None:
    oracle = Oracle(schedule)
    model = DiffusionModel(
        dim=2, schedule=schedule, prediction=kind, n_classes=K, net=oracle.net(kind)
    ).double()
    x, t = _points(schedule)
    guided = guide(model, 1, gamma)
    torch.testing.assert_close(guided.score(x, t), oracle.tilted_score(x, t, 1, gamma), **TOL)


@pytest.mark.parametrize("schedule", ["vp", "ot"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("gamma", [0.0, 1.0, 3.0])
def test_classifier_guided_score_is_the_tilted_score(
    schedule: str, kind: str, gamma: float
) -> None:
    oracle = Oracle(schedule)
    model = DiffusionModel(dim=2, schedule=schedule, prediction=kind, net=oracle.net(kind))
    clf = NoisyClassifier(dim=2, n_classes=K, schedule=schedule, net=oracle.logits)
    x, t = _points(schedule)
    y = torch.tensor([0, 2] * 32)  # one label per row
    guided = guide(model.double(), y, gamma, method="classifier", classifier=clf.double())
    expected = torch.empty_like(x)
    expected[0::2] = oracle.tilted_score(x[0::2], t[0::2], 0, gamma)
    expected[1::2] = oracle.tilted_score(x[1::2], t[1::2], 2, gamma)
    torch.testing.assert_close(guided.score(x, t), expected, **TOL)
    # and in the model's own kind: the seeds' eps - γ σ ∇log p(y | x_t) for an eps model
    if kind == "eps":
        sigma = model.schedule(t).sigma[:, None]
        with torch.no_grad():
            grad = classifier_log_prob_grad(oracle.logits, y)(x, t)
        torch.testing.assert_close(guided.predict(x, t), oracle.eps(x, t) - gamma * sigma * grad)


@pytest.mark.parametrize("method", ["cfg", "classifier"])
def test_guided_pf_ode_likelihood_at_scale_one_is_the_class_density(method: str) -> None:
    """γ = 1 tilts p_t to p_t(x | y) at every t, so the guided PF-ODE carries the class's
    law at t_max to its law at t_min: log_prob(x) = log p_{t_min}(x | y) + [log prior(z) -
    log p_{t_max}(z | y)], z = encode(x) (the bracket: the prior is N(0, I), not the exact
    law at t_max). dopri5 at rtol = atol = 1e-6 leaves an error near 1e-6 (1.4e-7 at 1e-7:
    it scales with the tolerance); allow 1e-5. γ = 1.2 is off by 0.4."""
    oracle = Oracle("vp")
    n_classes = K if method == "cfg" else 0
    model = DiffusionModel(dim=2, schedule="vp", n_classes=n_classes, net=oracle.net("eps"))
    clf = NoisyClassifier(dim=2, n_classes=K, schedule="vp", net=oracle.logits)
    classifier = clf.double() if method == "classifier" else None
    guided = guide(model.double(), 2, 1.0, method=method, classifier=classifier)
    x = oracle.classes[2].sample(4, generator=torch.Generator().manual_seed(0))
    log_p = guided.log_prob(x, rtol=1e-6, atol=1e-6)
    z = guided.encode(x, rtol=1e-9, atol=1e-9)
    law = oracle.classes[2]
    exact = law.log_prob(x, model.t_min) + guided.prior_log_prob(z) - law.log_prob(z, model.t_max)
    torch.testing.assert_close(log_p, exact, rtol=0, atol=1e-5)


def test_scale_one_is_the_conditional_and_zero_the_unconditional_model() -> None:
    torch.manual_seed(0)
    model = build("ddpm", dim=2, hidden=[16], n_classes=4, schedule_kwargs={"T": 10})
    x, t, y = torch.randn(5, 2), torch.rand(5), torch.tensor([0, 1, 2, 3, 1])
    with torch.no_grad():
        # lerp is exact at weights 0 and 1; the batched call may round differently (float32)
        torch.testing.assert_close(guide(model, y, 1.0).predict(x, t), model.predict(x, t, y))
        torch.testing.assert_close(guide(model, y, 0.0).predict(x, t), model.predict(x, t))


def test_classifier_free_guidance_is_one_batched_call_per_evaluation() -> None:
    model = build("fm", dim=2, hidden=[8], n_classes=3)
    calls: list[int] = []
    model.net.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[0]))
    guided = guide(model, 2, 4.0)
    with torch.no_grad():
        guided.predict(torch.randn(7, 2), torch.rand(7))
        assert calls == [14]  # both branches in one call of 2 x 7 rows
        for sampler, steps in [("euler", 5), ("rk4", 2), ("heun", 3)]:
            calls.clear()
            _, nfe = guided.sample_with_nfe(7, sampler=sampler, steps=steps)
            assert calls == [14] * nfe  # the NFE reported counts the batched calls


def test_classifier_gradient_matches_finite_differences() -> None:
    """Central differences of log p(y | x_t) in float64: truncation O(h^2) ~ 1e-12 and
    rounding ~ 1e-16 / h ~ 1e-10 for h = 1e-6; accept 1e-7."""
    torch.manual_seed(0)
    clf = NoisyClassifier(dim=2, n_classes=3, hidden=[16, 16]).double()
    x = torch.randn(5, 2, dtype=torch.float64)
    t, y = torch.rand(5, dtype=torch.float64), torch.tensor([0, 1, 2, 1, 0])
    with torch.no_grad():  # the gradient is taken inside, also without a graph
        grad = classifier_log_prob_grad(clf, y)(x, t)
        h, fd = 1e-6, torch.empty_like(x)
        for j in range(2):
            e = torch.zeros_like(x)
            e[:, j] = h
            fd[:, j] = (clf.log_prob_y(x + e, t, y) - clf.log_prob_y(x - e, t, y)) / (2 * h)
    assert not grad.requires_grad
    torch.testing.assert_close(grad, fd, rtol=0, atol=1e-7)


def test_guide_errors_teach() -> None:
    uncond = build("sde", dim=2, hidden=[8])
    cond = build("sde", dim=2, hidden=[8], n_classes=3)
    clf = NoisyClassifier(dim=2, n_classes=3, hidden=[8], **cond.schedule_config)
    with pytest.raises(ValueError, match="needs a conditional model"):
        guide(uncond, 0, 2.0)
    with pytest.raises(ValueError, match="needs a classifier"):
        guide(uncond, 0, 2.0, method="classifier")
    with pytest.raises(ValueError, match="takes no classifier"):
        guide(cond, 0, 2.0, classifier=clf)
    other = NoisyClassifier(dim=2, n_classes=3, hidden=[8], schedule="vp", schedule_kwargs={})
    with pytest.raises(ValueError, match="model's path"):  # sigma_max 10 against 1
        guide(build("sde", sde="ve", hidden=[8]), 0, 2.0, method="classifier", classifier=other)
    with pytest.raises(ValueError, match=r"in \[0, 2\]"):
        guide(cond, 3, 2.0)  # the null label is not a class
    with pytest.raises(ValueError, match=r"in \[0, 2\]"):
        guide(uncond, torch.tensor([0, -1]), 2.0, method="classifier", classifier=clf)
    with pytest.raises(ValueError, match="method"):
        guide(cond, 0, 2.0, method="cfg++")
    with pytest.raises(ValueError, match="finite"):
        guide(cond, 0, float("nan"))
    with pytest.raises(ValueError, match="OT-coupled"):
        fm = build("fm", hidden=[8], ot_coupling=True)
        guide(fm, 0, 1.0, method="classifier", classifier=NoisyClassifier(**fm.schedule_config))
    guided = guide(cond, torch.tensor([0, 1]), 2.0)
    with pytest.raises(ValueError, match="cannot guide a batch of 3"):
        guided.sample(3)
    with pytest.raises(ValueError, match="fixed by guide"):
        guided.predict(torch.zeros(2, 2), torch.rand(2), torch.tensor([0, 1]))


@pytest.mark.parametrize("schedule", ["ddpm-linear", "ddpm-cosine"])
def test_classifier_on_a_ddpm_chain_sees_the_chain_noise(schedule: str) -> None:
    """At t = i / T the classifier's path is the chain's q(x_i | x_0): (sqrt(abar_i),
    sqrt(1 - abar_i)); its default times cover the chain from i = 1 to T."""
    model = build("ddpm", hidden=[8], schedule=schedule, schedule_kwargs={"T": 50})
    clf = NoisyClassifier(n_classes=2, hidden=[8], **model.schedule_config)
    i = torch.arange(1, 51)
    mean_coef, var = model.chain.marginal(i)
    s = clf.path.marginal_params(i.double() / 50)
    torch.testing.assert_close(s.alpha, mean_coef, rtol=1e-12, atol=0)
    torch.testing.assert_close(s.sigma, var.sqrt(), rtol=1e-12, atol=0)
    assert (clf.t_min, clf.t_max) == (model.t_min, model.t_max)
    guide(model, 1, 2.0, method="classifier", classifier=clf)  # the paths agree


def test_classifier_config_loss_and_accuracy() -> None:
    clf = build("noisy-classifier", dim=2, n_classes=3, hidden=[8], schedule="ot")
    assert isinstance(clf, NoisyClassifier)
    assert build("noisy-classifier", **clf.config).config == clf.config
    x, y = torch.randn(6, 2), torch.tensor([0, 1, 2, 2, 1, 0])
    loss, logs = clf.loss(x, y=y, generator=torch.Generator().manual_seed(0))
    assert sorted(logs) == ["acc", "ce"] and loss.item() == logs["ce"] > 0
    # logits b + alpha(t) h: at t = 1 of CondOT (alpha = 0) the learned prior b alone
    prior = clf(torch.randn(4, 2), torch.ones(4))
    assert torch.equal(prior, prior[:1].expand(4, 3))
    assert not torch.equal(clf(x, torch.full((6,), 0.5)), prior[:1].expand(6, 3))
    # logits z = 2 one_hot(y): cross-entropy log(2 + e^2) - 2 on every row, accuracy 1
    exact = NoisyClassifier(n_classes=3, net=lambda x, t: 2.0 * nn.functional.one_hot(y, 3))
    loss, logs = exact.loss(x, y=y)
    assert math.isclose(logs["ce"], math.log1p(2 * math.exp(-2)), rel_tol=1e-6)
    assert logs["acc"] == exact.accuracy(x, y) == 1.0
    assert exact.accuracy(x, (y + 1) % 3) == 0.0
    with pytest.raises(ValueError, match="pass y"):
        clf.loss(x)
    with pytest.raises(ValueError, match=r"in \[0, 2\]"):
        clf.loss(x, y=y + 1)
    with pytest.raises(ValueError, match="n_classes >= 2"):
        NoisyClassifier(n_classes=1)


def _fit(model: nn.Module, x: Tensor, y: Tensor, steps: int, g: torch.Generator) -> list[float]:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        idx = torch.randint(0, x.shape[0], (128,), generator=g)
        loss, _ = model.loss(x[idx], y=y[idx], generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def test_a_small_conditional_model_and_classifier_learn_to_guide() -> None:
    """Two classes at x_1 = -2 and +2 (std 0.3). After 150 Adam steps the conditional flow
    matching model puts (nearly) every γ = 1 sample on its label's side (a wrong side
    would need a 6.7-std error), γ = 3 sharpens the law (smaller spread), and a noisy
    classifier guides the null branch to the right side too."""
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    y = torch.arange(512) % 2
    x = torch.stack([4.0 * y - 2.0, torch.zeros(512)], 1) + 0.3 * torch.randn(512, 2, generator=g)
    model = build("fm", dim=2, hidden=[32, 32], n_classes=2)
    losses = _fit(model, x, y, 150, g)
    assert sum(losses[-20:]) < 0.7 * sum(losses[:20])
    clf = NoisyClassifier(n_classes=2, hidden=[16], **model.schedule_config)
    _fit(clf, x, y, 100, g)
    assert clf.accuracy(x, y) > 0.99
    opts = dict(sampler="euler", steps=20, generator=g)
    with torch.no_grad():
        for label, side in [(0, -1.0), (1, 1.0)]:
            plain = guide(model, label, 1.0).sample(200, **opts)[:, 0]
            sharp = guide(model, label, 3.0).sample(200, **opts)[:, 0]
            assert (plain * side > 0).double().mean() > 0.95
            assert sharp.std() < 0.5 * plain.std()
            by_clf = guide(model, label, 3.0, method="classifier", classifier=clf)
            assert (by_clf.sample(200, **opts)[:, 0] * side > 0).double().mean() > 0.95
