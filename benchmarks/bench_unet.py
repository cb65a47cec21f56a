"""U-Net speed: probpath's ``UNet`` against torchcfm's ``UNetModel`` (OpenAI's guided-diffusion
U-Net) of the same widths, depth and attention, on the same batch.

One training step = the network on a flow-matching batch ``x_t = (1 - t) x_0 + t x_1``
(x_0 noise, x_1 uniform 28x28 grey images, t uniform, all drawn once), the squared error
against ``x_1 - x_0``, backward and an Adam step. Beside it, one forward pass under
``torch.no_grad()`` (a sampler's call). Both sides run round-robin (``interleave``), and
ratios are medians of within-round ratios: the machine is shared with other jobs, whose
load moves both sides of a round alike.

Configurations (widths 32 x (1, 2, 2), one residual block per level, attention in the
middle; both networks use 32 GroupNorm groups, torchcfm's fixed choice, which needs
multiples of 32 channels: probpath's base-16 preset for 28x28 has no torchcfm twin):

- ``torchcfm_mnist``: torchcfm's MNIST example, ``UNetModelWrapper(dim=(1, 28, 28),
  num_channels=32, num_res_blocks=1)``, whose default ``attention_resolutions="16"``
  means 28 // 16 = 1, i.e. attention also at full resolution (28x28 = 784 pixels);
- ``middle_attention``: the same without the full-resolution attention.

The sides have the same layers; probpath's first convolution of a residual block has no
bias (the time embedding's projection adds one), hence a few hundred fewer parameters.

Last, the presets: parameters and training-step time at batch 128 of the U-Net that
``build_net("auto", shape)`` (``--net auto``) builds for 8x8, 28x28 and 32x32 images.

    MALLOC_MMAP_THRESHOLD_=4294967296 MALLOC_TRIM_THRESHOLD_=4294967296 \\
        .venv/bin/python -m benchmarks.bench_unet [--quick] [--threads 1] [--batches 64 128]

One thread by default: on the shared 2-core machine two intra-op threads made every side
several times slower and far noisier (threads spin-waiting on busy cores).
"""

from __future__ import annotations

import argparse
import json
import statistics
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from benchmarks._timing import interleave, median_time, setup, write_results
from probpath.nets import UNet, build_net, unet_config_for

warnings.filterwarnings("ignore")  # torchcfm/torchdyn import-time warnings
SHAPE = (1, 28, 28)
CONFIGS: dict[str, dict[str, Any]] = {
    "torchcfm_mnist": {"attention_levels": (0,)},
    "middle_attention": {"attention_levels": ()},
}


def _nets(attention_levels: tuple[int, ...]) -> tuple[nn.Module, nn.Module]:
    from torchcfm.models.unet.unet import UNetModel

    common = {"num_res_blocks": 1, "channel_mult": (1, 2, 2)}
    ours = UNet(1, 32, attention_levels=attention_levels, norm_groups=32, **common)
    peer = UNetModel(
        image_size=SHAPE[1],
        in_channels=1,
        model_channels=32,
        out_channels=1,
        attention_resolutions=tuple(2**level for level in attention_levels),
        num_heads=1,
        **common,
    )
    return ours, peer


def _batch(batch: int, shape: tuple[int, ...] = SHAPE) -> tuple[Tensor, Tensor, Tensor]:
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(batch, *shape, generator=g)
    x1 = 2 * torch.rand(batch, *shape, generator=g) - 1
    t = torch.rand(batch, generator=g)
    xt = (1 - t[:, None, None, None]) * x0 + t[:, None, None, None] * x1
    return xt, t, x1 - x0


def _step(
    net: nn.Module, call: Callable[[Tensor, Tensor], Tensor], batch: int, shape: tuple = SHAPE
) -> Callable:
    xt, t, target = _batch(batch, shape)
    opt = torch.optim.Adam(net.parameters(), 1e-4)

    def step() -> None:
        loss = (call(xt, t) - target).square().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()

    return step


def _forward(call: Callable[[Tensor, Tensor], Tensor], batch: int) -> Callable:
    xt, t, _ = _batch(batch)

    def forward() -> None:
        with torch.no_grad():
            call(xt, t)

    return forward


def bench(config: dict[str, Any], batch: int, repeats: int) -> dict[str, Any]:
    torch.manual_seed(0)
    ours, peer = _nets(config["attention_levels"])

    def ours_call(x: Tensor, t: Tensor) -> Tensor:
        return ours(x, t)

    def peer_call(x: Tensor, t: Tensor) -> Tensor:
        return peer(t, x)

    fns = {
        "probpath_step": _step(ours, ours_call, batch),
        "torchcfm_step": _step(peer, peer_call, batch),
        "probpath_forward": _forward(ours_call, batch),
        "torchcfm_forward": _forward(peer_call, batch),
    }
    times = interleave(fns, repeats=repeats, min_time=0.5)

    def ratio(a: str, b: str) -> dict[str, float]:
        """Median and quartiles over rounds of time(a) / time(b) within a round."""
        q1, q2, q3 = statistics.quantiles(
            [x / y for x, y in zip(times[a], times[b], strict=True)], n=4
        )
        return {"median": q2, "q1": q1, "q3": q3}

    return {
        "params": {
            "probpath": sum(p.numel() for p in ours.parameters()),
            "torchcfm": sum(p.numel() for p in peer.parameters()),
        },
        "ms": {k: 1e3 * statistics.median(v) for k, v in times.items()},
        "ratio_step": ratio("probpath_step", "torchcfm_step"),
        "ratio_forward": ratio("probpath_forward", "torchcfm_forward"),
        "rounds": repeats,
    }


def bench_presets(batch: int, repeats: int) -> dict[str, Any]:
    """Parameters and the training step's median time (flow-matching loss, Adam) of
    ``build_net("auto", shape)``, the U-Net that ``--net auto`` gives each image size."""
    out = {}
    for shape in ((1, 8, 8), (1, 28, 28), (3, 32, 32)):
        torch.manual_seed(0)
        net = build_net("auto", shape)
        step = _step(net, net, batch, shape)
        key = "x".join(map(str, shape))
        out[key] = {
            "config": unet_config_for(shape),
            "params": sum(p.numel() for p in net.parameters()),
            "ms_step": 1e3 * median_time(step, repeats=repeats, min_time=0.5),
        }
        print(key, out[key], flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--threads", type=int, nargs="+", default=[1])
    parser.add_argument("--batches", type=int, nargs="+", default=[64, 128])
    args = parser.parse_args()
    result: dict[str, Any] = {"shape": SHAPE}
    repeats = 3 if args.quick else 11
    for threads in args.threads:
        rows: dict[str, Any] = {"env": setup(threads=threads)}
        for name, config in CONFIGS.items():
            for batch in args.batches:
                row = bench(config, batch, repeats)
                rows[f"{name}/batch{batch}"] = row
                print(threads, name, batch, json.dumps(row), flush=True)
        rows["presets_batch128"] = bench_presets(128, 3 if args.quick else 5)
        result[f"threads{threads}"] = rows
    path = write_results("unet_quick" if args.quick else "unet", result)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
