"""``benchmarks/gpu_check.py`` end to end on the CPU (``--quick``: 8x8 images, tiny budgets),
so that the script a GPU session runs cannot rot. The numbers are not checked (a loaded CPU),
only that every part runs and reports."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

ROOT = str(Path(__file__).resolve().parent.parent)
if ROOT not in sys.path:  # `pytest` alone does not put the repository root on the path
    sys.path.insert(0, ROOT)

from benchmarks.gpu_check import main  # noqa: E402


def test_gpu_check_runs_every_part_on_the_cpu() -> None:
    out = main(["--device", "cpu", "--quick", "--families", "fm,ebm", "--modes", "fp32,bf16"])
    tests = out["cuda_tests"]
    assert tests["returncode"] == 0 and not tests["failures"]
    if not torch.cuda.is_available():
        assert "skipped" in tests["summary"] and "passed" not in tests["summary"]
    for family in ("fm", "ebm"):
        for mode in ("fp32", "bf16"):
            assert out["train"][family][mode]["images_per_s"] > 0
    for family, rates in out["sample"].items():
        for precision in ("fp32", "bf16"):
            assert rates[precision]["images_per_s"] > 0, family
            assert rates[precision]["overhead_per_step"] > 0, family
    bpd = out["bits_per_dim"]
    assert all(math.isfinite(bpd[p]["bits_per_dim"]) and bpd[p]["se"] > 0 for p in ("fp32", "bf16"))
    assert math.isfinite(bpd["drift_bits_per_dim"])
