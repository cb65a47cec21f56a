"""Each plot writes a non-empty PNG of the expected pixel size, headless."""

import json
import struct

import pytest
import torch

from probpath.plots import (
    plot_density,
    plot_image_grid,
    plot_samples,
    plot_training_curves,
    plot_trajectories,
)

DPI = 20  # tiny figures keep the tests fast; size = figsize (inches) * dpi


def _png_size(path):
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])  # IHDR width, height


def test_samples_and_density(tmp_path):
    g = torch.Generator().manual_seed(0)
    p = plot_samples(
        torch.randn(30, 2, generator=g),
        torch.randn(40, 2, generator=g),
        tmp_path / "a" / "s.png",
        title="t",
        figsize=(8, 4),
        dpi=DPI,
    )
    assert p == tmp_path / "a" / "s.png" and _png_size(p) == (160, 80)
    calls = []

    def log_prob(x):
        calls.append(len(x))
        assert not torch.is_grad_enabled()
        return -0.5 * x.pow(2).sum(-1)

    p = plot_density(
        log_prob,
        (-3, 3, -2, 2),
        tmp_path / "d.png",
        resolution=30,
        batch_size=256,
        figsize=(5, 5),
        dpi=DPI,
    )
    assert _png_size(p) == (100, 100) and sum(calls) == 900 and max(calls) == 256


def test_trajectories_and_images(tmp_path):
    p = plot_trajectories(torch.randn(4, 12, 2), tmp_path / "t.png", figsize=(5, 4), dpi=DPI)
    assert _png_size(p) == (100, 80)
    p = plot_image_grid(torch.rand(5, 64), tmp_path / "g.png", image_shape=(8, 8), dpi=DPI)
    assert _png_size(p) == (100, 100)
    p = plot_image_grid(torch.rand(3, 1, 4, 4), tmp_path / "g2.png", nrow=3, dpi=DPI)
    assert p.stat().st_size > 0


def test_training_curves(tmp_path):
    m = tmp_path / "metrics.jsonl"
    rows = [
        {"step": i, "loss": 1.0 / (i + 1), "nfe": 20 + i, "lr": 1e-3, "tag": "x"} for i in range(5)
    ]
    m.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    p = plot_training_curves(m, tmp_path / "c.png", dpi=DPI, panel_size=(4, 3))
    assert _png_size(p) == (3 * 80, 60)  # three numeric series -> one row of 3 panels
    p = plot_training_curves(m, tmp_path / "c1.png", keys=["loss"], dpi=DPI)
    assert _png_size(p) == (80, 60)


def test_errors(tmp_path):
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        plot_samples(torch.zeros(3, 3), torch.zeros(3, 2), tmp_path / "x.png")
    with pytest.raises(ValueError, match="xmin < xmax"):
        plot_density(lambda x: x[:, 0], (1, 0, 0, 1), tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(T >= 2, n, 2\)"):
        plot_trajectories(torch.zeros(3, 2), tmp_path / "x.png")
    m = tmp_path / "m.jsonl"
    m.write_text('{"step": 1, "loss": 1}\nnot json\n')
    with pytest.raises(ValueError, match="line 2 is not JSON"):
        plot_training_curves(m, tmp_path / "x.png")
    m.write_text('{"step": 1, "loss": 1}\n')
    with pytest.raises(ValueError, match="no numeric series"):
        plot_training_curves(m, tmp_path / "x.png", keys=["acc"])
