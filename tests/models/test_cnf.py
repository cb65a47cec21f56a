"""FFJORD CNF: normalisation, closed forms, inversion, the model contract, training."""

from __future__ import annotations

import json
import math

import pytest
import torch

from probpath.data import sample_toy
from probpath.likelihood import standard_normal_log_prob
from probpath.models import CNF, GenerativeModel, build


def grid_mass(model: CNF, half_width: float, n: int = 200) -> float:
    """Trapezoid rule for ∫ p over [-w, w]² on an n×n grid."""
    u = torch.linspace(-half_width, half_width, n)
    xx, yy = torch.meshgrid(u, u, indexing="ij")
    pts = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    with torch.no_grad():
        p = model.log_prob(pts).exp().view(n, n)
    w = torch.ones(n)
    w[0] = w[-1] = 0.5
    h = (u[1] - u[0]).item()
    return float((w[:, None] * w[None, :] * p).sum() * h * h)


def test_log_prob_integrates_to_one_untrained_and_trained() -> None:
    # Box [-6, 6]², h = 12/199 ≈ 0.06. The trapezoid error is ≤ (h²/12)·∫|Δp| ≈ 3e-4·∫|Δp|,
    # with ∫|Δp| ≈ 2/σ² ≤ 10 for the σ ≥ 0.45 densities here: 3e-3. Mass outside the box of
    # a density no wider than N(0, 1.5²) is < 1e-4, and the solver (rtol 1e-5) changes log p
    # by ~1e-5. Allow 5e-3.
    torch.manual_seed(0)
    model = CNF(dim=2, hidden=(16, 16))
    assert abs(grid_mass(model, 6.0) - 1.0) < 5e-3
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    data = sample_toy("8gaussians", 128, generator=0) / 2.0  # inside the box
    for _ in range(3):
        opt.zero_grad()
        model.loss(data)[0].backward()
        opt.step()
    assert abs(grid_mass(model, 6.0) - 1.0) < 5e-3


def test_linear_field_closed_form() -> None:
    # hidden=() is a single linear layer f = W [z, t] + b; with the time column and bias
    # zeroed it is f = A z, so log p(x) = log N(e^A x) + tr A.
    model = CNF(dim=2, hidden=(), rtol=1e-10, atol=1e-10).double()
    A = torch.tensor([[0.2, -0.7], [0.4, -0.1]], dtype=torch.float64)
    with torch.no_grad():
        layer = model.net.layers[0]
        layer.weight.copy_(torch.cat([A, torch.zeros(2, 1, dtype=torch.float64)], 1))
        layer.bias.zero_()
    x = torch.randn(10, 2, dtype=torch.float64)
    expected = standard_normal_log_prob(x @ torch.linalg.matrix_exp(A).T) + torch.trace(A)
    # dopri5 at tolerance 1e-10: error ~1e-9 ≪ 1e-7
    torch.testing.assert_close(model.log_prob(x), expected, rtol=0, atol=1e-7)


def test_exact_and_hutchinson_agree_in_mean() -> None:
    torch.manual_seed(1)
    exact = CNF(dim=2, hidden=(16, 16)).double()
    hutch = CNF(dim=2, hidden=(16, 16), trace="hutchinson").double()
    hutch.load_state_dict(exact.state_dict())
    x = torch.randn(4, 2, dtype=torch.float64).repeat(500, 1)
    with torch.no_grad():
        diff = hutch.log_prob(x, generator=torch.Generator().manual_seed(0)) - exact.log_prob(x)
    # unbiased: the mean of 2000 independent-probe estimates lies within 5 standard errors
    assert diff.std() > 0
    assert diff.mean().abs() < 5 * diff.std() / math.sqrt(diff.numel())


def test_reconstruction_within_solver_tolerance() -> None:
    torch.manual_seed(2)
    model = CNF(dim=2, hidden=(16, 16), rtol=1e-8, atol=1e-8).double()
    x = torch.randn(64, 2, dtype=torch.float64)
    with torch.no_grad():
        back = model.decode(model.encode(x))
    # two solves at tolerance 1e-8 with error growth exp(L) ≤ 100: 1e-6
    torch.testing.assert_close(back, x, rtol=0, atol=1e-6)


def test_sample_with_log_prob_matches_log_prob() -> None:
    torch.manual_seed(3)
    model = CNF(dim=2, hidden=(16, 16), rtol=1e-8, atol=1e-8).double()
    with torch.no_grad():
        x, lp = model.sample_with_log_prob(32, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(model.log_prob(x), lp, rtol=0, atol=1e-6)


def test_contract_and_config_round_trip() -> None:
    model = build("cnf", dim=2, hidden=[8, 8], kinetic_reg=0.01, jacobian_reg=0.01)
    assert isinstance(model, GenerativeModel)
    config = json.loads(json.dumps(model.config))  # JSON-serialisable
    clone = build("cnf", **config)
    clone.load_state_dict(model.state_dict())
    x = torch.randn(16, 2)
    torch.testing.assert_close(clone.log_prob(x), model.log_prob(x))
    loss, logs = model.loss(x)
    assert loss.dim() == 0 and loss.requires_grad
    assert set(logs) == {"nll", "nfe", "kinetic", "jacobian"}
    assert all(isinstance(v, float) for v in logs.values()) and logs["nfe"] > 0
    # loss = nll + λ_K K + λ_J J
    assert math.isclose(
        loss.item(), logs["nll"] + 0.01 * (logs["kinetic"] + logs["jacobian"]), rel_tol=1e-5
    )
    g = torch.Generator().manual_seed(5)
    s = model.sample(7, generator=g)
    assert s.shape == (7, 2)
    torch.testing.assert_close(model.sample(7, generator=torch.Generator().manual_seed(5)), s)
    assert model.trajectories(5, 4).shape == (4, 5, 2)
    assert model.log_prob(x).shape == (16,)


def test_adjoint_logs_backward_nfe_and_matches_backprop() -> None:
    torch.manual_seed(4)
    tol = dict(rtol=1e-9, atol=1e-9, train_rtol=1e-9, train_atol=1e-9)
    model = CNF(dim=2, hidden=(8, 8), **tol).double()
    x = torch.randn(16, 2, dtype=torch.float64)
    grads = []
    for adjoint in (False, True):
        model.adjoint = adjoint
        model.zero_grad()
        model.loss(x)[0].backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    for a, b in zip(*grads, strict=True):  # tolerance 1e-9 → 1e-6 relative agreement
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    _, logs = model.loss(x)
    assert logs["nfe_backward"] > 0  # the previous step's backward solve


def test_training_lowers_nll() -> None:
    torch.manual_seed(5)
    model = CNF(dim=2, hidden=(32, 32))
    # scaled to radius 0.7: N(0, I) is ~0.6 nats worse than a Gaussian of the data's scale,
    # a gain a few steps must capture
    train = sample_toy("8gaussians", 128, generator=1) / 4.0
    test = sample_toy("8gaussians", 512, generator=2) / 4.0
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    with torch.no_grad():
        before = -model.log_prob(test).mean().item()
    for _ in range(8):
        opt.zero_grad()
        model.loss(train)[0].backward()
        opt.step()
    with torch.no_grad():
        after = -model.log_prob(test).mean().item()
    # 8 Adam steps capture most of the scale gain; the test-set standard error of a mean
    # NLL over 512 points is ~0.05 nats, so a 0.3-nat gain cannot come from noise
    assert after < before - 0.3


def test_bad_config() -> None:
    with pytest.raises(ValueError, match="trace"):
        CNF(trace="approx")
    with pytest.raises(ValueError, match="positive"):
        CNF(rtol=0.0)
    with pytest.raises(ValueError, match="registered: cnf"):
        build("glow")
    with pytest.raises(TypeError, match="bad config"):
        build("cnf", width=3)
    with pytest.raises(ValueError, match=r"\(batch, 2\)"):
        CNF().log_prob(torch.zeros(3, 3))


def test_training_tolerance_governs_the_loss_only() -> None:
    torch.manual_seed(6)
    tol = dict(rtol=1e-7, atol=1e-7, train_rtol=1e-7, train_atol=1e-7)
    tight = CNF(dim=2, hidden=(16, 16), **tol)
    loose = build("cnf", **{**tight.config, "train_rtol": 1e-2, "train_atol": 1e-2})
    loose.load_state_dict(tight.state_dict())
    x = torch.randn(64, 2)
    # the loss's solve: fewer function evaluations at the looser tolerance ...
    assert loose.loss(x)[1]["nfe"] < tight.loss(x)[1]["nfe"]
    # ... while log_prob (evaluation) solves at rtol in both
    torch.testing.assert_close(loose.log_prob(x), tight.log_prob(x), rtol=0, atol=0)
    with pytest.raises(ValueError, match="positive"):
        CNF(train_atol=0.0)
