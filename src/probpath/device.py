r"""Where and in what precision the networks run: device choice, autocast and loss scaling.

PyTorch's own machinery, nothing home-made (issue "GPUs and many of them"):

- :func:`resolve_device` reads ``auto|cpu|cuda|cuda:N`` (``auto``: the GPU when there is one);
- :func:`autocast` is :class:`torch.autocast` for ``bf16``/``fp16`` and a no-op for ``fp32``.
  Autocast lowers only the matrix products and convolutions of the *network*; the solvers'
  and samplers' state updates, divergence sums and log-densities are additions and
  multiplications of float32 tensors, which type promotion keeps in float32 (float64 when
  the state is float64), so the integrators never accumulate in half precision;
- :func:`grad_scaler` is :class:`torch.amp.GradScaler`, enabled for ``fp16`` only (bf16 has
  float32's exponent range and needs no loss scaling);
- :func:`compile_networks` is :meth:`torch.nn.Module.compile` (``torch.compile`` in place, so
  the state-dict keys and checkpoints do not change) of each of a model's :func:`networks`.

Example:
    >>> resolve_device("cpu")
    device(type='cpu')
    >>> with autocast(torch.device("cpu"), "bf16"):
    ...     y = torch.nn.Linear(2, 2)(torch.ones(1, 2))
    >>> y.dtype
    torch.bfloat16
"""

from __future__ import annotations

import contextlib
from typing import Literal, get_args

import torch
from torch import nn

__all__ = [
    "COMPILE_MODES",
    "PRECISIONS",
    "Precision",
    "autocast",
    "check_compile_mode",
    "check_precision",
    "compile_networks",
    "grad_scaler",
    "networks",
    "resolve_device",
]

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = get_args(Precision)
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_MODES: tuple[str, ...] = (
    "default",
    "reduce-overhead",
    "max-autotune",
    "max-autotune-no-cudagraphs",
)
"""The ``mode`` values of :func:`torch.compile` (``reduce-overhead`` adds CUDA graphs)."""


def resolve_device(spec: str | torch.device | None = "auto") -> torch.device:
    """The device named by ``spec``: ``"auto"`` (CUDA when available, else the CPU), ``"cpu"``,
    ``"cuda"`` (the current GPU) or ``"cuda:N"``; a ``torch.device`` passes through checked.

    Raises ``ValueError`` with the reason when CUDA is asked for where there is none.

    >>> resolve_device("auto").type in ("cpu", "cuda")
    True
    """
    if spec is None or spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError):
        raise ValueError(
            f"unknown device {spec!r}; use auto, cpu, cuda or cuda:N (N a GPU index)"
        ) from None
    if device.type == "cpu":
        return device
    if device.type != "cuda":
        raise ValueError(f"device {spec!r} is not supported; use auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        build = torch.__version__
        why = "this torch build has no CUDA" if torch.version.cuda is None else "no GPU is visible"
        raise ValueError(
            f"device {spec!r} was asked for, but {why} (torch {build}); use --device cpu"
        )
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(
            f"device {spec!r}: this machine has {count} GPU(s), cuda:0..cuda:{count - 1}"
        )
    return device


def check_precision(precision: str) -> Precision:
    """``precision`` checked to be one of ``fp32``, ``bf16``, ``fp16``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision  # type: ignore[return-value]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[object]:
    """:class:`torch.autocast` on ``device`` in ``precision`` (a no-op for ``fp32``)."""
    if check_precision(precision) == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_DTYPES[precision])


def grad_scaler(device: torch.device, precision: str) -> torch.amp.GradScaler:
    """Dynamic loss scaling for ``fp16`` (Micikevicius et al. 2018); disabled otherwise."""
    return torch.amp.GradScaler(device.type, enabled=check_precision(precision) == "fp16")


def networks(model: nn.Module) -> list[nn.Module]:
    """A model's networks: its direct children that hold parameters (the vector field,
    score, energy or classifier network of every family; the model itself when it has
    no such child).

    >>> from probpath.models import build
    >>> [type(n).__name__ for n in networks(build("fm", dim=2))]
    ['MLP']
    """
    nets = [c for c in model.children() if any(True for _ in c.parameters())]
    return nets or [model]


def check_compile_mode(mode: str) -> str:
    """``mode`` checked to be one of :data:`COMPILE_MODES`."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {', '.join(COMPILE_MODES)}, got {mode!r}")
    return mode


def compile_networks(model: nn.Module, mode: str = "default") -> nn.Module:
    """``torch.compile`` each of ``model``'s :func:`networks` in place, in ``mode``; returns
    ``model``. The solvers, samplers and losses around the networks stay eager (their
    Python control flow, adaptive step control and host reads would break the graph).

    :meth:`torch.nn.Module.compile` keeps the module and its parameters, so state dicts,
    checkpoints, EMA weights and DistributedDataParallel see the same names; the first
    calls (and each new input shape) pay the compilation. The exact divergence of a
    likelihood backpropagates once per dimension through one forward pass
    (``retain_graph``), which a compiled backward with donated buffers refuses: they are
    turned off (``torch._functorch.config.donated_buffer``, process-wide) when compiling.
    """
    import torch._functorch.config as functorch_config

    check_compile_mode(mode)
    functorch_config.donated_buffer = False
    for net in networks(model):
        net.compile(mode=mode)
    return model
