"""The trainer on a model whose optimum is known in closed form.

``DiagGaussian`` is a diagonal Gaussian N(mu, diag(exp(2 log_std))) fulfilling the
GenerativeModel contract. Its maximum-likelihood solution is the sample mean and the
(biased) sample standard deviation, so the trainer's answer can be checked exactly.
With ``noise > 0`` its loss is stochastic (Gaussian data augmentation drawn from the
``generator`` the trainer passes), which is what exact resumption must reproduce.
"""

from __future__ import annotations

import json
import math
import signal

import pytest
import torch
from torch import Tensor, nn

from probpath.train import (
    EMA,
    NonFiniteLossError,
    TrainConfig,
    latest_checkpoint,
    load_checkpoint,
    lr_factor,
    train,
)


class DiagGaussian(nn.Module):
    def __init__(self, dim: int = 2, noise: float = 0.0, fail_at: int = 0, fail=None) -> None:
        super().__init__()
        self.config = {"dim": dim, "noise": noise}
        self.mu = nn.Parameter(torch.zeros(dim, dtype=torch.float64))
        self.log_std = nn.Parameter(torch.zeros(dim, dtype=torch.float64))
        self.noise = noise
        self.calls = 0
        self.fail_at = fail_at  # on this call, raise/return `fail`
        self.fail = fail

    def log_prob(self, x: Tensor) -> Tensor:
        z = (x - self.mu) / self.log_std.exp()
        return (-0.5 * z**2 - self.log_std - 0.5 * math.log(2 * math.pi)).sum(-1)

    def loss(self, x: Tensor, *, generator: torch.Generator | None = None):
        self.calls += 1
        if self.calls == self.fail_at and self.fail == "sigint":
            signal.raise_signal(signal.SIGINT)  # as if the user pressed Ctrl-C now
        elif self.calls == self.fail_at:
            if isinstance(self.fail, type) and issubclass(self.fail, BaseException):
                raise self.fail
            return torch.tensor(self.fail, dtype=x.dtype) * self.mu.sum(), {}
        if self.noise:
            x = x + self.noise * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return -self.log_prob(x).mean(), {"nfe": 2.0}

    def sample(self, n: int, *, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(n, self.mu.numel(), generator=generator, dtype=self.mu.dtype)
        return self.mu + self.log_std.exp() * eps


def _data(n: int = 203, seed: int = 0) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g, dtype=torch.float64) * torch.tensor([0.5, 2.0]) + 1.0


def _params(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_recovers_closed_form_mle(tmp_path):
    n = 1000
    data = _data(n)
    cfg = TrainConfig(
        steps=600,
        batch_size=n,
        lr=0.05,
        schedule="cosine",
        ema_decay=0.0,
        grad_clip=0.0,
        checkpoint_every=10_000,
        log_every=100,
    )
    model = DiagGaussian()
    train(model, data, cfg, tmp_path, progress=False)
    mean, std = data.mean(0), data.std(0, unbiased=False)
    # The optimisation error must be far below the statistical error of the MLE itself:
    # SE(mean) = std / sqrt(n), SE(log std) = 1 / sqrt(2 n). Allow 5 % of it.
    torch.testing.assert_close(
        model.mu.detach(), mean, rtol=0, atol=0.05 * float(std.min()) / n**0.5
    )
    torch.testing.assert_close(
        model.log_std.detach(), std.log(), rtol=0, atol=0.05 / (2 * n) ** 0.5
    )


def _stochastic_cfg(**kw) -> TrainConfig:
    # Every option that carries state across steps is on: warm-up + cosine schedule,
    # clipping, EMA, a batch that does not divide n (epochs straddle batches).
    base = dict(
        steps=24,
        batch_size=32,
        lr=0.05,
        warmup_steps=5,
        schedule="cosine",
        grad_clip=0.5,
        ema_decay=0.9,
        checkpoint_every=5,
        log_every=3,
        seed=3,
    )
    return TrainConfig(**{**base, **kw})


def test_resume_reproduces_uninterrupted_run_bit_for_bit(tmp_path):
    # The first part stops by asking for 12 steps (a multiple of log_every), so the
    # schedule must not depend on `steps` (cosine would; the Ctrl-C test covers cosine).
    data = _data()
    kw = {"schedule": "constant"}
    full = DiagGaussian(noise=0.3)
    ref = train(full, data, _stochastic_cfg(**kw), tmp_path / "a", progress=False)
    part = DiagGaussian(noise=0.3)
    first = train(part, data, _stochastic_cfg(steps=12, **kw), tmp_path / "b", progress=False)
    assert first.step == 12
    again = DiagGaussian(noise=0.3)  # a fresh process would start from a fresh model
    rest = train(again, data, _stochastic_cfg(**kw), tmp_path / "b", resume=True, progress=False)
    assert rest.step == 24
    assert first.losses + rest.losses == ref.losses  # exact equality, not closeness
    for p, q in zip(full.parameters(), again.parameters(), strict=True):
        assert torch.equal(p, q)
    ema_a = load_checkpoint(tmp_path / "a" / "checkpoints").ema
    ema_b = load_checkpoint(tmp_path / "b" / "checkpoints").ema
    assert ema_a is not None and ema_b is not None
    assert all(torch.equal(ema_a[k], ema_b[k]) for k in ema_a)
    # metrics.jsonl of the resumed run holds each step once, as the uninterrupted one.
    lines_a = (tmp_path / "a" / "metrics.jsonl").read_text().splitlines()
    lines_b = (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()
    steps_a = [json.loads(s)["step"] for s in lines_a]
    assert steps_a == [json.loads(s)["step"] for s in lines_b]
    assert [json.loads(s)["loss"] for s in lines_a] == [json.loads(s)["loss"] for s in lines_b]


def test_seed_changes_the_stochastic_loss(tmp_path):
    # Guards the test above: the loss really draws from the trainer's generator.
    data = _data()
    a = train(
        DiagGaussian(noise=0.3), data, _stochastic_cfg(steps=3), tmp_path / "a", progress=False
    )
    b = train(
        DiagGaussian(noise=0.3),
        data,
        _stochastic_cfg(steps=3, seed=4),
        tmp_path / "b",
        progress=False,
    )
    assert a.losses != b.losses


@pytest.mark.parametrize("how", ["exception", "signal"])
def test_ctrl_c_writes_checkpoint_and_resume_continues(tmp_path, capsys, how):
    # "exception": KeyboardInterrupt raised inside step 8, which is abandoned (checkpoint
    # at 7); "signal": a real SIGINT during step 8 is deferred until the step is done
    # (checkpoint at 8). Either way the resumed run equals the uninterrupted one.
    data = _data()
    ref = train(DiagGaussian(noise=0.3), data, _stochastic_cfg(), tmp_path / "a", progress=False)
    fail = KeyboardInterrupt if how == "exception" else "sigint"
    model = DiagGaussian(noise=0.3, fail_at=8, fail=fail)
    with pytest.raises(KeyboardInterrupt):
        train(model, data, _stochastic_cfg(), tmp_path / "b", progress=False)
    done = 7 if how == "exception" else 8
    assert f"interrupted after step {done}" in capsys.readouterr().out
    ck = latest_checkpoint(tmp_path / "b" / "checkpoints")
    assert ck is not None and ck.name == f"step_{done:08d}"
    rest = train(
        DiagGaussian(noise=0.3),
        data,
        _stochastic_cfg(),
        tmp_path / "b",
        resume=True,
        progress=False,
    )
    assert rest.losses == ref.losses[done:]


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path, bad):
    model = DiagGaussian(fail_at=8, fail=bad)
    with pytest.raises(NonFiniteLossError, match=r"step 8 is not finite.*step_00000005"):
        train(model, _data(), _stochastic_cfg(), tmp_path, progress=False)
    ck = load_checkpoint(tmp_path / "checkpoints")
    assert ck.step == 5
    assert all(torch.isfinite(v).all() for v in ck.model.values())


def test_metrics_log_eval_and_lr_schedule(tmp_path):
    data, held_out = _data(), _data(100, seed=1)
    cfg = _stochastic_cfg(steps=12, eval_every=6)
    out = train(DiagGaussian(), data, cfg, tmp_path, eval_data=held_out, progress=False)
    recs = [json.loads(s) for s in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if r["split"] == "train"]
    eval_recs = [r for r in recs if r["split"] == "eval"]
    assert [r["step"] for r in train_recs] == [3, 6, 9, 12]
    assert [r["step"] for r in eval_recs] == [6, 12]
    for r in train_recs:
        assert r["lr"] == pytest.approx(cfg.lr * lr_factor(r["step"], cfg), rel=1e-12)
        assert r["nfe"] == 2.0 and r["it_s"] > 0
    # The evaluation runs on the EMA weights: recompute it from the checkpoint.
    ck = load_checkpoint(tmp_path / "checkpoints")
    assert ck.ema is not None
    m = DiagGaussian()
    m.load_state_dict(ck.ema)
    nll = float(-m.log_prob(held_out).mean().detach())
    assert out.eval["nll"] == pytest.approx(nll, rel=1e-12)
    assert eval_recs[-1]["eval_nll"] == out.eval["nll"]


def test_custom_evaluate_and_extra_state(tmp_path):
    seen = []

    def evaluate(model, x):
        seen.append(len(x))
        return {"mean_err": float((model.mu.detach() - x.mean(0)).abs().max())}

    cfg = _stochastic_cfg(steps=4)
    out = train(
        DiagGaussian(),
        _data(),
        cfg,
        tmp_path,
        eval_data=_data(50, 1),
        evaluate=evaluate,
        extra_state={"standardizer": {"mean": [0.0], "std": [1.0]}},
        progress=False,
    )
    assert seen == [50] and set(out.eval) == {"mean_err"}
    assert load_checkpoint(tmp_path / "checkpoints").meta["extra"]["standardizer"]["std"] == [1.0]


def test_ema_matches_its_recurrence():
    lin = nn.Linear(1, 1, bias=False)
    ema = EMA(lin, decay=0.8)
    expected = lin.weight.detach().clone()
    for k, w in enumerate([1.0, -2.0, 0.5, 3.0, 3.0]):
        with torch.no_grad():
            lin.weight.fill_(w)
        ema.update(lin)
        beta = min(0.8, (1 + k) / (10 + k))  # warm-up factor of the docstring
        expected = beta * expected + (1 - beta) * w
    torch.testing.assert_close(ema.shadow["weight"], expected, rtol=1e-6, atol=0)


def test_resume_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(DiagGaussian(), _data(), _stochastic_cfg(), tmp_path, resume=True, progress=False)
    train(DiagGaussian(), _data(), _stochastic_cfg(steps=2), tmp_path, progress=False)
    with pytest.raises(ValueError, match=r"different \['lr'\]"):
        train(
            DiagGaussian(), _data(), _stochastic_cfg(lr=0.1), tmp_path, resume=True, progress=False
        )


@pytest.mark.parametrize(
    ("kw", "msg"),
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"optimizer": "sgd"}, "optimizer"),
        ({"ema_decay": 1.0}, "ema_decay"),
        ({"lr": -1.0}, "lr must be"),
        ({"grad_clip": -1.0}, "grad_clip"),
    ],
)
def test_config_validation(kw, msg):
    with pytest.raises(ValueError, match=msg):
        TrainConfig(**kw)
    with pytest.raises(ValueError, match="unknown training option"):
        TrainConfig.from_dict({"stepz": 3})


def test_bad_data_is_refused(tmp_path):
    data = _data()
    data[17, 1] = math.nan
    with pytest.raises(ValueError, match=r"1 rows with NaN or inf.*row 17"):
        train(DiagGaussian(), data, _stochastic_cfg(), tmp_path, progress=False)
    with pytest.raises(TypeError, match="floating tensor"):
        train(DiagGaussian(), torch.arange(10), _stochastic_cfg(), tmp_path, progress=False)


class ClassMeans(nn.Module):
    """Conditional model: N(mu_y, I) per class y; its MLE mu_k is the mean of class k.
    ``noise`` > 0 perturbs x from the trainer's generator (as ``DiagGaussian``)."""

    def __init__(self, k: int = 3, noise: float = 0.0) -> None:
        super().__init__()
        self.mu = nn.Parameter(torch.zeros(k, 2, dtype=torch.float64))
        self.noise = noise

    def loss(self, x: Tensor, *, y: Tensor, generator: torch.Generator | None = None):
        if self.noise:
            x = x + self.noise * torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return 0.5 * (x - self.mu[y]).pow(2).sum(-1).mean(), {}

    def accuracy(self, x: Tensor, y: Tensor) -> float:
        """Nearest class mean."""
        return float((torch.cdist(x, self.mu).argmin(-1) == y).double().mean())


def _labels(n: int = 203, k: int = 3) -> Tensor:
    return torch.randint(k, (n,), generator=torch.Generator().manual_seed(9))


def test_labels_reach_the_loss_batch_by_batch(tmp_path):
    data, y = _data(), _labels()
    data = data + 4.0 * y[:, None]  # classes far apart
    cfg = TrainConfig(steps=600, batch_size=len(data), lr=0.1, ema_decay=0.0)
    model = ClassMeans()
    out = train(model, data, cfg, tmp_path, eval_data=data, eval_labels=y, labels=y, progress=False)
    # Full-batch Adam on a convex quadratic reaches the class means to ~1e-12 in 600
    # steps (measured); 1e-9 leaves room for rounding and is far
    # below the O(1) error of a mean taken over the wrong rows' labels.
    means = torch.stack([data[y == k].mean(0) for k in range(3)])
    torch.testing.assert_close(model.mu.detach(), means, atol=1e-9, rtol=0)
    # A model without log_prob is scored by its held-out loss and accuracy.
    nearest = float((torch.cdist(data, means).argmin(-1) == y).double().mean())
    assert set(out.eval) == {"loss", "accuracy"} and 0.9 < out.eval["accuracy"] == nearest
    # resuming with labels reproduces the uninterrupted stochastic run exactly
    kw = {"schedule": "constant"}
    full, part, again = ClassMeans(noise=0.3), ClassMeans(noise=0.3), ClassMeans(noise=0.3)
    ref = train(full, data, _stochastic_cfg(**kw), tmp_path / "a", labels=y, progress=False)
    first = train(
        part, data, _stochastic_cfg(steps=12, **kw), tmp_path / "b", labels=y, progress=False
    )
    rest = train(
        again, data, _stochastic_cfg(**kw), tmp_path / "b", labels=y, resume=True, progress=False
    )
    assert first.losses + rest.losses == ref.losses
    assert torch.equal(full.mu, again.mu)


def test_bad_labels_are_refused(tmp_path):
    data, cfg = _data(), _stochastic_cfg()
    for labels, err, msg in [
        (_labels().double(), TypeError, "integer tensor of class indices"),
        (_labels(10), ValueError, r"shape \(203,\), one label per row, got \(10,\)"),
        (_labels() - 1, ValueError, "negative labels"),
    ]:
        with pytest.raises(err, match=msg):
            train(ClassMeans(), data, cfg, tmp_path, labels=labels, progress=False)
    with pytest.raises(ValueError, match="eval_labels were given without eval_data"):
        train(ClassMeans(), data, cfg, tmp_path, labels=_labels(), eval_labels=_labels())
