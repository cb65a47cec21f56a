"""The CUDA paths (skipped without a GPU; ``benchmarks/gpu_check.py`` runs them on one).

Every family trains a few steps and samples with every sampler on the GPU; bf16 and
compiled training; a checkpoint written on the GPU loads on the CPU; rows streamed from
pinned memory equal rows kept on the device; sampler steps make no synchronising call.
"""

from __future__ import annotations

import warnings
from typing import Any

import pytest
import torch

from probpath.models import MODELS, build
from probpath.train import RunConfig, TrainConfig, _feed, fit, load_run, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

CUDA = torch.device("cuda")
SMALL = {"dim": 2, "hidden": [16]}
ADAPTIVE = {"dopri5"}


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator(CUDA).manual_seed(seed)


def _model(family: str) -> Any:
    torch.manual_seed(0)
    extra = {"n_classes": 3} if family == "noisy-classifier" else {}
    return build(family, **SMALL, **extra).to(CUDA)


@pytest.mark.parametrize("family", sorted(MODELS))
def test_every_family_trains_and_samples_on_the_gpu(family, tmp_path):
    model = _model(family)
    data = torch.randn(128, 2)
    labels = torch.randint(3, (128,)) if family == "noisy-classifier" else None
    cfg = TrainConfig(steps=3, batch_size=32, log_every=1, checkpoint_every=3)
    out = train(model, data, cfg, tmp_path, progress=False, labels=labels)
    assert out.step == 3 and all(torch.isfinite(torch.tensor(out.losses)))
    assert all(p.device.type == "cuda" for p in model.parameters())
    with torch.no_grad():
        for name in getattr(model, "samplers", ()):
            steps = None if name in ADAPTIVE else 4
            x = model.sample(16, sampler=name, steps=steps, generator=_gen())
            assert x.device.type == "cuda" and bool(torch.isfinite(x).all()), name
        if family == "cnf":
            assert model.sample(16, generator=_gen()).device.type == "cuda"
    if hasattr(model, "log_prob") and family != "ebm":
        lp = model.log_prob(torch.randn(8, 2, device=CUDA))
        assert lp.device.type == "cuda" and lp.dtype == torch.float32


@pytest.mark.parametrize(
    ("precision", "compile"),
    [("bf16", None), ("fp16", None), ("fp32", "default"), ("bf16", "default")],
)
def test_mixed_precision_and_compiled_training_on_the_gpu(precision, compile, tmp_path):
    model = _model("fm")
    cfg = TrainConfig(steps=20, batch_size=64, lr=1e-2, precision=precision, compile=compile)
    out = train(model, torch.randn(256, 2) + 1.0, cfg, tmp_path, progress=False)
    assert out.step == 20 and torch.isfinite(torch.tensor(out.losses)).all()
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=precision == "bf16"):
        lp = model.log_prob(torch.randn(8, 2, device=CUDA), rtol=1e-3, atol=1e-3)
    assert lp.dtype == torch.float32 and bool(torch.isfinite(lp).all())


def test_a_gpu_checkpoint_loads_on_the_cpu(tmp_path):
    cfg = RunConfig(
        model="fm",
        model_config={"hidden": [16]},
        data="8gaussians",
        n_train=256,
        n_eval=64,
        train=TrainConfig(steps=5, batch_size=64),
    )
    fit(cfg, tmp_path, progress=False, device="cuda")
    on_cpu, on_gpu = load_run(tmp_path, device="cpu"), load_run(tmp_path, device="cuda")
    assert on_cpu.device.type == "cpu" and on_gpu.device.type == "cuda"
    x = on_cpu.rows().eval[:32]
    lp_cpu = on_cpu.log_prob(x, rtol=1e-6, atol=1e-6)
    lp_gpu = on_gpu.log_prob(x, rtol=1e-6, atol=1e-6)
    assert lp_gpu.device.type == "cpu"  # data-space methods answer where the rows are
    torch.testing.assert_close(lp_cpu, lp_gpu, rtol=1e-4, atol=1e-4)  # solver tolerance
    assert on_gpu.sample(8, sampler="euler", steps=4)[0].device.type == "cpu"


def test_streamed_rows_equal_resident_rows(monkeypatch):
    data, labels = torch.randn(100, 3), torch.randint(5, (100,))
    resident = _feed.Batches(data, labels, CUDA, torch.float32)
    monkeypatch.setattr(_feed, "RESIDENT_FRACTION", 0.0)
    streamed = _feed.Batches(data, labels, CUDA, torch.float32)
    assert resident.resident and not streamed.resident
    for k in range(5):  # both pinned buffers, reused
        idx = torch.randperm(100, generator=torch.Generator().manual_seed(k))[:16]
        (a, ya), (b, yb) = resident(idx), streamed(idx)
        assert torch.equal(a, b) and torch.equal(ya, yb) and b.device.type == "cuda"


def _synchronising_calls(fn) -> int:
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    return sum("synchroniz" in str(w.message) for w in caught)


@pytest.mark.parametrize("sampler", ["euler-maruyama", "pc", "ddim", "dpm", "heun", "pf-ode"])
def test_sampler_steps_do_not_synchronise(sampler):
    model = _model("ddpm")

    def sample(steps: int):
        return lambda: model.sample(64, sampler=sampler, steps=steps, generator=_gen())

    with torch.no_grad():
        assert _synchronising_calls(sample(4)) == _synchronising_calls(sample(8))


def test_each_rank_takes_its_own_gpu(monkeypatch):
    from probpath.train.distributed import local_device

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert local_device("cuda") == local_device("auto") == torch.device("cuda", 0)
    assert local_device(torch.device("cuda", 0)) == torch.device("cuda", 0)  # already local
    if torch.cuda.device_count() > 1:
        with pytest.raises(ValueError, match="CUDA_VISIBLE_DEVICES"):
            local_device("cuda:1")
